"""Curves of a training run folder (its metrics.jsonl), or of several side by side, as PNG."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
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
    ("held-out pairs: log-ratio gap h (IPO target 1/(2τ) dashed)", ["eval_pairs_h_mean"]),
    ("held-out pairs: preference accuracy (h > 0)", ["eval_pairs_accuracy"]),
    ("KL(π‖π_ref) estimate per sequence", ["kl", "eval_kl"]),
    ("entropy estimate −E log π(y) per sequence", ["entropy"]),
    ("judge's decisiveness |2p − 1|", ["preference_strength"]),
    ("response length (tokens)", ["response_length"]),
    ("share of time spent generating", ["generation_fraction"]),
    ("generated tokens / second", ["tokens_per_second"]),
]
"""The panels of a ``psipo online`` run."""

PANELS_OF = {"train": PANELS, "reward": REWARD_PANELS, "online": ONLINE_PANELS}
"""The panels of each command's runs (:func:`run_command`)."""

HELD_OUT_PAIRS = {"train": "eval_", "online": "eval_pairs_"}
"""The prefix of the metrics of held-out preference pairs in each command's records that has
them: a psipo train run's ``eval_data``, a psipo online run's ``eval_pairs``."""

PAIR_PANELS: list[tuple[str, list[str]]] = [
    ("held-out pairs: preference accuracy (h > 0)", ["accuracy"]),
    ("held-out pairs: log-ratio gap h (each run's IPO target 1/(2τ) dashed){per}", ["h_mean"]),
    ("held-out pairs: implicit reward margin τ·h{per}", ["margin"]),
    ("held-out pairs: log-probs{per}", ["logps_chosen", "logps_rejected"]),
]
"""The panels of psipo train runs compared with psipo online runs: what both record on held-out
preference pairs (keys without their :data:`HELD_OUT_PAIRS` prefix). Their losses and KL
estimates are of other quantities (another loss; KL on data against KL on samples)."""

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


def run_aggregation(run_dir: Path, command: str = "train") -> str | None:
    """The aggregation ("sum" or "mean", auto resolved) the psipo train or online run trained
    with; None when its config.yaml is missing or unreadable, which leaves the curves still
    worth drawing."""
    from psipo._config import load_config
    from psipo.lm.config import TrainConfig
    from psipo.lm.online import OnlineConfig

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_config(OnlineConfig if command == "online" else TrainConfig, path).aggregation
    except PsipoInputError:
        return None


def run_command(run_dir: Path, records: list[dict[str, Any]]) -> str:
    """Which trainer wrote the run: by the keys of its config.yaml, as a resume tells
    (:func:`psipo.lm.run_folder.command_of`), read line by line so that a config that no longer
    parses still tells; else by its records: ``reward`` if it recorded a calibration error,
    ``online`` a generation share, else ``train``."""
    from psipo.lm.run_folder import command_of

    path = run_dir / "config.yaml"
    try:
        config_text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        config_text = ""
    by_keys = command_of({line.split(":", 1)[0]: None for line in config_text.splitlines()})
    if by_keys == "psipo reward" or any("eval_ece" in r for r in records):
        return "reward"
    if by_keys == "psipo online" or any("generation_fraction" in r for r in records):
        return "online"
    return "train"


def _reliability_diagram(ax: Any, runs: list[Run]) -> None:
    """Mean predicted P(a ≻ b) against the observed frequency per bin, of each run's last evaluation."""
    ax.plot([0, 1], [0, 1], ls="--", color="k", lw=1, label="perfect calibration")
    eces = []
    for run in runs:
        last = next((r for r in reversed(run.records) if isinstance(r.get("eval_reliability"), dict)), None)
        if last is None:
            continue
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
        ece = last.get("eval_ece")
        eces.append(f"{ece if _is_number(ece) else math.nan:.3g}")
        if points:
            step = last.get("step")
            label = f"step {step}" if _is_number(step) else "last evaluation"
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=4, color=run.color,
                    label=label if run.name is None else f"{run.name}: {label} (ECE {eces[-1]})")
            for c, f, n in points:
                ax.annotate(str(n), (c, f), fontsize=7, textcoords="offset points", xytext=(3, -9))
    if not eces:
        title = "reliability: no held-out evaluation recorded"
    elif len(runs) == 1:
        title = f"reliability, held out (ECE {eces[0]}; both orders; n per bin)"
    else:
        title = "reliability of each run's last evaluation, held out (both orders; n per bin)"
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("predicted P(a ≻ b) = σ(r_a − r_b)")
    ax.set_ylabel("observed frequency of a ≻ b")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


