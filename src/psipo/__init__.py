"""psipo — learning from pairwise human preferences with the ΨPO family.

The public API:

* Ψ mappings: :mod:`psipo.psi` (``identity`` for IPO, ``logit`` for RLHF/DPO).
* Per-pair losses on four log-prob tensors: :func:`ipo_loss`, :func:`dpo_loss`,
  :func:`robust_dpo_loss`, :func:`hinge_loss`, GPO's :func:`exponential_loss`,
  :func:`truncated_quadratic_loss` and :func:`savage_loss`, :func:`log_ratio_gap`,
  :func:`log_ratio_regression_loss`, :func:`check_tau`; their registry :data:`LOSSES` of
  :class:`LossSpec` (with :class:`Hyperparameter` and :class:`Derivative`), :func:`loss_spec`
  and :func:`get_loss`.
* :class:`PsipoInputError` (bad input: one line, exit code 2) and :class:`PsipoNonFiniteError`
  (a NaN/inf training step: exit code 3), from :mod:`psipo.errors`.
* :func:`load_config` — build any psipo config dataclass from a YAML file and ``key: value``
  overrides, with errors naming file:line and key.
* The tabular lab: :mod:`psipo.tabular`.
* Language-model training: :mod:`psipo.lm` (not imported by ``import psipo``; its exports load
  torch and transformers on first use).

Subpackages and submodules are attributes on first use (``psipo.tabular.nash_equilibrium``,
``psipo.lm.evaluate.evaluate`` after a plain ``import psipo``), imported only then.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Imported on first use, so that `import psipo.cli` (what the `psipo` command runs first) does
# not load torch before main() can answer Ctrl-C and bad input with one line.
_EXPORTS = {
    "psi": None,
    "load_config": "psipo._config",
    "PsipoInputError": "psipo.errors",
    "PsipoNonFiniteError": "psipo.errors",
    **{
        name: "psipo.losses"
        for name in (
            "LOSSES",
            "Derivative",
            "Hyperparameter",
            "LossSpec",
            "check_tau",
            "dpo_loss",
            "exponential_loss",
            "get_loss",
            "hinge_loss",
            "ipo_loss",
            "log_ratio_gap",
            "log_ratio_regression_loss",
            "loss_spec",
            "robust_dpo_loss",
            "savage_loss",
            "truncated_quadratic_loss",
        )
    },
}

__all__ = sorted(_EXPORTS)


def _submodule(package: str, name: str) -> Any:
    """``package.name`` imported on first use when it is a public submodule (``psipo.tabular``,
    ``psipo.lm.evaluate``), as after ``import package.name``: the README writes the API by dotted
    name after a plain ``import psipo``. Anything else is an AttributeError."""
    import importlib.util

    if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}"):
        return importlib.import_module(f"{package}.{name}")
    raise AttributeError(f"module {package!r} has no attribute {name!r}")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        return _submodule("psipo", name)
    module = _EXPORTS[name]
    return importlib.import_module(f"psipo.{name}") if module is None else getattr(importlib.import_module(module), name)
