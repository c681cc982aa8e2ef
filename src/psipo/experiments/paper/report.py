"""REPORT.md of the reproduction, from the numbers of ``results.json`` alone.

Every sentence that states a result is computed from those numbers; the others define what
the columns are.
"""

from __future__ import annotations

from typing import Any

from psipo.experiments.paper.claims import PROBABILITY_TOLERANCE, final_means
from psipo.experiments.paper.config import EMPIRICAL_OPTIMA, PAPER_FIGURES, PAPER_TRAINING
from psipo.experiments.reporting import (
    claims_from_data,
    format_number,
    markdown_table,
    not_measured_from_data,
    report_markdown,
)

TITLE = "Reproduction of Azar et al. (2023), §5.3.1 and §5.4"

UNDECIDED_BY_TRAINING = "training too short to decide: the curves that miss the rule are still moving, more steps needed"
"""Why a claim of the reproduction is undecided (:func:`psipo.experiments.paper.claims.unless_still_moving`)."""


def render_report(results: dict[str, Any]) -> str:
    """REPORT.md from the numbers of ``results.json``."""
    config = results["config"]
    return report_markdown(
        title=TITLE,
        introduction=[
            f"Produced by `{results.get('command') or 'psipo reproduce'}` in {results['runtime_seconds']:.1f} s: "
            "sampled training of the paper's illustrative examples on a tabular softmax policy, beside the "
            "closed-form optima of the same losses."
        ],
        setup=_setup(config, results["timing_seconds"]),
        claims=claims_from_data(results["claims"]),
        not_measured=not_measured_from_data(results),
        undecided_means=UNDECIDED_BY_TRAINING,
        sections=[
            ("§5.3.1 Asymptotic setting: π*(y1) with p*(y1≻y2) = 1", _asymptotic(results)),
            ("§5.4 Sampled preferences", _sampled(results)),
            *([("Prop. 4: the optima of DPO and RLHF", _prop4(results["prop4"]))] if results.get("prop4") else []),
            ("Files", _files(results)),
        ],
    )


def _setup(config: dict[str, Any], timing: dict[str, float]) -> list[str]:
    taus = ", ".join(f"{t:g}" for t in config["taus"])
    return [
        f"Losses {', '.join(config['losses'])}; τ ∈ {{{taus}}}; {config['seeds']} seeds × {config['steps']} Adam "
        f"steps (lr {config['learning_rate']}, b1 {config['adam_b1']}, b2 {config['adam_b2']}, eps "
        f"{config['adam_eps']}), minibatch {config['batch_size']} sampled uniformly with replacement; "
        f"{config['dtype']}; RLHF reward L2 λ = {config['rlhf_l2']}. Training took {timing['train_grid']:.2f} s "
        f"for the §5.4 grid and {timing['train_asymptotic']:.2f} s for §5.3.1 (all runs of each vectorised "
        "into one computation).",
        "",
        "Trained numbers are the mean over seeds of the final policy ± the half-width of a 95% "
        "t-interval. *Empirical optimum*: the exact minimiser of the same empirical loss on the same "
        "dataset (IPO: minimum-norm least squares; DPO: Bradley–Terry maximum likelihood scaled by 1/τ; "
        "RLHF: π ∝ π_ref·exp(r̂/τ); — for other losses). *Population optimum*: the ΨPO optimum (Eq. 7/9; "
        "Ψ = identity for IPO, logit for DPO/RLHF; — for losses without a Ψ) of the preference table "
        "the dataset observes, when it observes every pair.",
        "",
        "Differences from the paper's §5.3–5.4: " + "; ".join(differences(config)) + ".",
    ]


def differences(config: dict[str, Any]) -> list[str]:
    """Every way this run departs from what §5.3–5.4 state (settings, dtype, τ, losses, datasets)."""
    units = {"steps": "steps", "seeds": "seeds", "batch_size": "rows per minibatch"}
    changed = [
        f"{config[key]:g} {units[key]} (the paper: {value:g})" if key in units
        else f"{key} {config[key]:g} (the paper: {value:g})"
        for key, value in PAPER_TRAINING.items() if config[key] != value
    ]
    extra_losses = [loss for loss in config["losses"] if loss not in PAPER_FIGURES["losses"]]
    extra_datasets = [name for name in config["datasets"] if name not in PAPER_FIGURES["datasets"]]
    return [
        *changed,
        "§5.4's text names no τ values, so this τ grid is psipo's choice",
        *([f"{config['dtype']} (the paper does not state its dtype; flax and optax default to float32)"]
          if config["dtype"] != "float32" else []),
        "§5.3.1 is solved in closed form only; the trained D0 column is psipo's",
        *([f"{', '.join(extra_losses)}: not in the paper's figures (IPO and DPO only)"] if extra_losses else []),
        *([f"{', '.join(extra_datasets)}: not in the paper's figures (D1 and D3 only)"] if extra_datasets else []),
    ]


