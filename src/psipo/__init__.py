"""psipo — learning from pairwise human preferences with the ΨPO family.

The public API:

* Ψ mappings: :mod:`psipo.psi` (``identity`` for IPO, ``logit`` for RLHF/DPO).
* Per-pair losses on four log-prob tensors: :func:`ipo_loss`, :func:`dpo_loss`,
  :func:`robust_dpo_loss`, :func:`hinge_loss`, :func:`log_ratio_gap`,
  :func:`log_ratio_regression_loss`, :func:`get_loss`, :func:`check_tau`.
* :func:`load_config` — build any psipo config dataclass from a YAML file and ``key: value``
  overrides, with errors naming file:line and key.
* The tabular lab: :mod:`psipo.tabular`.
* Language-model training: :mod:`psipo.lm` (imported on demand; it pulls in transformers).
"""

from psipo import psi
from psipo._config import load_config
from psipo.errors import PsipoInputError
from psipo.losses import (
    LOSSES,
    check_tau,
    dpo_loss,
    get_loss,
    hinge_loss,
    ipo_loss,
    log_ratio_gap,
    log_ratio_regression_loss,
    robust_dpo_loss,
)

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "PsipoInputError",
    "check_tau",
    "dpo_loss",
    "get_loss",
    "hinge_loss",
    "load_config",
    "ipo_loss",
    "log_ratio_gap",
    "log_ratio_regression_loss",
    "psi",
    "robust_dpo_loss",
]
