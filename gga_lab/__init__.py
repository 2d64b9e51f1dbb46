"""The lab: what makes, chooses and judges the online trust score, offline.

Fitting a model's views and their fusion (``fit``, ``selection``, ``untrusted``), the paper's
evaluation against attacks and OOD data (``evaluate``, ``report``, ``plots``, ``metrics``), the
baselines it is compared with (``baselines``), the adaptive attack on GGA (``csa``), benchmarks
(``bench``), analyses behind docs/results.md (``analysis``) and experiments (``experiments``).

It imports ``detectors``, ``attacks``, ``gga_training`` and ``models``; nothing but the command line
imports it, and the service never does (the layers contract in ``.importlinter``).
"""
