"""Curves of a training run folder (its metrics.jsonl) as PNG."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any

from psipo.errors import PsipoInputError

PANELS: list[tuple[str, list[str]]] = [
    ("loss", ["loss", "eval_loss"]),
    ("log-ratio gap h (IPO target 1/(2τ) dashed)", ["h_mean", "eval_h_mean"]),
    ("implicit rewards τ·log π/π_ref", ["reward_chosen", "reward_rejected", "margin"]),
    ("preference accuracy (h > 0)", ["accuracy", "eval_accuracy"]),
    ("log-probs{per}", ["logps_chosen", "logps_rejected"]),
    ("KL(π_ref‖π) estimate{per}", ["kl", "eval_kl"]),
    ("gradient norm", ["grad_norm"]),
    ("learning rate", ["lr"]),
    ("tokens / second", ["tokens_per_second"]),
]
"""Panel title → metric keys drawn in it (keys absent from the run are skipped). ``{per}``
is the unit of the run's aggregation (:data:`PER_AGGREGATION`)."""

REWARD_PANELS: list[tuple[str, list[str]]] = [
    ("Bradley–Terry loss (training: + L2 term)", ["loss", "eval_loss"]),
    ("pairwise accuracy (r_w > r_l)", ["accuracy", "eval_accuracy"]),
    ("rewards r(x, y)", ["reward_chosen", "reward_rejected", "margin", "eval_reward_chosen", "eval_reward_rejected", "eval_margin"]),
    ("expected calibration error of σ(r_w − r_l), held out", ["eval_ece"]),
    ("gradient norm", ["grad_norm"]),
    ("learning rate", ["lr"]),
    ("tokens / second", ["tokens_per_second"]),
]
"""The panels of a ``psipo reward`` run; a reliability diagram of its last evaluation follows."""

ONLINE_PANELS: list[tuple[str, list[str]]] = [
    ("loss", ["loss"]),
    ("reward of the samples (held out: π and π_ref)", ["reward", "eval_reward", "eval_reward_reference"]),
    ("win rate of π over π_ref, held out", ["eval_win_rate"]),
    ("KL(π‖π_ref) estimate per sequence", ["kl", "eval_kl"]),
    ("entropy estimate −E log π(y) per sequence", ["entropy"]),
    ("judge's decisiveness |2p − 1|", ["preference_strength"]),
    ("response length (tokens)", ["response_length"]),
    ("share of time spent generating", ["generation_fraction"]),
    ("generated tokens / second", ["tokens_per_second"]),
]
"""The panels of a ``psipo online`` run."""

PER_AGGREGATION = {
    "sum": " per sequence (sum over completion tokens)",
    "mean": " per token (mean over completion tokens)",
    None: "",
}
"""What a log-prob is under each aggregation of ``config.yaml``; None: the run has no readable one."""


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """The (step, value) points of ``key``; a record whose step or value is not a number (a
    hand-edited or foreign metrics.jsonl) is no point, rather than a crash."""
    points = [(r.get("step"), r.get(key)) for r in records]
    points = [(_plottable(step), _plottable(value)) for step, value in points if _is_number(step) and _is_number(value)]
    return [p[0] for p in points], [p[1] for p in points]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_LARGEST_PLOTTED = 1e300
"""Beyond this a number is drawn as ±inf (off the axes, as matplotlib draws inf): matplotlib's
axis range of two finite numbers near ±1.8e308 overflows, and drawing fails."""


def _plottable(value: float) -> float:
    return value if abs(value) <= _LARGEST_PLOTTED or math.isnan(value) else math.copysign(math.inf, value)


def _label(key: str, steps: list[float], values: list[float]) -> str:
    """The legend entry of ``key``; it names the steps whose value is NaN (a gap in the line) or
    ±inf (off the axes), which a curve alone would hide."""
    unseen = [(step, value) for step, value in zip(steps, values) if not math.isfinite(value)]
    if not unseen:
        return key
    shown = ", ".join(f"{step:g}" for step, _ in unseen[:3]) + (", ..." if len(unseen) > 3 else "")
    kinds = " or ".join(sorted({"NaN" if math.isnan(v) else "±inf" for _, v in unseen}))
    return f"{key} ({kinds} at step{'s' if len(unseen) > 1 else ''} {shown}: not drawn)"


def _numbers(values: Any) -> list[Any]:
    """``values`` if a list, else no values; an item that is not a number becomes None."""
    return [_plottable(v) if _is_number(v) else None for v in values] if isinstance(values, list) else []


def run_aggregation(run_dir: Path) -> str | None:
    """The aggregation ("sum" or "mean", auto resolved) the run trained with; None when its
    config.yaml is missing or unreadable, which leaves the curves still worth drawing."""
    from psipo._config import load_config
    from psipo.lm.config import TrainConfig

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_config(TrainConfig, path).aggregation
    except PsipoInputError:
        return None


