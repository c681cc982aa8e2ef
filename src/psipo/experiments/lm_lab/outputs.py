"""The lab's output folder from its results: the claims decided, the figures, REPORT.md, results.json.

:func:`write_outputs` ends every run of :func:`.experiment.run_experiment`. :func:`rerender`
does the same from a stored ``results.json`` without training anything
(``psipo experiment lm --report-from``): the verdicts are decided again by the rules of the
installed psipo, so a report can be checked against its own numbers, or brought up to date
after a verdict rule changed, in seconds instead of a rerun of the lab.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from psipo._io import atomic_directory, expand_home
from psipo.errors import PsipoInputError
from psipo.experiments.lm_lab import plots, report
from psipo.experiments.lm_lab.claims import claims, not_measured
from psipo.experiments.reporting import RESULTS_FILE, claims_as_data, read_results, write_results

SECTIONS = ("config", "enumerated", "runtime_seconds", "workers")
"""Top-level keys every results.json of the lab has (the optional sections may be null)."""

MAY_BE_NON_FINITE = ("history", "claims", "claims_not_measured", "config.lm_sweep.epochs")
"""Where a run of the lab may write a number that is not finite ("nan", "inf"), by key anywhere
or by path: the trainer's metrics records (``history``: a skipped step's loss may be one), the
claims (text, decided afresh), and ``lm_sweep.epochs``, which its check lets be inf (with the LM
sweep off, such a run completes). Everything else a run writes is finite: the lab's KL is None,
not inf, where it diverges, and a single seed's NaN interval is made by the verdict rules, not
stored."""


def write_outputs(results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Decide the claims, then write ``figures/``, ``REPORT.md`` and ``results.json`` into ``out_dir``."""
    results["claims"] = claims_as_data(claims(results))
    results["claims_not_measured"] = claims_as_data(not_measured(results))
    # figures/ is replaced whole, just before the report: a run stopped while drawing leaves the
    # previous figures beside their own report, and none of an earlier run's stays beside this one's.
    with atomic_directory(out_dir / "figures") as staging:
        figures = plots.draw_all(results, staging)
        results["figures"] = [f"figures/{path.name}" for path in figures]
        markdown = report.markdown(results)
    write_results(out_dir, results, markdown)
    return results


def read_stored_run(source: str | Path) -> dict[str, Any]:
    """The results of a stored run: ``source`` is a ``results.json`` or the folder that holds one.

    A file that is missing, not JSON, or not the results of this lab is refused in one line
    naming ``--report-from``.
    """
    if not str(source).strip():  # as a Path, "" is the current folder
        raise PsipoInputError("--report-from: empty path; name the results folder of a `psipo experiment lm` run")
    return _read(_results_path(Path(expand_home(str(source)))))


def rerender(results: dict[str, Any], out_dir: Path, *, command: str | None = None) -> dict[str, Any]:
    """Write the output folder of a stored run (:func:`read_stored_run`) into ``out_dir``, which
    may be the run's own folder.

    The numbers are kept as stored; the claims, the figures and the report are made afresh, and
    the report says it was re-rendered (``command``, kept in results.json as ``rendered_by``).
    Results this version cannot render are refused in one line before anything is written.
    """
    results = {**results, "rendered_by": command}
    try:
        return write_outputs(results, out_dir)
    except PsipoInputError:
        raise
    # a results.json of another psipo version, or edited by hand: a section missing or of
    # another type (KeyError, TypeError, AttributeError), a list emptied or a number turned
    # into text (ValueError: min() of nothing, a format code on a str)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise PsipoInputError(
            f"--report-from: the stored run cannot be rendered by this version of psipo "
            f"({type(exc).__name__}: {exc}); rerun `psipo experiment lm` instead"
        ) from None


def _results_path(source: Path) -> Path:
    path = source / RESULTS_FILE if source.is_dir() else source
    if not path.is_file():
        where = f"{source} holds no {RESULTS_FILE}" if source.is_dir() else f"{source}: no such file"
        raise PsipoInputError(f"--report-from: {where}; name the results folder of a `psipo experiment lm` run")
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        results = read_results(path)
    except json.JSONDecodeError as exc:
        raise PsipoInputError(f"--report-from: {path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PsipoInputError(f"--report-from: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    missing = [key for key in SECTIONS if not isinstance(results, dict) or key not in results]
    if missing:
        raise PsipoInputError(
            f"--report-from: {path} is not the results of `psipo experiment lm` (no {', '.join(map(repr, missing))})"
        )
    bad = _first_non_finite(results, "")
    if bad is not None:
        where, value = bad
        raise PsipoInputError(
            f"--report-from: {path}: {where} is {value}, not a finite number, which a run of "
            f"`psipo experiment lm` never writes there (edited by hand?); rerun `psipo experiment lm` instead"
        )
    return results


def _first_non_finite(value: Any, where: str) -> tuple[str, float] | None:
    """The JSON path (``enumerated.runs[3].final.kl``) and value of the first number in ``value``,
    in file order, that is not finite where a run never writes one (:data:`MAY_BE_NON_FINITE`)."""
    if isinstance(value, dict):
        items = ((f"{where}.{key}" if where else str(key), key, item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{index}]", None, item) for index, item in enumerate(value))
    else:
        return (where, value) if isinstance(value, float) and not math.isfinite(value) else None
    for path, key, item in items:
        if key in MAY_BE_NON_FINITE or path in MAY_BE_NON_FINITE:
            continue
        found = _first_non_finite(item, path)
        if found is not None:
            return found
    return None