def _asymptotic(results: dict[str, Any]) -> list[str]:
    asymptotic = results["asymptotic"]
    rows, losses = asymptotic["rows"], asymptotic["losses"]
    widest = max(row[loss]["trained_ci95_half_width"] for row in rows for loss in losses)
    text = (
        "Closed form: the exact ΨPO optimum of the population problem (two actions, p*(y1≻y2) = 1, uniform "
        "µ and π_ref): IPO σ(0.5/τ), DPO 1. Trained: sampled training on D0 = {(y1, y2)}, the dataset in "
        "which every observed comparison is won by y1 (p̂(y1≻y2) = 1). We train on this dataset rather "
        "than on the population loss because §5.3.1 is about what the *sampled* losses converge to."
    )
    if "ipo" in losses:
        gap = max(abs(row["ipo"]["empirical_optimum"] - row["ipo"]["closed_form"]) for row in rows)
        text += (
            " Its empirical IPO optimum (h = 1/(2τ)) is the population optimum σ(0.5/τ) (largest difference "
            f"over τ: {format_number(gap, 2)}), so the columns compare like with like."
        )
    text += (
        " D0 has a single row, so every minibatch is the same: the widest confidence interval below has "
        f"half-width {format_number(widest, 2)}."
    )
    table = markdown_table(
        ["τ", *(f"{loss.upper()} {column}" for loss in losses for column in ("closed form", "trained"))],
        [
            [f"{row['tau']:g}", *(cell for loss in losses for cell in (
                format_number(row[loss]["closed_form"], 6),
                format_number((row[loss]["trained_mean"], row[loss]["trained_ci95_half_width"]), 6),
            ))]
            for row in rows
        ],
    )
    return [text, "", table, "", f"![§5.3.1]({results['figures']['asymptotic']})"]


def _policy(values: list[float] | None, half: list[float] | None = None) -> str:
    if values is None:
        return "none (no minimiser)"
    if half is None:
        return ", ".join(format_number(v, 4) for v in values)
    return ", ".join(format_number((v, h), 4) for v, h in zip(values, half))


def _sampled(results: dict[str, Any]) -> list[str]:
    lines = []
    if "d3_invariants" in results:
        invariants = results["d3_invariants"]
        lines += [
            "**D3 as printed versus D3'.** The paper prints D3 = {(a,b), (b,a)} and says the pair (a,c) is "
            "left unobserved, but this D3 never mentions c at all: every empirical loss gives θ_c zero "
            "gradient and keeps θ_a + θ_b fixed (in these runs max |Δθ_c| = "
            f"{format_number(invariants['max_abs_shift_c'], 2)} and max |Δ(θ_a+θ_b)| = "
            f"{format_number(invariants['max_abs_shift_a_plus_b'], 2)}), so π(c) = 1/(1 + 2cosh(Δ)) with "
            "Δ = (θ_a − θ_b)/2 can only fall below π_ref(c) = 1/3 through the minibatch noise in θ_a − θ_b: "
            f"final π(c) between {format_number(invariants['pi_c_min'], 3)} and "
            f"{format_number(invariants['pi_c_max'], 3)} over every run. We therefore also run "
            "D3' = {(a,b), (b,a), (b,c)}, in which c is observed only as a loser and (a,c) is unobserved — "
            "the situation the text describes.",
            "",
        ]
    for name, section in results["datasets"].items():
        lines += [f"### {section['description']}", "", *_dataset_sentences(results, name), ""]
        lines += [f"![{name}]({results['figures'][name]})", ""]
        actions = ", ".join(f"π({a})" for a in section["actions"])
        lines += [markdown_table(
            ["loss", "τ", f"trained ({actions})", "empirical optimum", "population optimum"],
            [
                [e["loss"].upper(), f"{e['tau']:g}", _policy(e["trained_mean"], e["trained_ci95_half_width"]),
                 _policy(e["empirical_optimum"]) if e["loss"] in EMPIRICAL_OPTIMA else "—",
                 "—" if e["population_optimum"] is None else _policy(e["population_optimum"])]
                for e in section["results"]
            ],
        ), ""]
    if "rlhf" in results["config"]["losses"]:
        lines += [_rlhf_note(results), ""]
    return lines


