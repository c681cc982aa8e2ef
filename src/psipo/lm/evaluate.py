r"""``psipo evaluate``: is a trained model better than its baseline, and how far has it moved?

Given a causal LM (``model``), a baseline (``baseline``; by default the reference of a psipo
run when ``model`` is a run's ``final/`` folder), prompts and a judge (pairwise) or a reward
(scalar), :func:`evaluate` draws one response per prompt from each model
(:func:`psipo.lm.sample`, with independent random streams) and reports

* the **win rate** of the model over the baseline: the mean over prompts of the judge's
  P(model ≻ baseline), or with a reward of 1[r_m > r_b] + ½·1[r_m = r_b], with a 95%
  t-interval over prompts (:func:`psipo.stats.interval`);
* the **mean reward** of each, when the judge is a reward model or a reward is given;
* a Monte Carlo estimate of **KL(π‖π_baseline)** = E_{y∼π}[log π(y|x) − log π_base(y|x)] and its
  95% interval: the model's samples scored under the baseline (:attr:`Samples.reference_logps`),
  one term per prompt. It is computed only at temperature 1 and top-p 1, where the samples
  come from π itself and the estimate is unbiased (exact in expectation; single terms can be
  negative); at other settings the samples come from a warped distribution and the figure is
  left out, with the reason in the output. Responses are cut at ``max_new_tokens``, so it is
  the KL of the distributions over responses so cut;
* response **lengths**: the mean number of tokens and the fraction cut at ``max_new_tokens``.

It writes ``evaluation.json`` (non-finite numbers as strings, :mod:`psipo._json`) and a short
Markdown summary ``evaluation.md`` into ``out``, atomically.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from psipo._config import load_config
from psipo._io import expand_home, lies_in_folder
from psipo.errors import PsipoInputError
from psipo.lm.config import MAX_SEED, TAU_REQUIREMENT, is_usable_tau, split_is_given

MODEL_STREAM, BASELINE_STREAM = 0, 1
"""The model's and the baseline's samples use generators seeded 2·seed + stream: independent."""


@dataclasses.dataclass
class EvaluateConfig:
    """Evaluation: a model against a baseline, on prompts, by a judge or a reward."""

    model: str = ""
    """Causal LM to evaluate: a local folder (e.g. a psipo run's final/) or a Hub name (required)."""
    baseline: str | None = None
    """Causal LM to compare with; null: the reference of the psipo run whose final/ folder is
    model (the model, or reference_model, of the run's config.yaml)."""
    tokenizer: str | None = None
    """Tokenizer id or folder; null uses the model's."""
    prompts: str = ""
    """Prompts: a .jsonl/.json/.parquet file, a datasets save_to_disk folder or a Hugging Face
    dataset name whose rows have a 'prompt' field, a string or a list of {role, content}
    messages (chat template), or are preference pairs without one (chosen and rejected: their
    shared start, as psipo train reads it) (required)."""
    prompts_split: str = "train"
    """Split of a Hugging Face dataset of prompts; for a file or a single saved dataset a slice (train[:200]) selects rows and a plain name means all of it."""
    dataset_config: str | None = None
    """Configuration (subset) name of a Hugging Face dataset of prompts."""
    max_prompts: int | None = None
    """Use only the first N prompts; null: all."""
    max_prompt_length: int = 256
    """Maximum prompt tokens; a longer prompt keeps its end."""
    judge: str | None = None
    """Pairwise judge P(model ≻ baseline): a reward-model folder (σ(r_m − r_b)) or
    package.module:function(prompts, responses_a, responses_b). Give judge or reward, not both."""
    reward: str | None = None
    """Scalar reward: a reward-model folder or package.module:function(prompts, responses); the
    win is 1[r_m > r_b] + ½·1[tie]."""
    max_new_tokens: int = 64
    """Most tokens of a sampled response."""
    temperature: float = 1.0
    """Sampling temperature (0: greedy). The KL estimate needs 1."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]. The KL estimate needs 1."""
    seed: int = 0
    """Seed of the samples; the model and the baseline draw from independent streams."""
    batch_size: int = 8
    """Prompts sampled per batch."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of the two models (float16 loads as float32)."""
    trust_remote_code: bool = False
    """Run model code shipped with a Hub repository."""
    device: Literal["auto", "cpu"] = "auto"
    """auto: a GPU when there is one; cpu: force the CPU."""
    out: str = "evaluation"
    """Folder for evaluation.json and evaluation.md."""
    progress: bool = True
    """Show progress over batches on stderr: a bar on a terminal, plain lines off one (a log file)."""
    pairs: str | None = None
    """Preference pairs instead of prompts (prompt/chosen/rejected, conversational or implicit,
    as psipo train reads them): nothing is sampled; each pair's log-ratio gap h = log
    π/π_base(chosen) − log π/π_base(rejected) gives the accuracy 1[h > 0], h against IPO's
    target 1/(2τ), and IPO's and DPO's losses. A reward model (a psipo reward run's final/, or
    a sequence classifier) is scored on its own: accuracy 1[r_w > r_l], margin, Bradley–Terry
    loss, calibration. Tokenised as the run whose final/ is model trained. Give prompts or pairs."""
    pairs_split: str = "test"
    """Split of a Hugging Face dataset of pairs; for a file or a single saved dataset a slice (test[:500]) selects rows and a plain name means all of it."""
    tau: float | None = None
    """pairs only: τ of the IPO target and the losses; null: the tau of the run whose final/ is
    model (none for another model: no target, no losses)."""
    aggregation: Literal["auto", "sum", "mean"] = "auto"
    """pairs only: sequence log-prob of h, sum or mean over completion tokens; auto: the run's
    (the loss's default), sum for another model."""

    def __post_init__(self) -> None:
        self.out = expand_home(self.out)


def validate(config: EvaluateConfig) -> None:
    """Required keys, judge xor reward, value ranges; errors name the key."""
    defaults = EvaluateConfig()
    sampled = ("judge", "reward", "max_prompts", "max_new_tokens", "temperature", "top_p", "seed")
    scored = ("tau", "aggregation", "pairs_split")
    checks = [
        ("model", bool(config.model), "required: a causal LM folder or Hub name"),
        ("prompts", bool(config.prompts) or config.pairs is not None, "required: a prompts file or dataset name (or pairs)"),
        ("pairs", not (config.prompts and config.pairs is not None), "give prompts or pairs, not both"),
        ("pairs", config.pairs is None or bool(config.pairs.strip()), "empty; name a pairs file or dataset"),
        ("judge", config.pairs is not None or config.judge is not None or config.reward is not None, "give a judge or a reward"),
        ("judge", config.judge is None or config.reward is None, "give a judge or a reward, not both"),
        *(
            (key, getattr(config, key) == getattr(defaults, key), f"is used only with prompts (sampled); pairs are scored, not sampled: remove {key}")
            for key in (sampled if config.pairs is not None else ())
        ),
        *(
            (key, getattr(config, key) == getattr(defaults, key), f"is used only with pairs; set pairs, or remove {key}")
            for key in (scored if config.pairs is None else ())
        ),
        ("tau", config.tau is None or is_usable_tau(config.tau), f"{TAU_REQUIREMENT}, or null"),
        split_is_given("prompts_split", config.prompts_split, defaults.prompts_split),
        split_is_given("pairs_split", config.pairs_split, defaults.pairs_split),
        *(
            ("out", not lies_in_folder(config.out, folder), f"{config.out} lies in the folder of {key} ({folder}); write the evaluation elsewhere")
            for key, folder in (("model", config.model), ("baseline", config.baseline))
        ),
        ("max_new_tokens", config.max_new_tokens >= 1, "must be >= 1"),
        ("batch_size", config.batch_size >= 1, "must be >= 1"),
        ("max_prompts", config.max_prompts is None or config.max_prompts >= 1, "must be >= 1 or null"),
        ("max_prompt_length", config.max_prompt_length >= 1, "must be >= 1"),
        ("temperature", 0 <= config.temperature < math.inf, "must be a finite number >= 0"),
        ("top_p", 0 < config.top_p <= 1, "must be in (0, 1]"),
        ("seed", 0 <= config.seed <= MAX_SEED, f"must be an integer in [0, {MAX_SEED}] (2**32 − 1), as for training"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise PsipoInputError(f"key '{key}': {why}")


def load_evaluate_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> EvaluateConfig:
    """An :class:`EvaluateConfig` from a YAML file and/or ``key → value`` overrides, checked."""
    return load_config(EvaluateConfig, path, overrides, check=validate)


# ---------------------------------------------------------------------------------------
# Inputs


def default_baseline(model: str) -> str:
    """The reference of the psipo run whose ``final/`` folder is ``model``: its config.yaml's
    ``reference_model``, else its ``model``. Anything else is an error asking for ``baseline``."""
    from psipo.lm.run_folder import config_beside_final, run_folder_mistaken_for_model

    found = config_beside_final(model)
    if found is None:
        raise run_folder_mistaken_for_model("model", model) or PsipoInputError(
            f"baseline: required ({model} is not a psipo run's final/ folder with a config.yaml beside it)"
        )
    run_config, data = found
    reference = data.get("reference_model") or data.get("model")
    if not isinstance(reference, str) or not reference:
        raise PsipoInputError(f"baseline: {run_config} names no model; set baseline")
    if reference.startswith(".") and not Path(reference).expanduser().is_dir():
        raise PsipoInputError(
            f"baseline: {run_config} names {reference!r}, a path relative to the folder that run was started "
            "from, and it is not there from here; run from that folder or set baseline"
        )
    return reference


def read_prompts(
    source: str, *, key: str = "prompts", split: str, dataset_config: str | None, max_prompts: int | None
) -> tuple[list[Any], list[str]]:
    """The prompts (strings or message lists) of a file or dataset with a ``prompt`` field, or of
    preference pairs with an implicit prompt (``chosen`` and ``rejected`` only: their shared
    start, as psipo train reads it), and where each came from (file:line); at most
    ``max_prompts`` of them."""
    from psipo.lm.data import UnreadableRow, _check_messages, missing_field, parse_row, read_rows

    prompts, locations = [], []
    for where, row in read_rows(source, key=key, split=split, dataset_config=dataset_config):
        if max_prompts is not None and len(prompts) >= max_prompts:
            break
        if isinstance(row, UnreadableRow):
            raise row.error
        if not isinstance(row, dict):
            raise PsipoInputError(f"{where}: expected an object with a 'prompt' field, got {type(row).__name__}")
        if "prompt" not in row and "chosen" in row and "rejected" in row:
            row = {"prompt": parse_row(row, where).prompt}
        if "prompt" not in row:
            raise missing_field(where, "prompt", row)
        prompt = row["prompt"]
        if not isinstance(prompt, (str, list)):
            raise PsipoInputError(f"{where}: field 'prompt': expected a string or a list of messages, got {type(prompt).__name__}")
        if isinstance(prompt, list):
            prompt = _check_messages(prompt, where, "prompt")
        prompts.append(prompt)
        locations.append(where)
    if not prompts:
        raise PsipoInputError(f"{key}: no prompts in {source}")
    return prompts, locations


def tokenize_prompts(tokenizer: Any, prompts: list[Any], locations: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of each prompt as training tokenises them: a string with the tokenizer's
    special tokens, a message list through the chat template with the generation prompt; a
    prompt longer than ``max_length`` keeps its end. Also how many prompts were cut."""
    from psipo.lm.data import render_chat

    out, n_truncated = [], 0
    for prompt, where in zip(prompts, locations):
        if isinstance(prompt, list):
            text = render_chat(tokenizer, prompt, where, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not ids:
            raise PsipoInputError(f"{where}: field 'prompt': no tokens (a causal LM needs at least one)")
        n_truncated += len(ids) > max_length
        out.append(list(ids[max(0, len(ids) - max_length) :]))
    return out, n_truncated


# ---------------------------------------------------------------------------------------
# Evaluation


def _figure(values: list[float], *, bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, float | None]:
    """Mean, 95% t-interval half-width and bounds of per-prompt values; the bounds are clipped
    to the range the quantity can take (a win rate: [0, 1]). One value has no interval: its
    half-width and bounds are None (null in the JSON), not NaN."""
    from psipo.stats import interval

    mean, half = interval(values)  # type: ignore[misc]
    if math.isnan(half):
        return {"mean": mean, "half_width": None, "low": None, "high": None}
    return {"mean": mean, "half_width": half, "low": max(mean - half, bounds[0]), "high": min(mean + half, bounds[1])}


def sample_both(
    model: Any,
    baseline: Any,
    prompt_ids: list[list[int]],
    pad_id: int,
    *,
    seed: int,
    batch_size: int,
    progress: bool,
    **options: Any,
) -> dict:
    """Sample every prompt from both models, batch by batch, with progress on stderr (a bar on a
    terminal, plain lines off one: :class:`psipo._progress.Progress`); ``options``
    are :func:`psipo.lm.sample`'s (``max_new_tokens``, ``temperature``, ``top_p``). ``kl``
    holds log π(y)/π_base(y) of the model's samples y ~ q, ``log_weights`` log π(y)/q(y)."""
    import torch

    from psipo._progress import Progress
    from psipo.lm.sampling import sample

    streams = {
        name: torch.Generator().manual_seed(2 * seed + stream)
        for name, stream in (("model", MODEL_STREAM), ("baseline", BASELINE_STREAM))
    }
    keys = ("model_ids", "baseline_ids", "kl", "log_weights", "model_cut", "baseline_cut")
    out: dict[str, list] = {k: [] for k in keys}
    starts = range(0, len(prompt_ids), batch_size)
    with Progress(len(starts), label="psipo evaluate", unit="batch", enabled=progress, leave=False) as shown:
        for start in starts:
            batch = prompt_ids[start : start + batch_size]
            ours = sample(
                model, batch, seed=streams["model"], reference=baseline, pad_token_id=pad_id, reference_key="baseline", **options
            )
            theirs = sample(baseline, batch, seed=streams["baseline"], pad_token_id=pad_id, **options)
            out["model_ids"] += ours.responses()
            out["baseline_ids"] += theirs.responses()
            out["kl"] += (ours.logps.sum(1) - ours.reference_logps.sum(1)).double().tolist()  # type: ignore[union-attr]
            # log π(y)/q(y) of the model's samples: 0 unless temperature or top_p warp q away from π
            out["log_weights"] += (ours.logps.sum(1) - ours.sampling_logps.sum(1)).double().tolist()
            out["model_cut"] += (~ours.finished).tolist()
            out["baseline_cut"] += (~theirs.finished).tolist()
            shown.update()
    return out


def as_responses(tokenizer: Any, prompts: list[Any], ids: list[list[int]]) -> list[Any]:
    """Decoded responses; an assistant message for a conversational prompt. Without a
    tokenizer, the token ids themselves (for judges of token-level worlds).

    A plain-text response keeps its whitespace: it continues the prompt, and a reward model
    tokenises it on its own after the prompt as training tokenised a completion, so a
    byte-level BPE response ' blue' must stay ' blue' (one token), not become 'blue' (others).
    A message's content is stripped: the chat template writes what separates it."""
    if tokenizer is None:
        return [list(r) for r in ids]
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in ids]
    return [[{"role": "assistant", "content": t.strip()}] if isinstance(p, list) else t for p, t in zip(prompts, texts)]


def scores(judge: Any, prompts: list[Any], ours: list[Any], theirs: list[Any], *, by_reward: bool) -> dict:
    """Per-prompt wins (by the reward when ``by_reward``, else the judge's P(ours ≻ theirs))
    and, when the judge has rewards, the rewards of each side."""
    from psipo.lm.judges import asked_probabilities, checked_rewards, judge_label

    rewards = None
    if by_reward or hasattr(judge, "reward"):
        # checked: a judge object given from Python (psipo.lm.train_online) need not check itself
        who = judge_label(judge, "reward" if by_reward else "judge")
        rewards = tuple(checked_rewards(judge.reward(prompts, side), len(prompts), who).tolist() for side in (ours, theirs))
    if by_reward:
        assert rewards is not None
        wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(*rewards)]
        method = "1[r_model > r_baseline] + 1/2 * 1[tie], per prompt"
    else:
        wins = asked_probabilities(judge, prompts, ours, theirs).tolist()
        method = "judge's P(model > baseline), per prompt"
    return {"wins": wins, "method": method, "rewards": rewards}


def _lengths(ids: list[list[int]], cut: list[bool]) -> dict[str, float]:
    return {"mean": sum(map(len, ids)) / len(ids), "cut_at_max_new_tokens": sum(cut) / len(cut)}


def _check_room_for_responses(model: Any, baseline: Any, prompt_ids: list[list[int]], max_new_tokens: int) -> None:
    """Refuse, before any sampling, responses that would run past a model's positions: a huge
    ``max_new_tokens`` failed mid-sampling (a traceback, or an allocation of gigabytes)."""
    longest = max(map(len, prompt_ids), default=0)
    for name, lm in (("model", model), ("baseline", baseline)):
        limit = getattr(getattr(lm, "config", None), "max_position_embeddings", None)
        if isinstance(limit, int) and longest + max_new_tokens > limit:
            raise PsipoInputError(
                f"max_new_tokens: {max_new_tokens} tokens after a prompt of {longest} exceed the {name}'s "
                f"max_position_embeddings {limit}; lower max_new_tokens (or max_prompt_length)"
            )


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Run the evaluation of ``config``, write ``out/evaluation.json`` and ``out/evaluation.md``,
    and return the results (the JSON's content)."""
    import torch

    from psipo._io import atomic_write_json, atomic_write_text, check_output_folder
    from psipo._json import to_json_data
    from psipo.lm.config import ModelConfig
    from psipo.lm.judges import make_judge, make_reward
    from psipo.lm.model import (
        load_causal_lm,
        load_companion_lm,
        load_tokenizer,
        pad_id_of,
        quiet_transformers,
    )

    validate(config)
    if config.pairs is not None:
        from psipo.lm.evaluate_pairs import evaluate_pairs

        return evaluate_pairs(config)
    check_output_folder(config.out, "out", ("evaluation.json", "evaluation.md"))  # before any sampling: a bad out fails now, not at the end
    baseline_name = config.baseline if config.baseline is not None else default_baseline(config.model)
    judge = make_reward(config.reward, key="reward") if config.reward is not None else make_judge(config.judge)  # type: ignore[arg-type]
    prompts, locations = read_prompts(
        config.prompts, split=config.prompts_split, dataset_config=config.dataset_config, max_prompts=config.max_prompts
    )

    quiet_transformers()
    model_config = ModelConfig(
        model=config.model, tokenizer=config.tokenizer, dtype=config.dtype, trust_remote_code=config.trust_remote_code
    )
    tokenizer = load_tokenizer(model_config)
    prompt_ids, n_truncated = tokenize_prompts(tokenizer, prompts, locations, config.max_prompt_length)
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else "cpu")
    model = load_causal_lm(config.model, model_config, key="model").to(device)
    if baseline_name == config.model:
        baseline = model
    else:
        # before any sampling
        baseline = load_companion_lm(baseline_name, model_config, tokenizer=tokenizer, policy=model, key="baseline").to(device)
    _check_room_for_responses(model, baseline, prompt_ids, config.max_new_tokens)

    drawn = sample_both(
        model,
        baseline,
        prompt_ids,
        pad_id_of(tokenizer),
        seed=config.seed,
        batch_size=config.batch_size,
        progress=config.progress,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
    )
    ours = as_responses(tokenizer, prompts, drawn["model_ids"])
    theirs = as_responses(tokenizer, prompts, drawn["baseline_ids"])
    judged = scores(judge, prompts, ours, theirs, by_reward=config.reward is not None)

    exact_sampling = config.temperature == 1 and config.top_p == 1
    kl: dict[str, Any] = {"mean": None, "half_width": None, "low": None, "high": None}
    if exact_sampling:
        kl.update(_figure(drawn["kl"]))
        kl["note"] = (
            "Monte Carlo estimate over the model's samples (temperature 1, top_p 1): unbiased, exact in "
            "expectation; single terms can be negative. Responses cut at max_new_tokens."
        )
    else:
        kl["note"] = (
            f"omitted: samples drawn at temperature {config.temperature:g}, top_p {config.top_p:g} do not come "
            "from the model itself; set temperature 1 and top_p 1 for the KL estimate"
        )
    results: dict[str, Any] = {
        "model": config.model,
        "baseline": baseline_name,
        "prompts": config.prompts,
        "n_prompts": len(prompts),
        "n_prompts_truncated": n_truncated,
        "judge": config.judge,
        "reward": config.reward,
        "settings": {k: getattr(config, k) for k in ("max_new_tokens", "temperature", "top_p", "seed", "batch_size")},
        "win_rate": {**_figure(judged["wins"], bounds=(0.0, 1.0)), "method": judged["method"]},
        "reward_model": _figure(judged["rewards"][0]) if judged["rewards"] else None,
        "reward_baseline": _figure(judged["rewards"][1]) if judged["rewards"] else None,
        "kl": kl,
        "length": {
            "model": _lengths(drawn["model_ids"], drawn["model_cut"]),
            "baseline": _lengths(drawn["baseline_ids"], drawn["baseline_cut"]),
        },
        "examples": [
            {"prompt": p, "model": a, "baseline": b, "win": w}
            for p, a, b, w in list(zip(prompts, ours, theirs, judged["wins"]))[:3]
        ],
    }
    out = Path(config.out)
    atomic_write_json(out / "evaluation.json", to_json_data(results))
    atomic_write_text(out / "evaluation.md", summary_markdown(results))
    return results


# ---------------------------------------------------------------------------------------
# Reporting


def _ci(figure: Mapping[str, Any] | None, digits: int = 3, *, unit: str = "prompt") -> str:
    """``mean ± half-width`` of a :func:`_figure`; one ``unit`` (a prompt, a pair) gives no interval."""
    if not figure or figure.get("mean") is None:
        return "—"
    if figure.get("half_width") is None:
        return f"{figure['mean']:.{digits}f} (no interval from one {unit})"
    text = f"{figure['mean']:.{digits}f} ± {figure['half_width']:.{digits}f}"
    clipped = (figure["low"], figure["high"]) != (figure["mean"] - figure["half_width"], figure["mean"] + figure["half_width"])
    return text + f" [{figure['low']:.{digits}f}, {figure['high']:.{digits}f}]" if clipped else text


def summary_line(results: Mapping[str, Any]) -> str:
    """One line: the win rate and the KL (with pairs: the accuracy and h)."""
    if results.get("mode") == "pairs":
        from psipo.lm.evaluate_pairs import pairs_summary_line

        return pairs_summary_line(results)
    kl = _ci(results["kl"]) if results["kl"]["mean"] is not None else "omitted (temperature/top_p not 1)"
    return (
        f"win rate {_ci(results['win_rate'])} (95% CI) of {results['model']} over {results['baseline']} "
        f"on {results['n_prompts']} prompts; KL {kl}"
    )


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The short Markdown summary of ``evaluation.md``."""
    lengths = results["length"]
    rows = [
        ("win rate of the model over the baseline", _ci(results["win_rate"])),
        ("mean reward, model", _ci(results["reward_model"])),
        ("mean reward, baseline", _ci(results["reward_baseline"])),
        ("KL(model ‖ baseline), nats", _ci(results["kl"])),
        ("mean response length, model (tokens)", f"{lengths['model']['mean']:.2f}"),
        ("mean response length, baseline (tokens)", f"{lengths['baseline']['mean']:.2f}"),
        ("cut at max_new_tokens, model", f"{lengths['model']['cut_at_max_new_tokens']:.3f}"),
        ("cut at max_new_tokens, baseline", f"{lengths['baseline']['cut_at_max_new_tokens']:.3f}"),
    ]
    settings = ", ".join(f"{k} {v}" for k, v in results["settings"].items())
    judged = f"judge `{results['judge']}`" if results["judge"] else f"reward `{results['reward']}`"
    return markdown_report(
        "Evaluation",
        f"Model `{results['model']}` against baseline `{results['baseline']}` on {results['n_prompts']} prompts "
        f"of `{results['prompts']}`, {judged}; {settings}.",
        rows,
        f"Win rate: {results['win_rate']['method']}. KL: {results['kl']['note']}",
    )


def markdown_report(title: str, intro: str, rows: list[tuple[str, str]], note: str | None = None) -> str:
    """``evaluation.md``: a title, a sentence on what was compared, the table of figures, a note."""
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "| figure | value (± 95% CI half-width) |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        *([note, ""] if note else []),
    ]
    return "\n".join(lines)
