"""Load the policy (and a live reference) model and the tokenizer, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from psipo.errors import PsipoInputError, first_line
from psipo.lm.config import ModelConfig
from psipo.lm.fixtures import quickstart_hint
from psipo.lm.hub import resolve_hub_name


def quiet_transformers() -> None:
    """No per-file progress bars from from_pretrained / save_pretrained beside psipo's own line."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
"""Files one of which a folder's tokenizer is built from (tokenizer_config.json alone is not enough)."""


def _load_error(key: str, name: str, what: str, exc: BaseException) -> PsipoInputError:
    """A missing local folder says so, a folder without a tokenizer too; anything else keeps
    transformers' first line."""
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    folder = Path(os.path.expanduser(name))
    if looks_local and not folder.exists():
        return PsipoInputError(
            f"{key}: cannot load {name!r}: no such local folder{quickstart_hint(name)}"
        )
    from psipo.lm.run_folder import run_folder_mistaken_for_model

    mistaken = run_folder_mistaken_for_model(key, name)
    if mistaken is not None:
        return mistaken
    if what == "a tokenizer" and folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return PsipoInputError(
            f"{key}: {name} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer into that folder (tokenizer.save_pretrained)"
        )
    return PsipoInputError(
        f"{key}: cannot load {name!r} as {what} (not a local folder, or not on the Hub / offline): {first_line(exc)}"
    )


def _corrupt_weights_error(key: str, name: str, exc: BaseException) -> PsipoInputError:
    """Names the damaged ``.safetensors`` file of a local folder (safetensors' error does not)."""
    from safetensors import SafetensorError, safe_open

    folder = Path(os.path.expanduser(name))
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError as damage:
            return PsipoInputError(f"{key}: {path} is corrupt or truncated: {first_line(damage)}")
    return PsipoInputError(
        f"{key}: a weights file of {name!r} is corrupt or truncated: {first_line(exc)}"
    )


