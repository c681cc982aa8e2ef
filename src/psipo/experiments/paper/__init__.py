"""The paper's illustrative experiments (`psipo experiment paper`, short form `psipo reproduce`):
Azar et al. (2023), §5.3.1 and §5.4, on tabular softmax policies.

* **§5.3.1** — two actions, p*(y1≻y2) = 1, uniform µ and π_ref. Closed form (the exact core,
  Eq. 9): IPO π*(y1) = σ(0.5/τ), DPO π*(y1) = 1 for every τ. Trained counterpart: the dataset
  D0 = {(y1, y2)}, whose every observed comparison is won by y1. Its empirical IPO optimum
  (h = 1/(2τ)) is exactly the population optimum σ(0.5/τ), so the two columns are comparable.
* **§5.4** — learning curves of π(a), π(b), π(c) under sampled IPO, DPO and RLHF on D1, D2,
  D3 (as printed) and D3' (the variant that matches the text about Figure 2; see
  :mod:`psipo.tabular.datasets`), for a grid of τ, with 95% confidence bands over seeds.

Modules:

* :mod:`.config` — :class:`ReproduceConfig`, :func:`validate`, the ``--quick`` preset;
* :mod:`.experiment` — :func:`run_experiment`: training, closed forms, results and figures;
* :mod:`.claims` — the paper's claims, measured, with their verdict rules;
* :mod:`.report` — REPORT.md.
"""

from psipo.experiments.paper.config import DEFAULT_TAUS, QUICK, ReproduceConfig, validate
from psipo.experiments.paper.experiment import run_experiment

__all__ = ["DEFAULT_TAUS", "QUICK", "ReproduceConfig", "run_experiment", "validate"]
