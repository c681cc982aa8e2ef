r"""Training metrics of preference pairs, the metrics.jsonl log and the progress line.

Per pair, with :math:`\ell^\pi_w=\log\pi(y_w|x)` etc. (aggregated as configured):

* ``h`` — the log-ratio gap :math:`h_\pi(y_w,y_l)` (Azar et al., 2023, §5.1); IPO's optimum
  puts it at ``ipo_target`` :math:`=1/(2\tau)`;
* ``reward_chosen`` / ``reward_rejected`` — :math:`\tau(\ell^\pi-\ell^{\pi_\mathrm{ref}})`
  (DPO's implicit rewards), ``margin`` their difference (:math:`=\tau h`), ``accuracy`` the
  fraction of pairs with :math:`h>0`;
* ``kl`` — mean of :math:`\ell^{\pi_\mathrm{ref}}-\ell^\pi` over both completions: an estimate of
  :math:`\mathrm{KL}(\pi_\mathrm{ref}\,\|\,\pi)` per sequence when the data's completions are
  samples of π_ref (as in the paper's setting µ = π_ref), only a proxy otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from psipo._progress import terminal_bar
from psipo.losses import log_ratio_gap


def pair_columns(
    losses: torch.Tensor,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
) -> torch.Tensor:
    """One row per pair, ``[loss, π chosen, π rejected, π_ref chosen, π_ref rejected]`` (CPU)."""
    columns = (losses, policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return torch.stack([c.detach().float().cpu() for c in columns], dim=1)


def pair_summary(rows: torch.Tensor, *, tau: float) -> dict[str, float]:
    """Means (and h's std) over the rows of :func:`pair_columns`; empty dict for no rows."""
    if rows.shape[0] == 0:
        return {}
    losses, pc, pr, rc, rr = rows.double().unbind(1)
    h = log_ratio_gap(pc, pr, rc, rr)
    reward_chosen, reward_rejected = tau * (pc - rc), tau * (pr - rr)
    return {
        "loss": losses.mean().item(),
        "h_mean": h.mean().item(),
        "h_std": h.std(unbiased=False).item(),
        "ipo_target": 1.0 / (2.0 * tau),
        "reward_chosen": reward_chosen.mean().item(),
        "reward_rejected": reward_rejected.mean().item(),
        "margin": (reward_chosen - reward_rejected).mean().item(),
        "accuracy": (h > 0).double().mean().item(),
        "logps_chosen": pc.mean().item(),
        "logps_rejected": pr.mean().item(),
        "kl": 0.5 * ((rc - pc).mean() + (rr - pr).mean()).item(),
    }


@dataclasses.dataclass
class LogWindow:
    """What accumulates between two metrics records; saved in checkpoints, so that the first
    record after a resume equals the uninterrupted run's."""

    rows: list[torch.Tensor] = dataclasses.field(default_factory=list)
    """Per-example rows of the window's finite steps (a task's columns, e.g. :func:`pair_columns`)."""
    grad_norms: list[float] = dataclasses.field(default_factory=list)
    tokens: int = 0
    """Tokens the window's steps scored, without padding."""
    seconds: float = 0.0
    skipped_steps: int = 0
    """Steps skipped for a non-finite loss or gradient (on_nonfinite: skip), or by float16's
    gradient scaler when the scaled gradient overflowed."""

    def summary(self, summarize: Callable[[torch.Tensor], dict[str, float]]) -> dict[str, float]:
        """The window's part of a metrics record; ``summarize`` turns its rows into means."""
        record: dict[str, float] = {
            **(summarize(torch.cat(self.rows)) if self.rows else {}),
            "tokens_per_second": self.tokens / self.seconds if self.seconds > 0 else 0.0,
        }
        if self.grad_norms:
            record["grad_norm"] = sum(self.grad_norms) / len(self.grad_norms)
        if self.skipped_steps:
            record["skipped_steps"] = self.skipped_steps
        return record

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """JSON part and tensor part, for a checkpoint."""
        tensors = {"rows": torch.cat(self.rows)} if self.rows else {}
        scalars = {k: getattr(self, k) for k in ("grad_norms", "tokens", "seconds", "skipped_steps")}
        return scalars, tensors

    @classmethod
    def from_state(cls, scalars: dict[str, Any], tensors: dict[str, torch.Tensor]) -> LogWindow:
        return cls(rows=[tensors["rows"]] if "rows" in tensors else [], **scalars)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def read_metrics(path: str | Path, *, need_steps: bool = False) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file. A torn last line (a crash mid-write) is ignored;
    a line before it that is not a JSON object is damage, named by file:line, and so is a
    record without an integer ``step`` with ``need_steps`` (a resume cuts the file by step;
    every record psipo writes has one). Numbers that are not finite are read back from their
    "inf"/"nan" strings."""
    from psipo._config import read_text_file
    from psipo._json import from_json_data
    from psipo.errors import PsipoInputError

    path = Path(path)
    lines = read_text_file(path).splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if number == len(lines):
                break
            raise PsipoInputError(f"{path}:{number}: not a JSON object; the metrics file is damaged")
        step = record.get("step")
        if need_steps and (not isinstance(step, int) or isinstance(step, bool)):
            raise PsipoInputError(f"{path}:{number}: no integer 'step'; the metrics file is damaged")
        records.append(from_json_data(record))
    return records


def _json_line(record: dict[str, Any]) -> str:
    """One record as strict JSON: a loss that was inf or NaN is written "inf"/"nan" (psipo's
    convention, :mod:`psipo._json`), which every JSON reader can load."""
    from psipo._json import to_json_data

    return json.dumps(to_json_data(record), allow_nan=False) + "\n"


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per logged step; none for path None) plus the progress line.

    In a run of several processes every process keeps the same history (a task may decide on
    it, and all must decide alike) but only the main one (``main``) writes and shows it.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        total_steps: int,
        start_step: int,
        progress: bool,
        label: str = "psipo train",
        main: bool = True,
    ) -> None:
        self.path = path if main else None
        self.history: list[dict[str, Any]] = []
        if path is None:
            pass  # an in-memory run: the history is the only record
        elif start_step > 0 and path.is_file():
            # Resuming: keep what was logged up to the checkpoint, drop what came after it.
            from psipo._io import atomic_write_text

            self.history = [r for r in read_metrics(path, need_steps=True) if r["step"] <= start_step]
            if main:
                atomic_write_text(path, "".join(_json_line(r) for r in self.history))
        elif start_step > 0 and main:
            print(
                f"psipo: warning: {path} is missing; the records up to step {start_step} are lost, "
                f"it restarts at step {start_step + 1}",
                file=sys.stderr,
            )
        elif main:
            # A fresh run's file exists from its start, even before its first record (logging_steps
            # beyond a checkpoint's step): a resume that then finds none has truly lost records.
            from psipo._io import atomic_write_text

            atomic_write_text(path, "")
        # A bar on a terminal; off one (a log file), a plain line per record (psipo._progress).
        self.bar = terminal_bar(progress and main, total=total_steps, initial=start_step, desc=label, dynamic_ncols=True)
        self.plain = progress and main and self.bar is None

    def write(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        # One write of one line per record: a crash can tear at most the last line, which
        # read_metrics skips, and resuming rewrites the file atomically.
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(_json_line(record))
        shown = {k: record[k] for k in ("loss", "h_mean", "accuracy", "reward", "eval_loss", "eval_win_rate") if k in record}
        text = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
        elif self.plain and text:  # not a bare "step 0: " for a record of a callback's keys only
            print(f"step {record['step']}: {text}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
