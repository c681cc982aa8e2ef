"""psipo.lm.checkpoint, what a mutation audit found untested: the final folder (atomic, with the
tokenizer, the gathered weights), the gathered model and optimizer states of a sharded run
(names with dots, JSON scalars, non-contiguous tensors) through ``load_whole``, the loss
scaler, the older checkpoint a damaged one's error names, and what counts as a checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from psipo.errors import PsipoInputError
from psipo.lm.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, save_final
from psipo.lm.fixtures import make_tiny_model, make_tokenizer


def tiny(seed: int = 0) -> torch.nn.Module:
    return make_tiny_model(layers=1, hidden=16, vocab=16, heads=2, seed=seed)


def optimizer_and_schedule(model: torch.nn.Module):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def test_the_final_folder_holds_the_given_weights_and_the_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = tiny(), make_tokenizer(16)
    gathered = {name: torch.full_like(p, 0.25) for name, p in model.state_dict().items()}
    save_final(model, tokenizer, tmp_path / "final", gathered)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for p in loaded.state_dict().values())
    assert AutoTokenizer.from_pretrained(tmp_path / "final").get_vocab() == tokenizer.get_vocab()


def test_a_final_save_that_fails_midway_leaves_no_final_folder(tmp_path, monkeypatch):
    tokenizer = make_tokenizer(16)

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", disk_full)  # the weights are written by then
    with pytest.raises(OSError, match="disk full"):
        save_final(tiny(), tokenizer, tmp_path / "final")
    assert not (tmp_path / "final").exists()


def test_gathered_states_go_back_whole_to_load_whole(tmp_path):
    # A sharded run saves the whole state dicts, the optimizer's keyed by parameter name (with
    # dots), and gets them back through load_whole, exactly.
    model = tiny()
    optimizer, scheduler = optimizer_and_schedule(model)
    model_state = {name: torch.full_like(p, 0.5) for name, p in model.state_dict().items()}
    optimizer_state = {
        "state": {
            "model.norm.weight": {"exp_avg": torch.arange(6.0).reshape(2, 3).t(), "step": torch.tensor(3.0)},
            "lm_head.weight": {"momentum": 0.5, "note": "json"},
        },
        "param_groups": [{"lr": 0.01, "params": ["model.norm.weight", "lm_head.weight"]}],
    }
    path = save_checkpoint(
        tmp_path, step=3, model=model, optimizer=optimizer, scheduler=scheduler,
        model_state=dict(model_state), optimizer_state=optimizer_state,  # save_pretrained empties the dict
    )
    got = {}
    load_checkpoint(
        path, model=tiny(1), optimizer=optimizer, scheduler=scheduler,
        load_whole=lambda weights, state: got.update(weights=weights, optimizer=state),
    )
    assert got["weights"].keys() == model_state.keys()
    assert all(torch.equal(v, model_state[k]) for k, v in got["weights"].items())
    state = got["optimizer"]["state"]
    assert state.keys() == optimizer_state["state"].keys()
    assert torch.equal(state["model.norm.weight"]["exp_avg"], torch.arange(6.0).reshape(2, 3).t())
    assert torch.equal(state["model.norm.weight"]["step"], torch.tensor(3.0))
    assert state["lm_head.weight"] == {"momentum": 0.5, "note": "json"}
    assert got["optimizer"]["param_groups"] == optimizer_state["param_groups"]


def test_a_sharded_resume_without_weights_is_an_input_error_not_an_empty_load(tmp_path):
    model = tiny()
    optimizer, scheduler = optimizer_and_schedule(model)
    path = save_checkpoint(tmp_path, step=2, model=model, optimizer=optimizer, scheduler=scheduler)
    (path / "model" / "model.safetensors").unlink()
    loaded = []
    with pytest.raises(PsipoInputError, match=r"resume: cannot restore .*step-2: no weights"):
        load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, load_whole=lambda *a: loaded.append(a))
    assert loaded == []


class Scaler:
    """A loss scaler's state_dict / load_state_dict."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale = state["scale"]


