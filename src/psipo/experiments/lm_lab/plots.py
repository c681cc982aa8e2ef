"""Figures of the LM lab (matplotlib Figure objects, no pyplot; written with psipo._plotting.save_png)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from psipo._plotting import LOSS_LABELS, save_png
from psipo.experiments.lm_lab.online_vs_offline import TARGET_OF
from psipo.experiments.lm_lab.summaries import monte_carlo_interval
from psipo.stats import interval

COLORS = {"dpo": "tab:red", "ipo": "tab:blue"}


def _cells(results: dict[str, Any], oracle: str, loss: str, key: str) -> tuple[list[float], list[float], list[float]]:
    """τ values, means and CI half-widths of a final metric over seeds."""
    taus = sorted(set(results["config"]["grid"]["taus"]))
    xs, means, halves = [], [], []
    for tau in taus:
        values = [
            run["final"].get(key)
            for run in results["enumerated"]["runs"]
            if (run["oracle"], run["loss"], run["tau"]) == (oracle, loss, tau)
        ]
        cell = interval(values)
        if cell is not None:
            xs.append(tau)
            means.append(cell[0])
            halves.append(cell[1])
    return xs, means, halves


def _errors(means: list[float], halves: list[float], *, low: float | None = None,
            high: float | None = None) -> list[list[float]]:
    """Asymmetric error bars of mean ± half, clipped to [low, high] (a log axis needs low > 0);
    no bar for a single seed (NaN half-width)."""
    below, above = [], []
    for mean, half in zip(means, halves):
        half = 0.0 if math.isnan(half) else half
        below.append(half if low is None else max(0.0, min(half, mean - low)))
        above.append(half if high is None else max(0.0, min(half, high - mean)))
    return [below, above]


def _optimum_curve(results: dict[str, Any], oracle: str, psi: str, key: str) -> tuple[list[float], list[float]]:
    rows = sorted(
        (row for row in results["enumerated"]["optima"] if row["oracle"] == oracle and row["psi"] == psi),
        key=lambda row: row["tau"],
    )
    return [row["tau"] for row in rows], [row[key] for row in rows]


def _panels(count: int, *, width: float = 4.2, height: float = 3.6) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(width * count, height), layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    return figure, list(axes)


def kl_vs_tau_figure(results: dict[str, Any]) -> Figure:
    """KL(π‖π_ref) against τ, one panel per oracle: trained DPO and IPO, and the exact optima."""
    grid = results["config"]["grid"]
    taus = sorted(set(grid["taus"]))
    figure, axes = _panels(len(grid["oracles"]))
    for ax, oracle in zip(axes, grid["oracles"]):
        for loss in grid["losses"]:
            xs, means, halves = _cells(results, oracle, loss, "kl")
            ax.errorbar(xs, means, yerr=_errors(means, halves, low=min(means) / 10), marker="o", capsize=3,
                        color=COLORS.get(loss), label=f"{LOSS_LABELS.get(loss, loss)} (trained LM)")
        for psi, style, label in (("identity", "--", "π* Ψ=identity (IPO optimum)"),
                                  ("logit", ":", "π* Ψ=logit (DPO/RLHF optimum)")):
            xs, kls = _optimum_curve(results, oracle, psi, "kl")
            keep = [(x, k) for x, k in zip(xs, kls) if taus[0] / 1.5 <= x <= taus[-1] * 1.5 and k > 0]
            if keep:
                ax.plot(*zip(*keep), style, color="0.35", label=label)
        empirical = [
            interval(row["ipo"]["kl"] for row in results["enumerated"]["empirical_optima"]
                     if row["oracle"] == oracle and row["tau"] == tau)
            for tau in taus
        ]
        if all(e is not None for e in empirical):
            ax.plot(taus, [e[0] for e in empirical], "-.", color="tab:cyan", label="IPO empirical optimum (tabular)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("τ")
        ax.set_title(f"oracle {oracle}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("KL(π ‖ π_ref)  (exact, nats)")
    axes[0].legend(fontsize=7)
    figure.suptitle("KL to the reference against τ: mean ± 95% CI over datasets", fontsize=10)
    return figure


def frontier_figure(results: dict[str, Any]) -> Figure:
    """True total preference p*(π≻µ) against KL(π‖π_ref); the identity-Ψ optimum is the frontier."""
    grid = results["config"]["grid"]
    figure, axes = _panels(len(grid["oracles"]))
    for ax, oracle in zip(axes, grid["oracles"]):
        kls = _optimum_curve(results, oracle, "identity", "kl")[1]
        preferences = _optimum_curve(results, oracle, "identity", "total_preference")[1]
        ax.plot(kls, preferences, "-", color="0.3", label="π*(τ), Ψ = identity: the exact frontier")
        for loss in grid["losses"]:
            _, kl_means, kl_halves = _cells(results, oracle, loss, "kl")
            taus, pref_means, pref_halves = _cells(results, oracle, loss, "total_preference")
            ax.errorbar(kl_means, pref_means, xerr=_errors(kl_means, kl_halves, low=min(kl_means) / 10),
                        yerr=_errors(pref_means, pref_halves, low=0.0, high=1.0), fmt="o", capsize=2,
                        color=COLORS.get(loss), label=LOSS_LABELS.get(loss, loss))
            for tau, x, y in zip(taus, kl_means, pref_means):
                ax.annotate(f"τ={tau:g}", (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlim(left=1e-3)
        ax.set_xlabel("KL(π ‖ π_ref)")
        ax.set_title(f"oracle {oracle}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("total preference p*(π ≻ µ)")
    axes[0].legend(fontsize=7)
    return figure


def learning_curves_figure(results: dict[str, Any], oracle: str) -> Figure:
    """Exact KL during training, mean over seeds, one panel per loss, one line per τ."""
    grid = results["config"]["grid"]
    taus = sorted(set(grid["taus"]))
    figure, axes = _panels(len(grid["losses"]))
    for ax, loss in zip(axes, grid["losses"]):
        for i, tau in enumerate(taus):
            curves = [run["curve"] for run in results["enumerated"]["runs"]
                      if (run["oracle"], run["loss"], run["tau"]) == (oracle, loss, tau)]
            if not curves:
                continue
            steps = [point["step"] for point in curves[0]]
            means = [sum(c[k]["kl"] for c in curves) / len(curves) for k in range(len(steps))]
            shade = 0.25 + 0.75 * i / max(1, len(taus) - 1)
            ax.plot(steps, means, marker=".", color=(shade * 0.1, shade * 0.3, shade), label=f"τ = {tau:g}")
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_xlabel("optimizer step")
        ax.set_title(f"{LOSS_LABELS.get(loss, loss)}, oracle {oracle}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("KL(π ‖ π_ref)  (exact)")
    axes[0].legend(fontsize=7)
    return figure


def data_effects_figure(results: dict[str, Any], oracle: str) -> Figure:
    """Responses only lost / only won (log π/π_ref) and the mass on never-observed responses, against τ."""
    grid = results["config"]["grid"]
    panels = (("only_lost_log_ratio", "log π/π_ref, responses only lost"),
              ("only_won_log_ratio", "log π/π_ref, responses only won"),
              ("unseen_mass", "mass on never-observed responses"))
    figure, axes = _panels(len(panels))
    for ax, (key, title) in zip(axes, panels):
        for loss in grid["losses"]:
            xs, means, halves = _cells(results, oracle, loss, key)
            bounds = {"low": 0.0, "high": 1.0} if key == "unseen_mass" else {}
            ax.errorbar(xs, means, yerr=_errors(means, halves, **bounds), marker="o", capsize=3,
                        color=COLORS.get(loss), label=LOSS_LABELS.get(loss, loss))
        if key == "unseen_mass":
            reference = [row["reference_unseen_mass"] for row in results["enumerated"]["empirical_optima"]
                         if row["oracle"] == oracle]
            if reference:
                ax.axhline(sum(reference) / len(reference), color="0.4", ls="--", label="π_ref")
        else:
            ax.axhline(0.0, color="0.4", ls="--", label="π_ref")
        ax.set_xscale("log")
        ax.set_xlabel("τ")
        ax.set_title(f"{title} ({oracle})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return figure


def large_figure(results: dict[str, Any]) -> Figure:
    """Monte Carlo KL and total preference of the large configuration against τ."""
    large = results["large"]
    figure, axes = _panels(2)
    for ax, key in zip(axes, ("kl", "total_preference")):
        for loss in sorted({run["loss"] for run in large["runs"]}):
            taus = sorted({run["tau"] for run in large["runs"]})
            cells = [monte_carlo_interval([run for run in large["runs"]
                                           if run["loss"] == loss and run["tau"] == tau], key)
                     for tau in taus]
            means, halves = [c[0] for c in cells], [c[1] for c in cells]
            bounds = {"low": min(means) / 10} if key == "kl" else {"low": 0.0, "high": 1.0}
            ax.errorbar(taus, means, yerr=_errors(means, halves, **bounds), marker="o", capsize=3,
                        color=COLORS.get(loss), label=LOSS_LABELS.get(loss, loss))
        ax.set_xscale("log")
        ax.set_xlabel("τ")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("KL(π ‖ π_ref)  (Monte Carlo)")
    axes[1].set_ylabel("p*(π ≻ µ)  (Monte Carlo)")
    axes[0].legend(fontsize=7)
    figure.suptitle(
        f"V = {large['vocab_size']}, L = {large['response_length']} "
        f"(10^{large['log10_num_responses']:.0f} responses), oracle {large['oracle']}: mean ± 95% CI over seeds",
        fontsize=9,
    )
    return figure


def _tv_against_n(axis: Any, rows: list[dict[str, Any]], tau: float, **style: Any) -> None:
    """Mean TV(·, π*) with its 95% CI over seeds against N, of the rows at τ."""
    sizes = sorted({r["num_pairs"] for r in rows if r["tau"] == tau})
    cells = [interval(r["tv_to_optimum"] for r in rows if (r["tau"], r["num_pairs"]) == (tau, n)) for n in sizes]
    means, halves = [c[0] for c in cells], [c[1] for c in cells]
    axis.errorbar(sizes, means, yerr=_errors(means, halves, low=1e-6), marker="o", ms=3, capsize=2, **style)


def _against_n(axis: Any, ylabel: str, title: str, fontsize: int) -> None:
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("N (pairs)")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=fontsize)


def consistency_figure(results: dict[str, Any]) -> Figure:
    """TV(π̂_N, π*) of IPO's empirical optimum against N, one panel per oracle, one line per τ."""
    sweep = results["sweep"]
    oracles = results["config"]["grid"]["oracles"]
    figure, axes = _panels(len(oracles))
    sizes = sorted(set(sweep["num_pairs"]))
    for axis, oracle in zip(axes, oracles):
        rows = [r for r in sweep["rows"] if r["oracle"] == oracle]
        for tau in sorted({r["tau"] for r in rows}):
            _tv_against_n(axis, rows, tau, label=f"τ = {tau:g}")
        reference = [sizes[0], sizes[-1]]
        anchor = [r["tv_to_optimum"] for r in rows if r["num_pairs"] == sizes[0]]
        if anchor:
            start = sum(anchor) / len(anchor)
            axis.plot(reference, [start, start * (sizes[-1] / sizes[0]) ** -0.5], "k:", lw=1, label="N^(−1/2)")
        _against_n(axis, "TV(π̂_N, π*)", f"IPO's empirical optimum, {oracle}", 7)
    return figure


