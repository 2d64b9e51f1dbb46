"""Analyses behind docs/results.md: false alarms on whole test sets, offline fusion comparison,
the GGA features' information per kind, and the generated tables of docs/results.md."""
