"""Atomic checkpoints: weights, optimizer, scheduler, RNG and data position; no pickle.

``checkpoints/step-N/`` holds

* ``model/`` — ``save_pretrained`` output (safetensors; the PEFT adapter with LoRA), itself a
  loadable model;
* ``optimizer.safetensors`` + the JSON parts of the optimizer state in ``trainer_state.json``;
* ``rng.safetensors`` — torch CPU (and CUDA) generator states;
* ``trainer_state.json`` — the global step (the data position follows from it: batch orders
  are a pure function of seed and epoch), scheduler and loss-scaler states, and the
  trainer's own JSON state (the config the run was trained with, the data fingerprint, the
  open logging window);
* ``window.safetensors`` — the trainer's tensors (the logging window's per-pair values), so
  that the first record after a resume equals the uninterrupted run's.

The folder is written beside its final name and renamed into place
(:func:`psipo._io.atomic_directory`), so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from psipo._io import atomic_directory, atomic_write_json, remove_folder

STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclasses.dataclass
class Restored:
    """What :func:`load_checkpoint` gives back besides the live objects it restored."""

    step: int
    state: dict[str, Any]
    """The trainer's JSON state saved with the checkpoint."""
    tensors: dict[str, torch.Tensor]
    """The trainer's tensors saved with the checkpoint."""


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_model(model: Any, tokenizer: Any, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """``save_pretrained`` of the model (or PEFT adapter) and tokenizer into ``directory``;
    ``state_dict``: the model's weights gathered whole when they are sharded over processes."""
    model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def save_final(
    model: Any,
    tokenizer: Any,
    directory: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    *,
    card: str | None = None,
) -> None:
    """The final model, atomically: loadable with ``AutoModelForCausalLM.from_pretrained``;
    ``card``: its model card, written as README.md (over the template peft writes)."""
    with atomic_directory(directory) as tmp:
        save_model(model, tokenizer, tmp, state_dict)
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")


def _optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict (parameters keyed by index, or by name when gathered from
    sharded weights) as safetensors tensors and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    run_dir: Path,
    *,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any = None,
    keep: int | None = None,
    state: Mapping[str, Any] | None = None,
    tensors: Mapping[str, torch.Tensor] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/step-<step>`` atomically; keep only the newest ``keep``.

    ``state`` (JSON-able) and ``tensors`` are the trainer's own, given back by
    :func:`load_checkpoint`. ``model_state`` and ``optimizer_state``: the whole state dicts,
    gathered, when the weights are sharded over processes (default: the model's and the
    optimizer's own). Older checkpoints are removed only after this one is complete.
    """
    from safetensors.torch import save_file

    path = run_dir / "checkpoints" / f"step-{step}"
    with atomic_directory(path) as tmp:
        save_model(model, None, tmp / "model", model_state)
        optimizer_tensors, optimizer_json = _optimizer_state(optimizer_state or optimizer.state_dict())
        save_file(optimizer_tensors, str(tmp / "optimizer.safetensors"))
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, str(tmp / "rng.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in (tensors or {}).items()}, str(tmp / "window.safetensors"))
        atomic_write_json(
            tmp / "trainer_state.json",
            {
                "step": step,
                "optimizer": optimizer_json,
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "trainer": dict(state or {}),
            },
        )
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            remove_folder(old)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _read_model_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        raise RuntimeError(f"no weights (*.safetensors) in {directory}")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(shard)))
    return state


def _load_model_weights(model: Any, directory: Path) -> None:
    from safetensors.torch import load_file

    if _is_peft(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
        return
    state = _read_model_weights(directory)
    # strict=False because save_pretrained leaves out tied weights (the output head); anything
    # else missing or extra means the checkpoint is not this model's.
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"checkpoint {directory} has unexpected weights: {result.unexpected_keys[:3]}")
    tied = {name for name in result.missing_keys if _is_tied(model, name, state)}
    if set(result.missing_keys) - tied:
        raise RuntimeError(f"checkpoint {directory} lacks weights: {sorted(set(result.missing_keys) - tied)[:3]}")


def _is_tied(model: Any, name: str, loaded: dict[str, torch.Tensor]) -> bool:
    """Whether parameter ``name`` shares its storage with a parameter that was loaded."""
    parameters = dict(model.named_parameters(remove_duplicate=False))
    if name not in parameters:
        return False
    pointer = parameters[name].data_ptr()
    return any(parameters[other].data_ptr() == pointer for other in loaded if other in parameters and other != name)


def _older_one(path: Path) -> str:
    """What to do about damaged checkpoint ``path`` when the run has an older one to resume from."""
    older = [p for p in list_checkpoints(path.parent.parent) if p.name != path.name]
    return f"; move {path.name} out of {path.parent} to resume from {older[-1].name}" if older else ""


def read_trainer_state(path: Path) -> dict[str, Any]:
    """``trainer_state.json`` of a checkpoint; an unreadable one is a one-line error."""
    from psipo.errors import PsipoInputError

    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PsipoInputError(f"resume: {path / 'trainer_state.json'} is unreadable: {exc}{_older_one(path)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise PsipoInputError(f"resume: {path / 'trainer_state.json'} is not a psipo checkpoint state{_older_one(path)}")
    return state


def load_checkpoint(
    path: Path,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any = None,
    load_whole: Callable[[dict[str, torch.Tensor], dict[str, Any]], None] | None = None,
) -> Restored:
    """Restore everything :func:`save_checkpoint` wrote into live objects.

    ``load_whole(model_state, optimizer_state)`` loads whole state dicts into a model and
    optimizer whose weights are sharded over processes (default: their own ``load_state_dict``).

    A checkpoint that cannot be read back (edited or damaged by hand: the writes themselves
    are atomic) is a one-line :class:`~psipo.errors.PsipoInputError` naming it, and the older
    checkpoint a resume could start from instead.
    """
    from psipo.errors import PsipoInputError, first_line

    try:
        return _restore(path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, load_whole=load_whole)
    except PsipoInputError:
        raise
    except Exception as exc:  # noqa: BLE001 — safetensors, torch and peft raise many types
        first = first_line(exc)
        raise PsipoInputError(f"resume: cannot restore {path}: {first}{_older_one(path)}") from None


def _restore(
    path: Path, *, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, load_whole: Any
) -> Restored:
    from safetensors.torch import load_file

    trainer_state = read_trainer_state(path)
    tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer_json = trainer_state["optimizer"]
    state: dict[int | str, dict[str, Any]] = {}

    def parameter(key: str) -> int | str:  # an index, or a name (a state gathered from shards)
        return int(key) if key.isdigit() else key

    for key, value in tensors.items():
        index, name = key.rsplit(".", 1)  # state names (exp_avg, step) have no dot; names do
        state.setdefault(parameter(index), {})[name] = value
    for index, values in optimizer_json["scalars"].items():
        state.setdefault(parameter(index), {}).update(values)
    optimizer_state = {"state": state, "param_groups": optimizer_json["param_groups"]}
    if load_whole is None:
        _load_model_weights(model, path / "model")
        optimizer.load_state_dict(optimizer_state)
    else:
        load_whole(_read_model_weights(path / "model"), optimizer_state)
    scheduler.load_state_dict(trainer_state["scheduler"])
    if scaler is not None and trainer_state.get("scaler") is not None:
        scaler.load_state_dict(trainer_state["scaler"])

    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    cuda_states = [rng[f"cuda.{i}"] for i in range(len(rng) - 1) if f"cuda.{i}" in rng]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    window = path / "window.safetensors"
    return Restored(
        step=int(trainer_state["step"]),
        state=dict(trainer_state.get("trainer") or {}),
        tensors=load_file(str(window)) if window.is_file() else {},
    )