def lm_sweep_figure(results: dict[str, Any]) -> Figure:
    """Trained IPO's TV(π_IPO, π*) against N (solid), one panel per oracle, one colour per τ, with the
    exact N-sweep's TV(π̂_N, π*) at the same τ (dashed) when it ran."""
    rows, oracles = results["lm_sweep"]["rows"], results["config"]["grid"]["oracles"]
    exact = (results.get("sweep") or {}).get("rows", [])
    figure, axes = _panels(len(oracles))
    for axis, oracle in zip(axes, oracles):
        trained = [r for r in rows if (r["oracle"], r["loss"]) == (oracle, "ipo")]
        exact_here = [r for r in exact if r["oracle"] == oracle]
        for number, tau in enumerate(sorted({r["tau"] for r in trained})):
            _tv_against_n(axis, trained, tau, ls="-", color=f"C{number}", label=f"trained IPO, τ = {tau:g}")
            if any(r["tau"] == tau for r in exact_here):
                _tv_against_n(axis, exact_here, tau, ls="--", color=f"C{number}", label=f"exact π̂_N, τ = {tau:g}")
        _against_n(axis, "TV(·, π*)", f"consistency in N, {oracle}", 6)
    return figure


def draw_all(results: dict[str, Any], folder: Path) -> list[Path]:
    """Write every figure of the lab into ``folder``; return their paths."""
    oracles = results["config"]["grid"]["oracles"]
    focus = next((o for o in oracles if o.startswith("bt:") and math.isinf(float(o.split(":")[1]))), oracles[0])
    figures = {
        "kl_vs_tau.png": kl_vs_tau_figure(results),
        "frontier.png": frontier_figure(results),
        "learning_curves.png": learning_curves_figure(results, focus),
        "data_effects.png": data_effects_figure(results, focus),
    }
    if results.get("sweep") and results["sweep"]["rows"]:
        figures["consistency.png"] = consistency_figure(results)
    if results.get("large") and results["large"]["runs"]:
        figures["large.png"] = large_figure(results)
    if results.get("online_vs_offline") and results["online_vs_offline"]["runs"]:
        figures["online_vs_offline.png"] = online_vs_offline_figure(results)
    if results.get("lm_sweep") and results["lm_sweep"]["rows"]:
        figures["lm_sweep.png"] = lm_sweep_figure(results)
    paths = []
    for name, figure in figures.items():
        path = folder / name
        save_png(figure, path)
        paths.append(path)
    return paths