MAX_RUNS = 10
"""The most runs one figure compares: each run has its own colour of matplotlib's ten."""

KEY_STYLES = ("-", "--", ":", "-.")
"""Line style of a panel's first, second, … metric when several runs share the panel (the colour is the run's)."""

UNITS = {"sum": "per sequence", "mean": "per token"}
"""A log-prob's unit under each aggregation, in a legend entry when the runs compared differ."""


@dataclass
class Run:
    """One run folder's records, as :func:`plot_runs` draws them."""

    folder: Path
    records: list[dict[str, Any]]
    command: str
    """``train``, ``reward`` or ``online`` (:func:`run_command`)."""
    aggregation: str | None
    name: str | None = None
    """The run's name in legends when several runs are compared (None: one run, keys alone)."""
    color: str | None = None
    """The run's colour when several runs are compared (None: one colour per metric)."""


def load_run(run_dir: str | Path) -> Run:
    """A run folder's metrics, refused in one line when it is no run folder or has none."""
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
    panels = PANELS_OF[command]
    drawable = [key for _, keys in panels for key in keys if not all(map(math.isnan, _series(records, key)[1]))]
    if command == "reward" and any(isinstance(r.get("eval_reliability"), dict) for r in records):
        drawable.append("eval_reliability")
    if not drawable:  # a blank figure would look like a plot of nothing happening
        raise PsipoInputError(
            f"{metrics}: nothing to draw: no record has a numeric step and a value other than NaN of a metric of a "
            f"psipo {command} run ({', '.join(key for _, keys in panels[:2] for key in keys)}, ...)"
        )
    return Run(run_dir, records, command, run_aggregation(run_dir, command) if command in HELD_OUT_PAIRS else None)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's metric curves into one PNG (default ``RUN_DIR/curves.png``); return its path."""
    return plot_runs([run_dir], out)


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Draw the metric curves of one run, or of several runs of one command side by side (each
    in its colour, a panel's metrics in line styles), into one PNG; return its path. psipo train
    runs and psipo online runs compare on what both record, their held-out preference pairs
    (:data:`PAIR_PANELS`). ``out``: the PNG (default for one run: ``RUN_DIR/curves.png``;
    several runs need it)."""
    from psipo._io import atomic_write_bytes

    runs = [load_run(run_dir) for run_dir in run_dirs]
    if not runs:
        raise PsipoInputError("RUN_DIR: name a run folder")
    _check_comparable(runs, out)
    if len(runs) > 1:
        for i, run in enumerate(runs):
            run.name, run.color = str(run.folder), f"C{i}"
    commands = list(dict.fromkeys(run.command for run in runs))
    reward = commands == ["reward"]
    panels = PANELS_OF[commands[0]] if len(commands) == 1 else PAIR_PANELS
    aggregations = {run.aggregation for run in runs}
    per = PER_AGGREGATION[runs[0].aggregation] if len(aggregations) == 1 else ""

    import matplotlib  # only now: the refusals above need not wait for it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_axes = len(panels) + int(reward)
    columns = 3 if n_axes > 4 else 2
    rows = -(-n_axes // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.7 * rows), constrained_layout=True, squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels, strict=False):
        for run in runs:
            run_keys = keys if len(commands) == 1 else [HELD_OUT_PAIRS[run.command] + key for key in keys]
            _draw_panel(ax, run, run_keys, unit=bool(per == "" and "{per}" in title and run.aggregation))
        ax.set_title(title.format(per=per), fontsize=10)
        ax.set_xlabel("optimizer step")
        if ax.lines:
            ax.legend(fontsize=8)
    if reward:
        _reliability_diagram(axes.flat[len(panels)], runs)
    for ax in list(axes.flat)[len(panels) + int(reward) :]:
        ax.axis("off")
    what = f"psipo {commands[0]}" if len(commands) == 1 else "psipo train and psipo online runs on their held-out pairs"
    fig.suptitle(f"{what}: {', '.join(str(run.folder) for run in runs)}", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(out) if out is not None else runs[0].folder / "curves.png"
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _check_comparable(runs: list[Run], out: str | Path | None) -> None:
    """Several runs: at most :data:`MAX_RUNS`, each once, of one command, into a named ``out``."""
    if len(runs) == 1:
        return
    if len(runs) > MAX_RUNS:
        raise PsipoInputError(f"RUN_DIR: {len(runs)} runs; one figure compares at most {MAX_RUNS} (one colour each)")
    seen: dict[Path, Path] = {}
    for run in runs:
        first = seen.setdefault(run.folder.resolve(), run.folder)
        if first is not run.folder:
            raise PsipoInputError(f"RUN_DIR: {run.folder} is the run {first} again; name each run once")
    other = next((run for run in runs if run.command != runs[0].command), None)
    if other is not None and not {run.command for run in runs} <= HELD_OUT_PAIRS.keys():
        # name the run that compares with no other (a reward run), beside one of another command
        odd = next(run for run in runs if run.command not in HELD_OUT_PAIRS)
        beside = other if odd is runs[0] else runs[0]
        raise PsipoInputError(
            f"RUN_DIR: {odd.folder} is a psipo {odd.command} run and {beside.folder} a psipo {beside.command} "
            "run; their curves are of other metrics: compare runs of one command (or psipo train runs with psipo "
            "online runs, on their held-out pairs)"
        )
    if other is not None:
        for run in runs:
            key = HELD_OUT_PAIRS[run.command] + "accuracy"
            if all(math.isnan(value) for value in _series(run.records, key)[1]):
                given = "eval_data or eval_fraction" if run.command == "train" else "eval_pairs"
                raise PsipoInputError(
                    f"RUN_DIR: {run.folder} recorded no evaluation on held-out preference pairs ({key}; "
                    f"{given} gives them); psipo train and psipo online runs compare only there"
                )
    if out is None:
        raise PsipoInputError("--out: name the PNG of the comparison (several runs have no one folder it belongs in)")


def _draw_panel(ax: Any, run: Run, keys: list[str], *, unit: bool) -> None:
    """``run``'s curves of ``keys`` on ``ax``; ``unit``: its log-prob unit in the legend (the
    runs compared differ in it)."""
    records = run.records
    for style, key in zip(itertools.cycle(KEY_STYLES), keys):
        steps, values = _series(records, key)
        if not steps:
            continue
        label = _label(key, steps, values)
        if unit:
            label += f" ({UNITS[run.aggregation]})"
        look = {} if run.name is None else {"color": run.color, "ls": style}
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3,
                label=label if run.name is None else f"{run.name}: {label}", **look)
    h_key = next((key for key in keys if key.endswith("h_mean")), None)
    if h_key is not None:
        prefix = h_key.removesuffix("h_mean")
        steps, spread = _series(records, f"{prefix}h_std")
        _, mean = _series(records, h_key)
        if len(spread) == len(mean) and steps:
            band = f"{h_key} ± {prefix}h_std" if run.name is None else f"{run.name}: {h_key} ± {prefix}h_std"
            ax.fill_between(
                steps, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                alpha=0.2, label=band, **({} if run.color is None else {"color": run.color}),
            )
        _, target = _series(records, "ipo_target")
        if target:
            # each run's own 1/(2τ): runs compared across τ have different targets
            ax.axhline(target[-1], ls="--", color=run.color or "k", lw=1,
                       label="1/(2τ)" if run.name is None else f"{run.name}: 1/(2τ)")