def _dataset_sentences(results: dict[str, Any], name: str) -> list[str]:
    """What the dataset's structure implies, with the trained numbers that show it."""
    section, losses = results["datasets"][name], results["config"]["losses"]
    never = section["never_winning_actions"]
    if section["dpo_minimiser_exists"]:
        text = "DPO's empirical loss has a minimiser."
    else:
        text = f"DPO's empirical loss has **no minimiser**: {', '.join(never) or 'some action'} never wins."
        if never and "dpo" in losses:
            index = [section["actions"].index(a) for a in never]
            highest = max(p[i] for p in final_means(results, name, "dpo").values() for i in index)
            text += f" DPO's final probability of {', '.join(never)} is at most {format_number(highest, 2)} at every τ."
    if section["population_problem"] is None:
        text += " Not every pair is observed, so there is no population problem to compare with."
    if name == "D2":
        text += " " + _uniform_note(results)
    return [text]


def _uniform_note(results: dict[str, Any]) -> str:
    """D2's cycle makes π_ref (uniform) the empirical minimiser: how far the optima and runs are from it."""
    entries = results["datasets"]["D2"]["results"]
    optima = [e["empirical_optimum"] for e in entries if e["empirical_optimum"] is not None]
    distance = {
        loss: max(abs(p - 1 / 3) for e in entries if e["loss"] == loss for p in e["trained_mean"])
        for loss in results["config"]["losses"]
    }
    text = "Largest distance |π − 1/3| of the trained means from uniform over τ: " + ", ".join(
        f"{loss.upper()} {format_number(value, 2)}" for loss, value in distance.items()
    )
    if optima:
        farthest = max(abs(p - 1 / 3) for optimum in optima for p in optimum)
        text += f"; of the empirical optima: {format_number(farthest, 2)}"
    return text + " (D2 is not plotted in the paper)."


def _rlhf_note(results: dict[str, Any]) -> str:
    """Where RLHF's unregularised reward fit has no optimum, and what its policy does there."""
    config, datasets = results["config"], results["datasets"]
    missing = [
        name for name, section in datasets.items()
        if any(e["loss"] == "rlhf" and e["empirical_optimum"] is None for e in section["results"])
    ]
    text = f"**RLHF** (not run in the paper), with reward L2 λ = {config['rlhf_l2']}: "
    if not missing:
        return text + "the Bradley–Terry reward has a maximum-likelihood estimate on every dataset."
    never_winning = [
        p[datasets[name]["actions"].index(action)]
        for name in missing
        for p in final_means(results, name, "rlhf").values()
        for action in datasets[name]["never_winning_actions"]
    ]
    text += f"the Bradley–Terry reward has no maximum-likelihood estimate on {', '.join(missing)}"
    if never_winning:
        worst = max(never_winning)
        text += (
            f"; there RLHF's final probability of an action that never wins is at most {format_number(worst, 2)} "
            "at every τ"
        )
        if worst <= PROBABILITY_TOLERANCE:
            text += ": it over-fits as DPO does (§4.2)"
    return text + ". `--rlhf_l2` > 0 gives the reward a finite optimum."


def _prop4(section: dict[str, Any]) -> list[str]:
    """Per dataset whose Bradley–Terry loss has a minimiser and τ: DPO's optimum found directly, RLHF's, their gap."""
    return [
        "Computed exactly, not trained: π_DPO minimises DPO's empirical loss (Eq. 4) itself (L-BFGS, float64); "
        "π_RLHF = π_ref·exp(r̂/τ)/Z (Eq. 3) with r̂ the Bradley–Terry maximum-likelihood reward on the same "
        "data (Newton). Only datasets whose Bradley–Terry loss has a minimiser (Prop. 4's premise) are shown.",
        "",
        markdown_table(
            ["dataset", "r̂", "τ", "π_DPO", "π_RLHF", "max gap", "DPO loss at π_DPO", "at π_RLHF"],
            [
                [data["description"] if r is data["rows"][0] else "",
                 _policy(data["reward"]) if r is data["rows"][0] else "",
                 f"{r['tau']:g}", _policy(r["dpo"]), _policy(r["rlhf"]), format_number(r["max_abs_gap"], 2),
                 format_number(r["dpo_loss_at_dpo"], 6), format_number(r["dpo_loss_at_rlhf"], 6)]
                for name, data in section.items() for r in data["rows"]
            ],
        ),
    ]


def _files(results: dict[str, Any]) -> list[str]:
    return [
        "- `results.json`: every number above, per-seed final policies, and the learning curves "
        "(mean and 95% CI half-width per recorded step); numbers that are not finite are written "
        '"inf", "-inf" or "nan".',
        "- " + ", ".join(f"`{f}`" for f in results["figures"].values()) + ": the figures.",
    ]