def run_command(run_dir: Path, records: list[dict[str, Any]]) -> str:
    """Which trainer wrote the run: ``reward`` (its config has ``reward_l2``, or it recorded a
    calibration error), ``online`` (``algorithm``, or a generation share), else ``train``."""
    path = run_dir / "config.yaml"
    try:
        config_text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        config_text = ""
    keys = {line.split(":", 1)[0] for line in config_text.splitlines()}
    if "reward_l2" in keys or any("eval_ece" in r for r in records):
        return "reward"
    if "algorithm" in keys or any("generation_fraction" in r for r in records):
        return "online"
    return "train"


def _reliability_diagram(ax: Any, records: list[dict[str, Any]]) -> None:
    """Mean predicted P(a ≻ b) against the observed frequency per bin, of the last evaluation."""
    last = next((r for r in reversed(records) if isinstance(r.get("eval_reliability"), dict)), None)
    ax.plot([0, 1], [0, 1], ls="--", color="k", lw=1, label="perfect calibration")
    if last is not None:
        # A hand-edited or foreign record may hold anything: what is not a number is not drawn.
        table = last["eval_reliability"]
        counts = table.get("count")
        points = [
            (c, f, n)
            for c, f, n in zip(
                _numbers(table.get("confidence")), _numbers(table.get("frequency")),
                counts if isinstance(counts, list) else itertools.repeat(""),
            )
            if c is not None and f is not None
        ]
        if points:
            step = last.get("step")
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=4,
                    label=f"step {step}" if _is_number(step) else "last evaluation")
            for c, f, n in points:
                ax.annotate(str(n), (c, f), fontsize=7, textcoords="offset points", xytext=(3, -9))
        ece = last.get("eval_ece")
        title = f"reliability, held out (ECE {ece if _is_number(ece) else math.nan:.3g}; both orders; n per bin)"
    else:
        title = "reliability: no held-out evaluation recorded"
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("predicted P(a ≻ b) = σ(r_a − r_b)")
    ax.set_ylabel("observed frequency of a ≻ b")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's metric curves into one PNG (default ``RUN_DIR/curves.png``); return its path."""
    from psipo._io import atomic_write_bytes
    from psipo.lm.metrics import read_metrics

    if not str(run_dir).strip():  # Path("") is the current folder
        raise PsipoInputError("RUN_DIR: empty path; name a run folder")
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if run_dir.is_file():
        raise PsipoInputError(f"{run_dir}: a file, not a run folder")
    if not run_dir.is_dir():
        raise PsipoInputError(f"{run_dir}: no such run folder")
    if not metrics.is_file():
        raise PsipoInputError(f"{run_dir}: not a psipo run folder (no metrics.jsonl)")
    records = read_metrics(metrics)
    if not records:
        raise PsipoInputError(f"{metrics}: no metrics recorded yet")

    command = run_command(run_dir, records)
    reward = command == "reward"
    panels = {"reward": REWARD_PANELS, "online": ONLINE_PANELS, "train": PANELS}[command]
    per = PER_AGGREGATION[run_aggregation(run_dir)] if command == "train" else ""
    drawable = [key for _, keys in panels for key in keys if not all(map(math.isnan, _series(records, key)[1]))]
    if reward and any(isinstance(r.get("eval_reliability"), dict) for r in records):
        drawable.append("eval_reliability")
    if not drawable:  # a blank figure would look like a plot of nothing happening
        raise PsipoInputError(
            f"{metrics}: nothing to draw: no record has a numeric step and a value other than NaN of a metric of a "
            f"psipo {command} run ({', '.join(key for _, keys in panels[:2] for key in keys)}, ...)"
        )
    import matplotlib  # only now: the refusals above need not wait for it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(15, 11), constrained_layout=True)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            steps, values = _series(records, key)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=_label(key, steps, values))
        if "h_mean" in keys:
            steps, spread = _series(records, "h_std")
            _, mean = _series(records, "h_mean")
            if len(spread) == len(mean) and steps:
                ax.fill_between(
                    steps, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                    alpha=0.2, label="h_mean ± h_std",
                )
            _, target = _series(records, "ipo_target")
            if target:
                ax.axhline(target[-1], ls="--", color="k", lw=1, label="1/(2τ)")
        ax.set_title(title.format(per=per), fontsize=10)
        ax.set_xlabel("optimizer step")
        if ax.lines:
            ax.legend(fontsize=8)
    if reward:
        _reliability_diagram(axes.flat[len(panels)], records)
    for ax in list(axes.flat)[len(panels) + int(reward) :]:
        ax.axis("off")
    fig.suptitle(f"psipo {command}: {run_dir}", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(out) if out is not None else run_dir / "curves.png"
    atomic_write_bytes(path, buffer.getvalue())
    return path
