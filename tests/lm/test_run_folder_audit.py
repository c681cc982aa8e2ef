"""psipo.lm.run_folder, audited by mutation: what counts as a run's files, a refusal that
gives the lock back, a failed replacement put back exactly, and the resume checks' edge cases
(keys on one side only, data paths, the command, configs of older psipo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from psipo.errors import PsipoInputError
from psipo.lm.run_folder import (
    check_resumable,
    config_beside_final,
    config_differences,
    held_run_folder,
    open_run_folder,
)


def test_a_refused_folder_is_not_left_locked(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("tau: 0.1\n")
    with pytest.raises(PsipoInputError, match="holds another run"):
        open_run_folder(out, resume=False, overwrite=False)
    # The same process opens it again at once: the refusal released its lock (a flock of
    # another descriptor would be refused as "in use by a live psipo run").
    folder = open_run_folder(out, resume=False, overwrite=True)
    folder.release()
    folder.release()  # a second release is harmless: the descriptor is not closed twice
    assert folder.lock_fd is None


def test_a_dangling_symlink_is_a_runs_entry_and_an_empty_checkpoints_folder_is_not(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "final").symlink_to(tmp_path / "gone")
    with pytest.raises(PsipoInputError, match=r"holds another run \(final\)"):
        open_run_folder(out, resume=False, overwrite=False)
    (out / "final").unlink()
    (out / "checkpoints").mkdir()  # e.g. a run that stopped before its first checkpoint
    folder = open_run_folder(out, resume=False, overwrite=False)
    assert folder.replacing == []
    folder.release()


def test_a_failed_replacement_puts_back_exactly_the_old_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("old\n")  # the old run stopped before writing metrics
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the run's\n")
    with pytest.raises(RuntimeError, match="judge failed"):
        with held_run_folder(out, resume=False, overwrite=True) as folder:
            folder.begin_writing()
            assert sorted(p.name for p in out.iterdir()) == [".psipo-replaced", ".psipo.lock"]
            assert folder.replacing == []  # moved aside once: a second call has nothing to move
            folder.begin_writing()
            (out / "config.yaml").symlink_to(outside)  # the new run's entries, a symlink among them
            (out / "metrics.jsonl").write_text('{"step": 1}\n')
            raise RuntimeError("judge failed")
    assert sorted(p.name for p in out.iterdir()) == [".psipo.lock", "config.yaml"]
    assert (out / "config.yaml").read_text() == "old\n"
    assert (outside / "keep.txt").read_text() == "not the run's\n"  # a symlink is unlinked, never followed
    assert folder.lock_fd is None  # the with block gave the lock back
    again = open_run_folder(out, resume=False, overwrite=True)
    again.release()


def test_a_replacement_that_ends_well_deletes_the_old_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("old\n")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    with held_run_folder(out, resume=False, overwrite=True) as folder:
        folder.begin_writing()
        (out / "config.yaml").write_text("new\n")
    assert sorted(p.name for p in out.iterdir()) == [".psipo.lock", "config.yaml"]
    assert (out / "config.yaml").read_text() == "new\n"


def test_a_key_set_on_one_side_only_is_a_difference():
    assert config_differences({"tau": 0.1}, {"tau": 0.1, "seed": 3}) == ["seed ('unset' → 3)"]
    assert config_differences({"tau": 0.1, "seed": 3}, {"tau": 0.1}) == ["seed (3 → 'unset')"]
    # null is a value: a key a newer psipo adds, null by default, is not the key's absence
    assert config_differences({"tau": 0.1}, {"tau": 0.1, "max_pairs": None}) == ["max_pairs ('unset' → None)"]


def test_a_fingerprinted_data_path_may_move_but_not_appear_or_vanish():
    moved = config_differences({"train_data": "a.jsonl"}, {"train_data": "b/a.jsonl"}, fingerprinted={"train"})
    assert moved == []
    assert config_differences({"train_data": "a.jsonl"}, {"train_data": "b/a.jsonl"}) == [
        "train_data ('a.jsonl' → 'b/a.jsonl')"
    ]
    fingerprinted = {"train", "eval"}
    assert config_differences({"eval_data": None}, {"eval_data": "e.jsonl"}, fingerprinted=fingerprinted) == [
        "eval_data (None → 'e.jsonl')"
    ]
    assert config_differences({"train_data": "a.jsonl"}, {}, fingerprinted=fingerprinted) == [
        "train_data ('a.jsonl' → 'unset')"
    ]


def test_a_checkpoint_without_a_config_or_of_psipo_reward_is_not_resumed_by_train():
    train_config = {"tau": 0.1, "loss": "ipo"}
    with pytest.raises(PsipoInputError, match=r"records no config, so a resume cannot be checked"):
        check_resumable(Path("step-4"), None, train_config)
    with pytest.raises(PsipoInputError, match=r"step-4 was written by psipo reward, not psipo train; resume it with psipo reward"):
        check_resumable(Path("step-4"), {"reward_l2": 0.0, "tau": 0.1}, train_config)
    with pytest.raises(PsipoInputError, match=r"written by psipo online, not psipo reward"):
        check_resumable(Path("step-4"), {"algorithm": "ipo_md"}, {"reward_l2": 0.0})
    check_resumable(Path("step-4"), dict(train_config, max_steps=9), train_config)  # a resumable key


def test_the_config_beside_final_is_found_only_for_a_final_folder(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "elsewhere").mkdir()
    (run / "config.yaml").write_text("tau: 0.5\nloss: dpo\n")
    assert config_beside_final(run / "final") == (run / "config.yaml", {"tau": 0.5, "loss": "dpo"})
    assert config_beside_final(run / "elsewhere") is None  # a model folder beside some config.yaml
