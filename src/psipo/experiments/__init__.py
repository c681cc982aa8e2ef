"""Experiments that write a results folder — figures, ``REPORT.md`` and ``results.json`` — each
run by ``psipo experiment NAME`` (the registry is :data:`psipo.cli.experiment.EXPERIMENTS`):

* :mod:`~psipo.experiments.paper` — ``paper`` (short form ``psipo reproduce``): §5.3.1 and §5.4
  on tabular softmax policies, beside the closed forms;
* :mod:`~psipo.experiments.lm_lab` — ``lm``: the paper's claims on a transformer LM whose
  responses can be enumerated;
* :mod:`~psipo.experiments.reporting` — what they share: :class:`~psipo.experiments.reporting.Claim`
  and its verdicts, the number formatter, Markdown tables, REPORT.md's sections, results.json.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    from psipo import _submodule

    return _submodule("psipo.experiments", name)  # psipo.experiments.lm_lab, ... on first use
