"""The model card (``README.md``) that every ``final/`` folder carries.

A Hugging Face model folder is read with its card: the Hub shows it and indexes its YAML header
(``library_name``, ``base_model``, ``datasets``, ``pipeline_tag``, ``tags``), and a reader of a
folder found on a disk learns from it what the weights are. psipo's card says what was trained
from what and how (the command, the algorithm or loss with τ and its paper), the last logged
metrics, how to load the folder, the whole config as run, the library versions and the citation.

The header names only Hub repositories: the Hub refuses a ``base_model`` that is no repository
id, so a local model folder or data file is named in the text instead. With LoRA the card
replaces the blank template ``peft`` writes beside the adapter.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

AZAR_2023 = """\
@article{azar2023general,
  title   = {A General Theoretical Paradigm to Understand Learning from Human Preferences},
  author  = {Azar, Mohammad Gheshlaghi and Rowland, Mark and Piot, Bilal and Guo, Daniel and
             Calandriello, Daniele and Valko, Michal and Munos, R{\\'e}mi},
  journal = {arXiv preprint arXiv:2310.12036},
  year    = {2023}
}"""
"""The paper psipo implements: every card cites it."""

NOT_RESULTS = (
    "step", "epoch", "lr", "grad_norm", "tokens_per_second", "peak_memory_mb", "generation_fraction", "ipo_target"
)  # fmt: skip
"""Record keys that describe the run rather than the model: left out of the card's results
(``metrics.jsonl`` keeps them)."""

ALGORITHMS = {
    "online_ipo": "online IPO (Calandriello et al., 2024): pairs y, y′ ~ π labelled by the judge, the {loss} loss",
    "ipo_md": (
        "IPO-MD (Calandriello et al., 2024): pairs from the geometric mixture π^(1−β)·π_ref^β, β = {mixture:g}, "
        "labelled by the judge, the {loss} loss"
    ),
    "online_dpo": "online DPO: pairs y, y′ ~ π labelled by the judge, the {loss} loss",
    "rloo": "RLOO, the RLHF objective of Eq. 3: {k} samples per prompt, reward − τ·log π/π_ref, leave-one-out baseline",
}
"""What each ``psipo online`` algorithm did, in a sentence."""

REFERENCES = {
    "precompute": "the initial model, its log-probs computed once before training",
    "live": "{model}, frozen, run beside the policy",
    "adapters_disabled": "the base model (the LoRA model with its adapters off)",
}
"""Where ``psipo train``'s π_ref came from (``reference``)."""

AGGREGATIONS = {"sum": "summed", "mean": "per-token mean"}
"""How the card says which sequence log-prob (``aggregation``) the loss saw."""


def code_span(text: str) -> str:
    """``text`` as a Markdown code span that shows it as it is (CommonMark, Code spans): fenced
    by one backtick more than its longest run of backticks, so a model or folder name holding
    backticks cannot close the span early; padded by a space each side where it begins or ends
    with a backtick (or with a space at both ends), as renderers strip one space from each."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == text[-1:] == " " and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


MARKDOWN_MARKUP = "\\`*_[]<&#~$|"
"""The ASCII punctuation that can act as markup inside a line of Markdown: code spans, emphasis,
links and images, HTML and autolinks, entities, a heading's closing #s, and the strikethrough,
table cells and math of renderers beyond CommonMark (GitHub Flavored Markdown, the Hub's)."""


def markdown_text(text: str) -> str:
    """``text`` as Markdown inline content that shows it as it is (a run folder's name in the
    card's heading): each :data:`MARKDOWN_MARKUP` character backslash-escaped (CommonMark,
    Backslash escapes); line breaks (which would end the heading) and whitespace at either end
    (which a heading strips) as character references."""
    escaped = re.sub(f"[{re.escape(MARKDOWN_MARKUP)}]", lambda m: "\\" + m[0], text)
    return re.sub(r"^\s+|\s+$|[\r\n]", lambda m: "".join(f"&#{ord(c)};" for c in m[0]), escaped)


def hub_name(name: str | None) -> str | None:
    """``name`` when it can only be a Hugging Face Hub repository (no such local path, a valid
    repository id, no data-file suffix); else None."""
    from huggingface_hub.utils import validate_repo_id

    if not name or os.path.exists(os.path.expanduser(name)) or name.endswith((".json", ".jsonl", ".parquet")):
        return None
    try:
        validate_repo_id(name)
    except ValueError:
        return None
    return name


def model_card(
    config: Any,
    *,
    command: str,
    history: Sequence[Mapping[str, Any]],
    folder: str | os.PathLike,
    processes: int = 1,
    held_out: str = "",
) -> str:
    """The ``README.md`` of ``folder``, the ``final/`` model of a ``command`` run ("psipo train",
    "psipo online" or "psipo reward") of ``config`` on ``processes`` processes, whose metrics
    records are ``history``. ``held_out`` says what the held-out figures are of, as the run's
    progress line does ("8 held-out pairs (3 cut to max_length / max_prompt_length)")."""
    from psipo._config import to_dict

    reward_model = hasattr(config, "reward_objective")
    model = config.model_config.model or None  # a model object given from Python has no name
    lora = config.model_config.lora_r > 0
    data = getattr(config.data_config, "prompts", None) or getattr(config.data_config, "train_data", None)
    header = {
        "library_name": "peft" if lora else "transformers",
        **({"base_model": hub_name(model)} if hub_name(model) else {}),
        **({"datasets": [hub_name(data)]} if hub_name(data) else {}),
        "pipeline_tag": "text-classification" if reward_model else "text-generation",
        "tags": ["psipo", *_method_tags(config), *(["lora"] if lora else [])],
    }
    run_name = Path(os.path.abspath(folder)).parent.name or "psipo model"
    parts = [
        "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---",
        f"# {markdown_text(run_name)}",
        _summary(config, model, data),
        _training(config, command, history, processes),
        _results(history, held_out),
        _usage(folder, reward_model=reward_model, lora=lora),
        "## Config\n\nThe run's `config.yaml`, every key as it ran:\n\n```yaml\n"
        + yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)
        + "```",
        _versions(lora),
        f"## Citation\n\n```bibtex\n{AZAR_2023}\n```",
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _method_tags(config: Any) -> list[str]:
    if hasattr(config, "reward_objective"):
        return ["reward-model", "bradley-terry"]
    if hasattr(config, "online"):
        algorithm = config.online.algorithm
        tags = [algorithm.replace("_", "-")]
        return tags if algorithm == "rloo" else [*tags, config.loss.replace("_", "-")]
    return ["preference-optimization", config.loss.replace("_", "-")]


def _summary(config: Any, model: str | None, data: str | None) -> str:
    from psipo.losses import LOSSES

    base = code_span(model) if model else "A model given from Python"  # begins its sentence
    source = code_span(data) if data else "data given from Python"
    if hasattr(config, "reward_objective"):
        return (
            f"A Bradley–Terry reward model (Azar et al., 2023, Eq. 2) fine-tuned from {base[0].lower() + base[1:]} on the "
            f"preference pairs of {source}: one output r(x, y) per prompt x and response y, with "
            "P(y ≻ y′ | x) = σ(r(x, y) − r(x, y′))."
        )
    tau = config.objective.tau
    if hasattr(config, "online"):
        online = config.online
        what = ALGORITHMS[online.algorithm].format(
            mixture=online.mixture, loss=LOSSES[config.loss].label, k=config.generation.num_generations
        )
        name = online.reward if online.algorithm == "rloo" else online.judge
        named = code_span(name) if name is not None else "given from Python"  # train_online(judge=...)
        scorer = f"reward {named}" if online.algorithm == "rloo" else f"judge {named} ({online.labels} labels)"
        return (
            f"{base} trained on its own samples for the prompts of {source} with {what}; {scorer}, "
            f"τ = {tau:g}, against π_ref = {code_span(online.reference_model) if online.reference_model else 'the initial model'}."
        )
    label = LOSSES[config.loss].label
    target = f" IPO regresses h onto 1/(2τ) = {1 / (2 * tau):g} (Eq. 17)." if config.loss == "ipo" else ""
    return (
        f"{base} fine-tuned on the preference pairs of {source} with the {label} loss (`loss: {config.loss}`) of "
        f"ΨPO (Azar et al., 2023), τ = {tau:g}, on {AGGREGATIONS[config.aggregation]} completion log-probs.{target}"
    )


def _training(config: Any, command: str, history: Sequence[Mapping[str, Any]], processes: int) -> str:
    opt, model_config = config.optim, config.model_config
    last = history[-1] if history else {}
    epochs = f" ({last['epoch']:.3g} epoch{'' if last['epoch'] == 1 else 's'})" if _number(last.get("epoch")) else ""
    unit = "prompts" if hasattr(config, "online") else "pairs"
    accumulated = opt.gradient_accumulation_steps
    batch = f"- Batch: {opt.batch_size * accumulated * processes} {unit} a step"
    if accumulated > 1 or processes > 1:
        passes = f"{accumulated} forward pass{'es' if accumulated > 1 else ''} a step"
        where = f", on each of {processes} processes" if processes > 1 else ""
        batch += f" ({opt.batch_size} a forward pass, {passes}{where})"
    lines = [f"- Command: `{command}` (psipo {_version('psipo')})", f"- Steps: {last.get('step', 'none logged')}{epochs}", batch]
    if hasattr(config, "generation"):
        g = config.generation
        lines.append(
            f"- Sampling: {g.num_generations} responses a prompt, at most {g.max_new_tokens} new tokens, "
            f"temperature {g.temperature:g}, top-p {g.top_p:g}"
        )
    elif hasattr(config, "reference_config"):
        reference = config.reference_config
        lines.append(f"- π_ref: {REFERENCES[reference.reference].format(model=code_span(reference.reference_model or model_config.model))}")
    lora = f"; LoRA r = {model_config.lora_r}, α = {model_config.lora_alpha:g}" if model_config.lora_r > 0 else ""
    lines += [
        f"- Learning rate: {opt.learning_rate:g}, {opt.lr_scheduler} schedule, warm-up ratio {opt.warmup_ratio:g}",
        f"- Precision: {model_config.dtype}{lora}",
        f"- Seed: {config.run.seed}",
    ]
    return "## Training\n\n" + "\n".join(lines)


def _results(history: Sequence[Mapping[str, Any]], held_out: str) -> str:
    """The last record's metrics, training beside held-out (the last record that has them), and
    what the held-out column is of."""
    if not history:
        return ""
    last = history[-1]
    evaluated = next((r for r in reversed(history) if any(k.startswith("eval_") for k in r)), {})
    names = [k for k in last if k not in NOT_RESULTS and not k.startswith("eval_") and _number(last[k])]
    names += [k[5:] for k in evaluated if k.startswith("eval_") and _number(evaluated[k]) and k[5:] not in names]
    if not names:
        return ""
    rows = [f"| {name} | {_cell(last.get(name))} | {_cell(evaluated.get('eval_' + name))} |" for name in names]
    column = f"held-out (step {evaluated['step']})" if evaluated else "held-out"
    of = f"\n\nThe held-out column is of {held_out}." if evaluated and held_out else ""
    return (
        f"## Results\n\nThe last metrics record, step {last.get('step')} (training columns average the steps "
        "since the record before; every record is in the run's `metrics.jsonl`):\n\n"
        f"| metric | training | {column} |\n|---|---:|---:|\n" + "\n".join(rows) + of
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if not _number(value):
        return ""
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _usage(folder: str | os.PathLike, *, reward_model: bool, lora: bool) -> str:
    from shlex import quote

    path = str(folder)
    arg = quote(path)  # the shell commands below copy as they are: a folder with a space is one word
    head = "SequenceClassification" if reward_model else "CausalLM"
    if lora:
        imports = f"from peft import AutoPeftModelFor{head}\nfrom transformers import AutoTokenizer"
        auto = f"AutoPeftModelFor{head}"
    else:
        imports, auto = f"from transformers import AutoModelFor{head}, AutoTokenizer", f"AutoModelFor{head}"
    code = f"{imports}\n\nmodel = {auto}.from_pretrained({path!r})\ntokenizer = AutoTokenizer.from_pretrained({path!r})"
    if reward_model:
        code += (
            "\n\n# r(x, y) as psipo reward scored it (EOS after the response, a chat template for message lists):"
            f"\nfrom psipo.lm import RewardModel\n\nrewards = RewardModel.from_pretrained({path!r}).reward(['a prompt'], ['a response'])"
        )
        after = (
            f"As the judge of `psipo online` or `psipo evaluate`: {code_span(f'--judge {arg}')}; on preference pairs: "
            f"{code_span(f'psipo evaluate --model {arg} --pairs PAIRS')}."
        )
    else:
        after = (
            f"Against its base model: {code_span(f'psipo evaluate --model {arg} --judge JUDGE --prompts PROMPTS')} (samples "
            f"judged), or {code_span(f'psipo evaluate --model {arg} --pairs PAIRS')} (h and accuracy on preference pairs)."
        )
    return f"## Use\n\n```python\n{code}\n```\n\n{after}"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _versions(lora: bool) -> str:
    packages = ["psipo", "transformers", "torch", *(["peft"] if lora else [])]
    return "## Framework versions\n\n" + "\n".join(f"- {name} {_version(name)}" for name in packages)
