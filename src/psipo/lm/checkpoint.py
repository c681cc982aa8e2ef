"""Atomic checkpoints: weights, optimizer, scheduler, RNG and data position; no pickle.

``checkpoints/step-N/`` holds

* ``model/`` — ``save_pretrained`` output (safetensors; the PEFT adapter with LoRA), itself a
  loadable model;
* ``optimizer.safetensors`` + the JSON parts of the optimizer state in ``trainer_state.json``;
* ``rng.safetensors`` — torch CPU (and CUDA) generator states;
* ``trainer_state.json`` — the global step (the data position follows from it: batch orders
  are a pure function of seed and epoch), scheduler and loss-scaler states.

The folder is written beside its final name and renamed into place
(:func:`psipo._io.atomic_directory`), so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from psipo._io import atomic_directory, atomic_write_json

STEP_DIR = re.compile(r"^step-(\d+)$")


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_model(model: Any, tokenizer: Any, directory: Path) -> None:
    """``save_pretrained`` of the model (or PEFT adapter) and tokenizer into ``directory``."""
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def save_final(model: Any, tokenizer: Any, directory: Path) -> None:
    """The final model, atomically: loadable with ``AutoModelForCausalLM.from_pretrained``."""
    with atomic_directory(directory) as tmp:
        save_model(model, tokenizer, tmp)


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
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
) -> Path:
    """Write ``run_dir/checkpoints/step-<step>`` atomically; keep only the newest ``keep``."""
    from safetensors.torch import save_file

    path = run_dir / "checkpoints" / f"step-{step}"
    with atomic_directory(path) as tmp:
        save_model(model, None, tmp / "model")
        tensors, optimizer_json = _optimizer_state(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, str(tmp / "rng.safetensors"))
        atomic_write_json(
            tmp / "trainer_state.json",
            {
                "step": step,
                "optimizer": optimizer_json,
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
        )
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _load_model_weights(model: Any, directory: Path) -> None:
    from safetensors.torch import load_file

    if _is_peft(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
        return
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"checkpoint {directory} has unexpected weights: {result.unexpected_keys[:3]}")


def load_checkpoint(
    path: Path, *, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any = None
) -> int:
    """Restore everything :func:`save_checkpoint` wrote into live objects; return the step."""
    from safetensors.torch import load_file

    trainer_state = json.loads((path / "trainer_state.json").read_text())
    _load_model_weights(model, path / "model")

    tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer_json = trainer_state["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in optimizer_json["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": optimizer_json["param_groups"]})
    scheduler.load_state_dict(trainer_state["scheduler"])
    if scaler is not None and trainer_state.get("scaler") is not None:
        scaler.load_state_dict(trainer_state["scaler"])

    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    cuda_states = [rng[f"cuda.{i}"] for i in range(len(rng) - 1) if f"cuda.{i}" in rng]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return int(trainer_state["step"])