def saved_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a local model folder as a dict; ``{}`` when it has none that reads
    as a JSON object (a Hub name, a LoRA adapter folder: transformers decides)."""
    import json

    try:
        data = json.loads((Path(os.path.expanduser(str(folder))) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


CLASSIFIER_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
"""Architecture suffixes whose head scores rather than predicts the next token."""


def check_architecture(folder: str | Path, *, key: str, name: str, want: str) -> None:
    """Refuse a folder whose ``config.json`` holds the wrong kind of model, before transformers
    loads it with a fresh, random head (and only a log line saying so).

    ``want``: ``"causal LM"`` (no classifier head: a policy, a reference model), ``"reward
    model"`` (a ``…ForSequenceClassification`` with one output: a judge, a reward) or
    ``"reward start"`` (``psipo reward``'s model: a causal LM gets a fresh scalar head, a
    classifier must have one output). Errors name ``key`` and ``name`` (the value as given).
    """
    data = saved_config(folder)
    architectures = data.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        return
    held = ", ".join(architectures)
    classifier = bool(architectures) and all(a.endswith(CLASSIFIER_HEADS) for a in architectures)
    scorer = any(a.endswith("ForSequenceClassification") for a in architectures)
    if want == "causal LM" and classifier:
        raise PsipoInputError(
            f"{key}: {name} holds a {held}, not a causal LM (a …ForCausalLM): a reward model is a "
            "judge or reward, not a policy or reference"
        )
    if want == "reward model" and architectures and not scorer:
        raise PsipoInputError(
            f"{key}: {name} holds a {held}, not a reward model (an …ForSequenceClassification "
            "with one output, e.g. the final/ of a psipo reward run)"
        )
    if want in ("reward model", "reward start") and scorer:
        labels = data.get("id2label")
        outputs = len(labels) if isinstance(labels, dict) and labels else data.get("num_labels") or 2
        if outputs != 1:
            raise PsipoInputError(f"{key}: {name} has {outputs} outputs; a reward model needs 1 (num_labels 1)")


BUILTIN_ATTENTION = ("sdpa", "eager")
"""Attention implementations that need no package beyond torch and transformers."""

KERNEL_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}
"""Attention implementations served by a separately installed package, and that package."""


def check_attn_implementation(name: str | None) -> None:
    """Refuse, in one line naming ``attn_implementation``, a kernel whose package is not
    installed here (before transformers fails deep inside ``from_pretrained``)."""
    import importlib.util

    package = KERNEL_PACKAGES.get(name or "")
    if package is not None and importlib.util.find_spec(package) is None:
        raise PsipoInputError(
            f"attn_implementation: {name} needs the {package} package, which is not installed here; "
            f"use one of {', '.join(BUILTIN_ATTENTION)} (or leave it unset), or install {package}"
        )


def _from_pretrained(
    auto_class: Any, name: str, config: ModelConfig, *, key: str, what: str, want: str | None = None, **kwargs: Any
) -> Any:
    """``auto_class.from_pretrained(name)`` with one-line errors, failing fast without the Hub.

    ``want`` is the kind of model :func:`check_architecture` requires of the folder; a model
    loaded with ``num_labels=1`` requires a ``"reward start"`` at least."""
    from safetensors import SafetensorError

    source = resolve_hub_name(name, key=key, what=what, revision=config.revision)
    want = want or ("reward start" if kwargs.get("num_labels") == 1 else None)
    if want is not None:
        check_architecture(source, key=key, name=name, want=want)
    check_attn_implementation(kwargs.get("attn_implementation"))
    try:
        return auto_class.from_pretrained(
            source, revision=config.revision, trust_remote_code=config.trust_remote_code, **kwargs
        )
    except ImportError as exc:  # an attention kernel whose package is missing or broken
        if "attn_implementation" not in kwargs or "attention" not in str(exc).lower():
            raise
        raise PsipoInputError(
            f"attn_implementation: {kwargs['attn_implementation']!r} cannot be used here: {first_line(exc)} "
            f"(available: {', '.join(BUILTIN_ATTENTION)})"
        ) from None
    except SafetensorError as exc:
        raise _corrupt_weights_error(key, source, exc) from None
    except (OSError, ValueError) as exc:
        raise _load_error(key, name, what, exc) from None


def load_tokenizer(config: ModelConfig) -> Any:
    """``AutoTokenizer`` of ``config.tokenizer`` (or the model's).

    No pad token is needed: padded positions are masked out of attention and loss, so they
    are filled with the pad id when there is one and the EOS id otherwise.
    """
    from transformers import AutoTokenizer

    key = "tokenizer" if config.tokenizer else "model"
    return _from_pretrained(
        AutoTokenizer, config.tokenizer or config.model, config, key=key, what="a tokenizer"
    )


def pad_id_of(tokenizer: Any) -> int:
    """The id used to fill padded positions (masked out, so its value does not matter)."""
    for token_id in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if token_id is not None:
            return int(token_id)
    return 0


def load_causal_lm(name: str, config: ModelConfig, *, key: str = "model") -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained(name)`` in the parameter dtype of ``config.dtype``."""
    from transformers import AutoModelForCausalLM

    # float16 trains with float32 master weights and autocast; bfloat16 weights train as they are.
    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    kwargs: dict[str, Any] = {}
    if config.attn_implementation is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    return _from_pretrained(
        AutoModelForCausalLM, name, config, key=key, what="a causal LM", want="causal LM", dtype=dtype, **kwargs
    )


DROPOUT_ATTRIBUTES = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")
"""Float dropout probabilities that configs carry and that modules copy when they are built
(Llama's attention keeps ``attention_dropout`` and applies it in training mode)."""


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (Dropout modules, the attributes modules copied from
    the config, and the config), so that π = π_ref at init."""
    for owner in (*model.modules(), getattr(model, "config", None)):
        if isinstance(owner, nn.Dropout):
            owner.p = 0.0
        for attr in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(owner, attr, None), float):
                setattr(owner, attr, 0.0)


def check_max_length(model: nn.Module, max_length: int, *, key: str = "max_length") -> None:
    """A model shorter than ``max_length`` (the value of config ``key``) is an error naming both numbers."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and limit < max_length:
        raise PsipoInputError(
            f"{key}: {max_length} exceeds the model's max_position_embeddings {limit}; lower {key}"
        )


def check_tokenizer_fits(model: nn.Module, tokenizer: Any, *, key: str = "tokenizer") -> None:
    """A tokenizer with more tokens than ``model``'s input embedding has rows is an error naming
    ``key``: its ids past the last row would stop the first forward with an IndexError."""
    inner = getattr(model, "module", model)
    get_input = getattr(inner, "get_input_embeddings", None)
    rows = getattr(get_input() if callable(get_input) else None, "num_embeddings", None)
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    if isinstance(rows, int) and isinstance(size, int) and size > rows:
        raise PsipoInputError(
            f"{key}: the tokenizer has {size} tokens but the model's embedding only {rows} (ids from {rows} on "
            "would index past it); use the model's own tokenizer"
        )


def vocabulary_size(model: nn.Module) -> int | None:
    """Rows of ``model``'s output embedding (the tokens it predicts), else its config's
    ``vocab_size``; None when it has neither. Wrappers (DDP's ``module``, peft) are looked through."""
    inner = getattr(model, "module", model)
    get_output = getattr(inner, "get_output_embeddings", None)
    head = get_output() if callable(get_output) else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] > 0:
        return int(weight.shape[0])
    size = getattr(getattr(inner, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def check_same_vocabulary(policy: nn.Module, reference: nn.Module, *, key: str = "reference_model") -> None:
    """π_ref must score the policy's tokens: a different vocabulary size is a one-line error
    naming ``key`` (the policy's token ids would index past π_ref's embedding, or mean other tokens)."""
    ours, theirs = vocabulary_size(policy), vocabulary_size(reference)
    if ours is not None and theirs is not None and ours != theirs:
        raise PsipoInputError(
            f"{key}: its vocabulary has {theirs} tokens but the policy's (model) has {ours}; "
            f"{key} must share the policy's tokenizer"
        )


def check_same_tokenizer(tokenizer: Any, name: str, config: ModelConfig, *, key: str = "reference_model") -> None:
    """The model ``name`` given under ``key`` beside the policy must read token ids as the
    policy's ``tokenizer`` writes them: two tokenizers of one vocabulary size (Llama 2's and
    Mistral's, 32000 tokens each) pass :func:`check_same_vocabulary` but score other tokens.

    Compared when ``name`` carries a tokenizer (a folder with tokenizer files, or a Hub
    repository that loads one); a folder of weights alone has nothing to compare."""
    from transformers import AutoTokenizer

    if tokenizer is None or not callable(getattr(tokenizer, "get_vocab", None)):
        return
    folder = os.path.isdir(os.path.expanduser(name))
    if folder and not any((Path(name).expanduser() / f).is_file() for f in TOKENIZER_FILES):
        return
    try:
        theirs = _from_pretrained(AutoTokenizer, name, config, key=key, what="a tokenizer")
    except PsipoInputError:
        if folder:
            raise
        return  # a Hub repository without a tokenizer: nothing to compare
    ours, their_vocab = tokenizer.get_vocab(), theirs.get_vocab()
    if ours != their_vocab:
        moved = sum(their_vocab.get(token) != i for token, i in ours.items())
        extra = len(their_vocab.keys() - ours.keys())
        differences = [f"{moved} of the policy's {len(ours)} tokens have other ids there or are missing"] if moved else []
        differences += [f"it has {extra} tokens the policy's lacks"] if extra else []
        raise PsipoInputError(
            f"{key}: its tokenizer ({name}) differs from the policy's: {', and '.join(differences)}; "
            f"{key} must share the policy's tokenizer"
        )


def load_companion_lm(name: str, config: ModelConfig, *, tokenizer: Any, policy: nn.Module, key: str) -> nn.Module:
    """The causal LM ``name`` that scores the policy's tokens beside it (``key``: a reference
    model, an evaluation baseline): its tokenizer, when it has one, and its vocabulary are
    checked against the policy's, the tokenizer before the weights load."""
    check_same_tokenizer(tokenizer, name, config, key=key)
    model = load_causal_lm(name, config, key=key)
    check_same_vocabulary(policy, model, key=key)
    return model


def add_lora(model: nn.Module, config: ModelConfig, *, seed: int, task_type: str = "CAUSAL_LM") -> nn.Module:
    """Wrap ``model`` with fresh LoRA adapters (B = 0, so the output is unchanged).

    ``task_type`` is peft's: ``CAUSAL_LM``, or ``SEQ_CLS`` for a reward model, whose scalar
    head then trains in full."""
    from peft import LoraConfig, get_peft_model

    check_lora_targets(model, config.lora_target_modules)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
        task_type=task_type,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, lora)
        except ValueError as exc:  # peft: a target of a kind it cannot adapt, or none found
            if not config.lora_target_modules:
                raise
            reason = first_line(exc)
            if "is not supported" in str(exc):  # peft names the module by its whole repr
                reason = f"{config.lora_target_modules} names a module LoRA cannot adapt (a block, not a layer)"
            raise PsipoInputError(f"lora_target_modules: {reason}; the model's linear layers: {_linear_names(model)}") from None


def _linear_names(model: nn.Module, most: int = 10) -> str:
    """The distinct short names of ``model``'s linear layers (what LoRA usually targets)."""
    from transformers.pytorch_utils import Conv1D

    names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))})
    shown = ", ".join(names[:most]) or "none"
    return shown + (f", … ({len(names)} in all)" if len(names) > most else "")


def check_lora_targets(model: nn.Module, targets: list[str] | None) -> None:
    """Each of ``lora_target_modules`` must name a module of ``model`` (a module name or its
    dotted tail, as peft matches them): a one-line error listing the model's linear layers."""
    if not targets:
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise PsipoInputError(
            f"lora_target_modules: no module named {', '.join(map(repr, missing))} in the model; "
            f"its linear layers: {_linear_names(model)}"
        )


def prepare_policy(model: nn.Module, config: ModelConfig, *, seed: int) -> nn.Module:
    """Adapters and gradient checkpointing on a loaded model, ready to train."""
    if config.disable_dropout:
        disable_dropout(model)
    if config.lora_r > 0 and not hasattr(model, "disable_adapter"):
        model = add_lora(model, config, seed=seed)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.lora_r > 0:
            model.enable_input_require_grads()
    return model