def test_the_loss_scaler_is_restored(tmp_path):
    model = tiny()
    optimizer, scheduler = optimizer_and_schedule(model)
    path = save_checkpoint(tmp_path, step=2, model=model, optimizer=optimizer, scheduler=scheduler, scaler=Scaler(512.0))
    restored = Scaler(65536.0)
    load_checkpoint(path, model=tiny(1), optimizer=optimizer, scheduler=scheduler, scaler=restored)
    assert restored.scale == 512.0


def saved_steps(run_dir: Path, steps) -> list[Path]:
    model = tiny()
    optimizer, scheduler = optimizer_and_schedule(model)
    return [save_checkpoint(run_dir, step=s, model=model, optimizer=optimizer, scheduler=scheduler) for s in steps]


def load(path: Path) -> None:
    model = tiny(1)
    optimizer, scheduler = optimizer_and_schedule(model)
    load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)


@pytest.mark.parametrize("damage", ["weights", "state"])
def test_a_damaged_checkpoint_names_the_newest_older_one_once(tmp_path, damage):
    paths = saved_steps(tmp_path, (2, 3, 4))
    if damage == "weights":
        (paths[-1] / "model" / "model.safetensors").write_bytes(b"damaged")
        start = f"resume: cannot restore {paths[-1]}: "
    else:
        (paths[-1] / "trainer_state.json").write_text('{"step": "four"}')
        start = f"resume: {paths[-1] / 'trainer_state.json'} is not a psipo checkpoint state"
    with pytest.raises(PsipoInputError) as info:
        load(paths[-1])
    message = str(info.value)
    assert message.startswith(start)  # said once, not wrapped in "cannot restore"
    assert message.endswith(f"; move step-4 out of {tmp_path / 'checkpoints'} to resume from step-3")
    assert message.count("move ") == 1


def test_a_trainer_state_that_is_not_utf8_is_named_unreadable(tmp_path):
    (path,) = saved_steps(tmp_path, (2,))
    (path / "trainer_state.json").write_bytes(b'{"step": 2, "x": "\xff"}')
    with pytest.raises(PsipoInputError, match=rf"^resume: {re.escape(str(path / 'trainer_state.json'))} is unreadable: "):
        load(path)


def test_a_folder_named_like_a_checkpoint_with_more_after_the_number_is_none(tmp_path):
    (path,) = saved_steps(tmp_path, (2,))
    for name in ("step-9.bak", "step-8-old"):  # copies made by hand
        (tmp_path / "checkpoints" / name).mkdir()
        for item in path.iterdir():
            if item.is_file():
                (tmp_path / "checkpoints" / name / item.name).write_bytes(item.read_bytes())
    assert list_checkpoints(tmp_path) == [path]


def test_a_checkpoint_without_a_persistent_buffer_lacks_it(tmp_path):
    # A missing key that is no parameter (a persistent buffer) is never "tied": the checkpoint lacks it.
    class WithBuffer(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.full((2,), value))
            self.register_buffer("counts", torch.full((2,), value))

        def save_pretrained(self, directory, safe_serialization=True, state_dict=None):
            Path(directory).mkdir(parents=True, exist_ok=True)
            save_file(dict(state_dict or self.state_dict()), str(Path(directory) / "model.safetensors"))

    saved = WithBuffer(1.0)
    optimizer, scheduler = optimizer_and_schedule(saved)
    path = save_checkpoint(tmp_path, step=2, model=saved, optimizer=optimizer, scheduler=scheduler)
    weights = load_file(str(path / "model" / "model.safetensors"))
    del weights["counts"]
    save_file(weights, str(path / "model" / "model.safetensors"))
    fresh = WithBuffer(5.0)
    optimizer, scheduler = optimizer_and_schedule(fresh)
    with pytest.raises(PsipoInputError, match=r"lacks weights: \['counts'\]"):
        load_checkpoint(path, model=fresh, optimizer=optimizer, scheduler=scheduler)
