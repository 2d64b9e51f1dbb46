"""Reproducible experiments that regenerate a results section of the docs (``gga experiment``)."""
