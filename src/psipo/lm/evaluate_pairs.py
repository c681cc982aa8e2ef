r"""``psipo evaluate --pairs``: a model against its baseline on preference pairs, without sampling.

Each pair (x, y_w, y_l) is scored under the model π and the baseline π_base (by default the
reference of the psipo run whose ``final/`` folder is the model), and its log-ratio gap

.. math::  h(y_w, y_l) = \log\frac{\pi(y_w|x)}{\pi_\mathrm{base}(y_w|x)} - \log\frac{\pi(y_l|x)}{\pi_\mathrm{base}(y_l|x)}

is the quantity the paper's losses act on: IPO regresses it onto 1/(2τ) (Eq. 17), DPO pushes it
up without bound (Eq. 7). The report gives, over the pairs, the **accuracy** 1[h > 0] (the
implicit reward τ·log π/π_base ranks the preferred response first), the mean and spread of
**h** beside IPO's target 1/(2τ), and the mean **IPO loss** (h − 1/(2τ))² and **DPO loss**
−log σ(τh), each mean with a 95% t-interval over pairs.

A **reward model** (a ``psipo reward`` run's ``final/``, or a folder whose ``config.json`` names a
sequence classifier) is scored on its own: the margin r_w − r_l of each pair gives the accuracy
1[r_w > r_l] (a tie counts as wrong), the Bradley–Terry loss −log σ(r_w − r_l) and the
calibration error of σ(r_w − r_l) in both orders (:func:`psipo.lm.reward.pairwise_calibration`)
— what ``psipo reward`` logs on held-out pairs.

The pairs are tokenised as the run trained on its own (its ``max_length``,
``max_prompt_length`` and ``append_eos``, read from the ``config.yaml`` beside ``final/``),
and h uses the run's ``aggregation`` and τ unless the config's ``aggregation``/``tau`` set
them: with another tokenisation or aggregation h would not be the quantity the run learnt.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from psipo.errors import PsipoInputError

TOKENISATION = {"max_length": 512, "max_prompt_length": 256, "append_eos": True}
"""psipo train's tokenisation defaults, used for a model that is no psipo run's ``final/``."""


def run_settings(model: str) -> dict[str, Any]:
    """What the psipo run whose ``final/`` folder is ``model`` trained with: ``reward_model``
    (a ``psipo reward`` run), its tokenisation settings and, for a policy, ``tau`` and
    ``aggregation`` (auto resolved); ``{}`` for any other folder."""
    from psipo._config import load_config
    from psipo.lm.config import TrainConfig
    from psipo.lm.online import OnlineConfig
    from psipo.lm.reward import RewardConfig
    from psipo.lm.run_folder import command_of, config_beside_final

    found = config_beside_final(model)
    if found is None:
        return {}
    path, data = found
    command = command_of(data)
    config_class = {"psipo reward": RewardConfig, "psipo online": OnlineConfig, "psipo train": TrainConfig}[command]
    try:
        config = load_config(config_class, path)
    except PsipoInputError as exc:
        raise PsipoInputError(f"model: the config.yaml beside it cannot be read ({exc})") from None
    d = config.data_config
    if command == "psipo reward":
        return {"reward_model": True, "source": str(path), "max_length": d.max_length,
                "max_prompt_length": d.max_prompt_length, "append_eos": d.append_eos}  # fmt: skip
    settings = {"reward_model": False, "tau": config.objective.tau, "aggregation": config.aggregation, "source": str(path)}
    if command == "psipo online":  # psipo online tokenised prompts only; its responses end at EOS
        settings.update(max_length=config.max_length, max_prompt_length=d.max_prompt_length)
    else:
        settings.update(max_length=d.max_length, max_prompt_length=d.max_prompt_length, append_eos=d.append_eos)
    return settings


def is_reward_model(name: str, run: dict[str, Any]) -> bool:
    """A psipo reward run's final/, or a model whose config.json names a sequence classifier: a
    local folder's, a Hub name's cached snapshot's (offline, or the Hub not answering), or the
    one the Hub serves."""
    from psipo.lm.model import saved_config

    if "reward_model" in run:
        return run["reward_model"]
    folder = Path(name).expanduser()
    if not folder.is_dir():
        from psipo.lm.hub import resolve_hub_name

        folder = Path(resolve_hub_name(name, key="model", what="a model"))
        if not folder.is_dir():  # the Hub answers for it
            from huggingface_hub import hf_hub_download

            try:
                folder = Path(hf_hub_download(name, "config.json")).parent
            except Exception:  # noqa: BLE001 — no such file there: loading it as a policy says why
                return False
    architectures = saved_config(folder).get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def evaluate_pairs(config: Any) -> dict[str, Any]:
    """Score ``config.pairs`` under the model and the baseline (a policy), or under the reward
    model; write ``out/evaluation.json`` and ``out/evaluation.md``; return the results."""
    import torch

    from psipo._io import atomic_write_json, atomic_write_text, check_output_folder
    from psipo._json import to_json_data
    from psipo.lm.config import ModelConfig
    from psipo.lm.data import load_pairs
    from psipo.lm.model import load_tokenizer, quiet_transformers

    check_output_folder(config.out, "out", ("evaluation.json", "evaluation.md"))
    run = run_settings(config.model)
    reward_model = is_reward_model(config.model, run)
    if reward_model:
        from psipo.lm.model import check_architecture

        # the config.yaml beside final/ may say reward run while final/ holds a causal LM: its
        # head would be a fresh, random one, and every figure noise
        check_architecture(config.model, key="model", name=config.model, want="reward model")
        for key in ("baseline", "tau"):
            if getattr(config, key) is not None:
                raise PsipoInputError(f"{key}: {config.model} is a reward model, scored on its own; remove {key}")
        if config.aggregation != "auto":
            raise PsipoInputError(f"aggregation: {config.model} is a reward model, scored on its own; remove aggregation")
    else:  # before anything loads: a model without a run beside it needs one named
        from psipo.lm.evaluate import default_baseline

        run["baseline"] = config.baseline if config.baseline is not None else default_baseline(config.model)
    tokenisation = {key: run.get(key, default) for key, default in TOKENISATION.items()}

    quiet_transformers()
    model_config = ModelConfig(
        model=config.model, tokenizer=config.tokenizer, dtype=config.dtype, trust_remote_code=config.trust_remote_code
    )
    tokenizer = load_tokenizer(model_config)
    data = load_pairs(
        config.pairs, tokenizer, key="pairs", split=config.pairs_split, dataset_config=config.dataset_config,
        skip_invalid=False, cache_dir=None, **tokenisation,
    )  # fmt: skip
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {
        "mode": "pairs",
        "model": config.model,
        "pairs": config.pairs,
        "n_pairs": len(data.pairs),
        "data": data.summary(),
        "settings_from": run.get("source"),
        "tokenisation": tokenisation,
    }
    score = _reward_model_figures if reward_model else _policy_figures
    results.update(score(config, run, model_config, tokenizer, data.pairs, device))
    out = Path(config.out)
    atomic_write_json(out / "evaluation.json", to_json_data(results))
    atomic_write_text(out / "evaluation.md", pairs_markdown(results))
    return results


def _policy_figures(config: Any, run: dict[str, Any], model_config: Any, tokenizer: Any, pairs: list, device: Any) -> dict[str, Any]:
    """h of each pair under the model against the baseline (``run["baseline"]``), and its figures."""
    from psipo.lm.evaluate import _figure
    from psipo.lm.logprobs import supports_shared_prompt
    from psipo.lm.model import load_causal_lm, load_companion_lm, pad_id_of
    from psipo.lm.reference import PairScorer

    baseline_name = run["baseline"]
    tau = config.tau if config.tau is not None else run.get("tau")
    aggregation = config.aggregation if config.aggregation != "auto" else run.get("aggregation", "sum")
    model = load_causal_lm(config.model, model_config, key="model").to(device)
    same = baseline_name == config.model
    baseline = model if same else load_companion_lm(
        baseline_name, model_config, tokenizer=tokenizer, policy=model, key="baseline"
    ).to(device)  # fmt: skip
    passes = 1 if same else 2
    with _progress(config, len(pairs), passes) as shown:
        scorer = PairScorer(
            aggregation=aggregation, batch_size=config.batch_size, chunk_size=256, pad_id=pad_id_of(tokenizer),
            device=device, shared_prompt=supports_shared_prompt(model) and supports_shared_prompt(baseline),
            on_batch=shown.update,
        )  # fmt: skip
        model_chosen, model_rejected = scorer(model, pairs)
        base_chosen, base_rejected = (model_chosen, model_rejected) if same else scorer(baseline, pairs)
    h = ((model_chosen.double() - base_chosen.double()) - (model_rejected.double() - base_rejected.double())).tolist()
    return {
        "kind": "policy",
        "baseline": baseline_name,
        "aggregation": aggregation,
        "tau": tau,
        "accuracy": _figure([float(v > 0) for v in h], bounds=(0.0, 1.0)),
        "h": {**_figure(h), "std": _std(h)},
        "ipo_target": None if tau is None else 1 / (2 * tau),
        "ipo_loss": None if tau is None else _figure([(v - 1 / (2 * tau)) ** 2 for v in h], bounds=(0.0, math.inf)),
        "dpo_loss": None if tau is None else _figure([_softplus(-tau * v) for v in h], bounds=(0.0, math.inf)),
    }


def _reward_model_figures(config: Any, run: dict[str, Any], model_config: Any, tokenizer: Any, pairs: list, device: Any) -> dict[str, Any]:
    """The reward margin r_w − r_l of each pair, and the figures psipo reward logs on held-out pairs."""
    from psipo.lm.evaluate import _figure
    from psipo.lm.judges import ensure_pad_token
    from psipo.lm.model import pad_id_of
    from psipo.lm.reward import (
        check_one_output,
        load_reward_model,
        pair_rewards,
        pairwise_calibration,
    )

    model = load_reward_model(config.model, model_config, key="model").to(device)
    check_one_output(model)
    pad_id = ensure_pad_token(model, pad_id_of(tokenizer))
    with _progress(config, len(pairs), 1) as shown:
        r_chosen, r_rejected = pair_rewards(
            model, pairs, pad_id=pad_id, batch_size=config.batch_size, device=device, on_batch=shown.update
        )
    margin = (r_chosen.double() - r_rejected.double()).tolist()
    ece, reliability = pairwise_calibration(r_chosen, r_rejected)
    return {
        "kind": "reward model",
        "accuracy": _figure([float(m > 0) for m in margin], bounds=(0.0, 1.0)),
        "margin": _figure(margin),
        "loss": _figure([_softplus(-m) for m in margin], bounds=(0.0, math.inf)),
        "reward_chosen": r_chosen.double().mean().item(),
        "reward_rejected": r_rejected.double().mean().item(),
        "ece": ece,
        "reliability": reliability,
    }


def _progress(config: Any, n_pairs: int, passes: int) -> Any:
    """Batches scored, on stderr (``progress``): a bar on a terminal, plain lines off one."""
    from psipo._progress import Progress

    batches = -(-n_pairs // config.batch_size) * passes
    return Progress(batches, label="psipo evaluate", unit="batch", enabled=config.progress, leave=False)


def _std(values: list[float]) -> float:
    """The spread of h over the pairs (÷ n, as psipo train's ``h_std``)."""
    from statistics import pstdev

    return pstdev(values)


def _softplus(x: float) -> float:
    """log(1 + eˣ) without overflow: −log σ(τh) = softplus(−τh)."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _pairs(results: dict[str, Any]) -> str:
    return f"{results['n_pairs']} pair{'' if results['n_pairs'] == 1 else 's'}"


def pairs_summary_line(results: dict[str, Any]) -> str:
    from psipo.lm.evaluate import _ci

    pairs = _pairs(results)
    if results["kind"] == "reward model":
        return (
            f"accuracy {_ci(results['accuracy'], unit='pair')} (95% CI) of reward model {results['model']} on {pairs}; "
            f"margin {_ci(results['margin'], unit='pair')}, ECE {results['ece']:.3f}"
        )
    target = f" (IPO target {results['ipo_target']:.4g})" if results["ipo_target"] is not None else ""
    return (
        f"accuracy {_ci(results['accuracy'], unit='pair')} (95% CI) of {results['model']} over {results['baseline']} on "
        f"{pairs}; h {_ci(results['h'], unit='pair')}{target}"
    )


def pairs_markdown(results: dict[str, Any]) -> str:
    """The short Markdown summary of ``evaluation.md`` for pairs."""
    from psipo.lm.evaluate import _ci, markdown_report

    where = f" (from {results['settings_from']})" if results["settings_from"] else ""
    if results["kind"] == "reward model":
        return markdown_report(
            "Evaluation of a reward model on preference pairs",
            f"Reward model `{results['model']}` on {_pairs(results)} of `{results['pairs']}` "
            f"({results['data']}), tokenised as psipo reward does{where}; P(chosen ≻ rejected) = σ(r_w − r_l).",
            [
                ("accuracy 1[r_w > r_l] (a tie counts as wrong)", _ci(results["accuracy"], unit="pair")),
                ("margin r_w − r_l", _ci(results["margin"], unit="pair")),
                ("Bradley–Terry loss −log σ(r_w − r_l)", _ci(results["loss"], unit="pair")),
                ("mean reward, chosen / rejected", f"{results['reward_chosen']:.3f} / {results['reward_rejected']:.3f}"),
                ("expected calibration error of σ(r_w − r_l), both orders", f"{results['ece']:.3f}"),
            ],
        )
    tau = results["tau"]
    rows = [
        ("accuracy 1[h > 0]", _ci(results["accuracy"], unit="pair")),
        ("log-ratio gap h", _ci(results["h"], unit="pair")),
        ("standard deviation of h over the pairs", f"{results['h']['std']:.3f}"),
        ("IPO target 1/(2τ)", "—" if tau is None else f"{results['ipo_target']:.4g}"),
        ("IPO loss (h − 1/(2τ))²", _ci(results["ipo_loss"], unit="pair")),
        ("DPO loss −log σ(τh)", _ci(results["dpo_loss"], unit="pair")),
    ]
    return markdown_report(
        "Evaluation on preference pairs",
        f"Model `{results['model']}` against baseline `{results['baseline']}` on {_pairs(results)} of "
        f"`{results['pairs']}` ({results['data']}); h = log π/π_base(chosen) − log π/π_base(rejected), "
        f"{results['aggregation']} over completion tokens; τ = {'none given' if tau is None else f'{tau:g}'}{where}.",
        rows,
    )