def online_vs_offline_figure(results: dict[str, Any]) -> Figure:
    """Against oracle queries: each algorithm's TV to its own target and its p*(π≻π_ref), mean ± CI
    over seeds; the targets' total preferences as horizontal lines."""
    section = results["online_vs_offline"]
    figure, (distance, preference) = _panels(2)
    colors = {"online_ipo": "tab:green", "ipo_md": "tab:purple", "offline_ipo": "tab:blue"}
    for algorithm in dict.fromkeys(run["algorithm"] for run in section["runs"]):
        runs = [run for run in section["runs"] if run["algorithm"] == algorithm]
        queries = [point["queries"] for point in runs[0]["curve"]]
        for axis, key in ((distance, "tv_to_target"), (preference, "total_preference")):
            cells = [interval(run["curve"][i][key] for run in runs) for i in range(len(queries))]
            means, halves = [c[0] for c in cells], [c[1] for c in cells]
            axis.errorbar(queries, means, yerr=_errors(means, halves), marker="o", markersize=3, capsize=2,
                          color=colors[algorithm], label=algorithm)
        preference.axhline(section["targets"][TARGET_OF[algorithm]]["total_preference"], color=colors[algorithm],
                           linestyle="--", linewidth=0.8)
    distance.set(xlabel="oracle queries (labelled pairs)", ylabel="TV(π, own target)", title="distance to own target")
    preference.set(xlabel="oracle queries (labelled pairs)", ylabel="p*(π≻π_ref)",
                   title="total preference (dashed: targets)")
    for axis in (distance, preference):
        axis.xaxis.set_major_locator(MaxNLocator(5))  # query counts run to tens of thousands
    distance.legend(fontsize=8)
    return figure
