"""Experiments that produce figures and a REPORT.md: :mod:`psipo.experiments.paper` (``psipo reproduce``)."""
