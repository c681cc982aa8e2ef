"""psipo.lm.checkpoint: a save → load round trip restores every live object exactly (the next
step equals the uninterrupted one), rotation, what counts as a checkpoint, damaged ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.lm.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from psipo.lm.config import ModelConfig
from psipo.lm.fixtures import make_tiny_model
from psipo.lm.model import add_lora

IDS = torch.tensor([[2, 5, 7, 3, 9, 4], [8, 1, 6, 6, 2, 7]])


@dataclasses.dataclass
class Live:
    """What a trainer holds: a model, AdamW and a learning-rate schedule."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR

    def step(self) -> None:
        self.model(input_ids=IDS, labels=IDS).loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, run_dir: Path, step: int, **kwargs) -> Path:
        return save_checkpoint(
            run_dir, step=step, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, **kwargs
        )

    def load(self, path: Path):
        return load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)


def live(*, seed: int, lora_seed: int | None = None) -> Live:
    """A tiny Llama from ``seed``, with LoRA adapters initialised from ``lora_seed`` if given."""
    model = make_tiny_model(layers=1, hidden=16, vocab=16, heads=2, seed=seed)
    if lora_seed is not None:
        model = add_lora(model, ModelConfig(lora_r=2), seed=lora_seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    return Live(model.train(), optimizer, scheduler)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def snapshot(run: Live) -> dict[str, object]:
    """Everything a checkpoint must give back, copied."""
    optimizer = run.optimizer.state_dict()
    return {
        "weights": weights(run.model),
        "optimizer": {f"{i}.{k}": v.clone() for i, s in optimizer["state"].items() for k, v in s.items()},
        "param_groups": json.dumps(optimizer["param_groups"]),  # JSON: betas come back as a list
        "scheduler": run.scheduler.state_dict(),
    }


@pytest.mark.parametrize(
    ("saved_seeds", "fresh_seeds"),
    [((0, None), (1, None)), ((0, 0), (0, 1))],  # LoRA: the base model comes from its source
    ids=["full", "lora"],
)
def test_a_restored_run_is_the_saved_run_exactly(tmp_path, saved_seeds, fresh_seeds):
    saved = live(seed=saved_seeds[0], lora_seed=saved_seeds[1])
    saved.step()
    saved.step()
    trainer_state = {"config": {"tau": 0.1}, "fingerprint": "abc", "window": {"tokens": 12}}
    window = {"rows": torch.arange(10.0).reshape(2, 5)}
    torch.manual_seed(1234)
    path = saved.save(tmp_path, step=2, state=trainer_state, tensors=window)
    at_save = snapshot(saved)
    draws_after_save = torch.rand(3)
    saved.step()

    # Other trainable weights, a fresh optimizer and schedule, another RNG state:
    restored = live(seed=fresh_seeds[0], lora_seed=fresh_seeds[1])
    torch.manual_seed(99)
    back = restored.load(path)

    assert (back.step, back.state) == (2, trainer_state)
    assert_same_tensors(back.tensors, window)
    now = snapshot(restored)
    assert_same_tensors(now.pop("weights"), at_save.pop("weights"))
    assert_same_tensors(now.pop("optimizer"), at_save.pop("optimizer"))
    assert now == at_save
    assert torch.equal(torch.rand(3), draws_after_save)
    restored.step()  # the step after the checkpoint is the saved run's step 3, bit for bit
    assert_same_tensors(weights(restored.model), weights(saved.model))


def test_rotation_keeps_the_newest_by_step_number(tmp_path):
    run = live(seed=0)
    for step in (8, 9, 10):  # "step-10" sorts before "step-9" as text
        run.save(tmp_path, step=step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-9", "step-10"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-10", "step-9"]


def test_a_rotation_killed_midway_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    from psipo._io import remove_stale_temporaries

    run = live(seed=0)
    for step in (2, 4):
        run.save(tmp_path, step=step, keep=2)

    def killed_midway(path, *args, **kwargs):  # one file gone, then the process is killed
        next(p for p in Path(path).rglob("*.safetensors")).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr("psipo._io.shutil.rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        run.save(tmp_path, step=6, keep=2)
    monkeypatch.undo()
    # step-2 was on its way out: it is no checkpoint any more, and the next run clears it.
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-4", "step-6"]
    remove_stale_temporaries(tmp_path / "checkpoints")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-4", "step-6"]


def test_an_interrupted_save_leaves_no_checkpoint_and_strays_are_ignored(tmp_path, monkeypatch):
    run = live(seed=0)
    run.save(tmp_path, step=2)
    folder = tmp_path / "checkpoints"
    (folder / "step-7").write_text("a file, not a checkpoint folder")
    (folder / "step-x").mkdir()

    def power_cut(*args, **kwargs):
        raise RuntimeError("power cut")

    # What a killed process leaves: the half-written folder beside its final name, not cleaned up.
    monkeypatch.setattr("safetensors.torch.save_file", power_cut)
    monkeypatch.setattr("psipo._io.shutil.rmtree", lambda *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="power cut"):
        run.save(tmp_path, step=4)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".step-4")]  # the leftover exists
    assert list_checkpoints(tmp_path) == [folder / "step-2"]
    assert list_checkpoints(tmp_path / "elsewhere") == []


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_weights(path: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(path))
    edit(weights)
    save_file(weights, str(path))


DAMAGE = {
    "truncated optimizer": (lambda c: truncate(c / "optimizer.safetensors"), r"resume: cannot restore .*step-2: "),
    "truncated weights": (lambda c: truncate(c / "model" / "model.safetensors"), r"resume: cannot restore .*step-2: "),
    "rng not safetensors": (
        lambda c: (c / "rng.safetensors").write_bytes(b"not safetensors"), r"resume: cannot restore .*step-2: "
    ),
    "state not JSON": (
        lambda c: (c / "trainer_state.json").write_text("{"), r"resume: .*step-2/trainer_state.json is unreadable: "
    ),
    "state without a step": (
        lambda c: (c / "trainer_state.json").write_text('{"step": "two"}'),
        r"resume: .*step-2/trainer_state.json is not a psipo checkpoint state$",
    ),
    # A checkpoint must hold every weight of the model (but the tied head) and nothing else:
    # one left out would keep the new model's value of it, silently.
    "a weight left out": (
        lambda c: edit_weights(c / "model" / "model.safetensors", lambda w: w.pop("model.norm.weight")),
        r"resume: cannot restore .*step-2: .*lacks weights: \['model.norm.weight'\]",
    ),
    "a weight too many": (
        lambda c: edit_weights(c / "model" / "model.safetensors", lambda w: w.update(extra=torch.zeros(2))),
        r"resume: cannot restore .*step-2: .*unexpected weights: \['extra'\]",
    ),
    "weights missing": (
        lambda c: (c / "model" / "model.safetensors").unlink(), r"resume: cannot restore .*step-2: "
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_a_one_line_input_error(tmp_path, damage):
    path = live(seed=0).save(tmp_path, step=2)
    spoil, message = DAMAGE[damage]
    spoil(path)
    with pytest.raises(PsipoInputError, match=message) as info:
        live(seed=1).load(path)
    assert "\n" not in str(info.value)
