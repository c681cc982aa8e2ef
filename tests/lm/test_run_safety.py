"""Runs never lose or mix work: one run per folder, checked resumes, non-finite steps stopped."""

from __future__ import annotations

import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import psipo.lm.trainer
from psipo.errors import PsipoInputError, PsipoNonFiniteError
from psipo.lm import load_train_config, train
from psipo.lm.run_folder import open_run_folder
from psipo.losses import get_loss


def run(base_config, rows, **keys):
    return train(load_train_config(None, base_config | keys), train_pairs=rows)


def checkpoint_weights_are_finite(run_dir):
    folders = sorted((run_dir / "checkpoints").iterdir())
    assert folders
    for folder in folders:
        for tensor in load_file(str(folder / "model" / "model.safetensors")).values():
            assert torch.isfinite(tensor).all(), folder
    return [f.name for f in folders]


# ---------------------------------------------------------------------------------------
# A run folder belongs to one run


def test_a_fresh_run_refuses_a_folder_holding_another_run(base_config, rows, tmp_path):
    run(base_config, rows, save_steps=1, max_steps=4, tau=0.1)
    out = tmp_path / "run"
    with pytest.raises(PsipoInputError, match=r"holds another run \(config.yaml, metrics.jsonl, checkpoints/, final/\).*--resume.*--overwrite"):
        run(base_config, rows, save_steps=1, max_steps=2, tau=0.5)
    # The refusal touched nothing: the old run's files are as they were.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-4"]

    # overwrite clears the old run: no checkpoint or record of it survives to be resumed or mixed.
    run(base_config, rows, save_steps=1, max_steps=2, tau=0.5, overwrite=True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]
    assert [r["step"] for r in map(eval_json, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    assert "tau: 0.5" in (out / "config.yaml").read_text()


def eval_json(line):
    import json

    return json.loads(line)


def test_unusable_output_dir_is_found_before_the_model_is_loaded(base_config, rows, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    nowhere = str(tmp_path / "no_model")  # loading it would fail: the folder error must come first
    with pytest.raises(PsipoInputError, match=r"output_dir: .*a_file is a file, not a folder"):
        run(base_config, rows, output_dir=str(a_file), model=nowhere)
    with pytest.raises(PsipoInputError, match=r"output_dir: .*a_file/run lies under .*a_file, which is a file"):
        run(base_config, rows, output_dir=str(a_file / "run"), model=nowhere)


def test_a_run_inside_another_run_folder_is_refused_before_anything_is_written(base_config, rows, tmp_path):
    run(base_config, rows, save_steps=1, max_steps=2)
    out = tmp_path / "run"
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    for inside in (out / "checkpoints", out / "final", out / "final" / "new"):
        with pytest.raises(PsipoInputError, match=rf"output_dir: .* lies inside the psipo run folder {out}; choose a folder outside it$"):
            run(base_config, rows, output_dir=str(inside), max_steps=1)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_a_live_run_holds_the_folder_and_a_killed_ones_lock_is_stale(base_config, rows, tmp_path):
    out = tmp_path / "run"
    holder = open_run_folder(out, resume=False, overwrite=False)
    try:
        with pytest.raises(PsipoInputError, match=rf"output_dir: {out} is in use by a live psipo run \(pid {os.getpid()} on "):
            run(base_config, rows)
    finally:
        holder.release()

    # A process that takes the lock and dies by SIGKILL leaves the file, but not the lock.
    code = f"from psipo.lm.run_folder import open_run_folder; open_run_folder({str(out)!r}, resume=False, overwrite=False); print('held', flush=True); import time; time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(PsipoInputError, match=rf"in use by a live psipo run \(pid {child.pid} "):
            run(base_config, rows)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (out / ".psipo.lock").is_file()
    run(base_config, rows)  # the stale lock is taken over
    assert (out / "final").is_dir()


def test_run_files_respect_the_umask_and_stale_temporaries_are_removed(base_config, rows, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / ".step-9.abcd1234.tmp").mkdir(parents=True)  # an interrupted checkpoint write
    (out / ".metrics.jsonl.abcd1234.tmp").write_text("torn")
    previous = os.umask(0o022)
    try:
        run(base_config, rows, save_steps=3)
    finally:
        os.umask(previous)
    assert not (out / "checkpoints" / ".step-9.abcd1234.tmp").exists()
    assert not (out / ".metrics.jsonl.abcd1234.tmp").exists()
    for path in (out / "config.yaml", out / "metrics.jsonl", out / "final" / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    for path in (out / "final", out / "checkpoints" / "step-3"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path


# ---------------------------------------------------------------------------------------
# Resume: the same run, continued exactly


def test_resume_refuses_a_changed_config_and_names_each_key(base_config, rows, tmp_path):
    run(base_config, rows, save_steps=2, max_steps=2)
    config_before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(PsipoInputError, match=r"resume: the config differs .*step-2.*: batch_size \(8 → 4\); tau \(0.1 → 0.5\)"):
        run(base_config, rows, save_steps=2, max_steps=4, resume=True, tau=0.5, batch_size=4)
    assert (tmp_path / "run" / "config.yaml").read_text() == config_before  # not overwritten
    # Other pairs under the same config: refused too.
    with pytest.raises(PsipoInputError, match="resume: train_data's pairs differ from those step-2 was trained with"):
        train(load_train_config(None, base_config | {"save_steps": 2, "max_steps": 4, "resume": True}), train_pairs=rows[1:])
    # Keys that only say how long the run goes, or what is logged and saved, may change.
    resumed = run(base_config, rows, save_steps=1, max_steps=4, logging_steps=2, resume=True)
    assert [r["step"] for r in resumed.history] == [1, 2, 4]
    assert "max_steps: 4" in (tmp_path / "run" / "config.yaml").read_text()
    # Fewer steps than the checkpoint holds: final/ would not be what the config asks for.
    final_before = (tmp_path / "run" / "final" / "model.safetensors").read_bytes()
    with pytest.raises(PsipoInputError, match=r"^resume: step-4 is past the 3 steps this config asks for .*at least 4"):
        run(base_config, rows, save_steps=1, max_steps=3, resume=True)
    assert (tmp_path / "run" / "final" / "model.safetensors").read_bytes() == final_before
    assert "max_steps: 4" in (tmp_path / "run" / "config.yaml").read_text()
    at_its_end = run(base_config, rows, save_steps=1, max_steps=4, resume=True)  # nothing to train: final/ again
    assert [r["step"] for r in at_its_end.history] == [1, 2, 4]
    assert (tmp_path / "run" / "final" / "model.safetensors").read_bytes() == final_before


def test_metrics_after_a_resume_equal_the_uninterrupted_runs(base_config, rows, tmp_path):
    # The checkpoint at step 3 falls inside the logging window of steps 3-4.
    keys = {"max_steps": 6, "save_steps": 3, "save_total_limit": None, "logging_steps": 2}
    full = run(base_config, rows, output_dir=str(tmp_path / "full"), **keys)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-3", interrupted / "checkpoints" / "step-3")
    log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    (interrupted / "metrics.jsonl").write_text(log[0] + "\n")
    resumed = run(base_config, rows, output_dir=str(interrupted), resume=True, **keys)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in full.history] == [2, 4, 6]
    timing = {"tokens_per_second", "peak_memory_mb"}
    for got, want in zip(resumed.history, full.history):
        assert got.keys() == want.keys()
        for key in want.keys() - timing:
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (got["step"], key)


def test_a_resume_compares_every_key_but_those_its_documentation_lets_change():
    # resume's documentation: "the config must match the checkpoint's except for max_steps,
    # epochs, cadences, progress, report_to, on_nonfinite, output_dir, cache_dir, push_to_hub
    # and hub_private" (and resume and overwrite themselves). A training key let through would
    # mix two runs.
    from psipo.lm.run_folder import config_differences

    may_change = {
        "max_steps", "epochs", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
        "progress", "report_to", "on_nonfinite", "output_dir", "cache_dir", "resume", "overwrite",
        "push_to_hub", "hub_private",
    }
    recorded = load_train_config(None, {"model": "m", "train_data": "t.jsonl"}).to_flat_dict()
    assert {"learning_rate", "adam_beta2", "seed", "tau", "loss", "batch_size", "lora_r"} <= recorded.keys()
    for key in recorded:
        changed = config_differences(recorded, recorded | {key: "another value"})
        assert [c.split(" ")[0] for c in changed] == ([] if key in may_change else [key]), key


def test_resume_without_a_checkpoint_or_a_folder_is_one_clear_line(base_config, rows):
    with pytest.raises(PsipoInputError, match=r"resume: no checkpoint in .*checkpoints to resume .*drop --resume"):
        run(base_config, rows, resume=True)
    with pytest.raises(PsipoInputError, match=r"resume'?: needs an output_dir to resume from \(output_dir is null\)"):
        run(base_config, rows, resume=True, output_dir=None)


def test_a_run_stopped_before_its_first_checkpoint_is_replaced_only_with_overwrite(tmp_path):
    # E.g. a judge that raised at step 1: config.yaml and metrics.jsonl, no checkpoint.
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("learning_rate: 0.1\n")
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(PsipoInputError, match=r"holds another run \(config.yaml, metrics.jsonl\); it has no checkpoint to resume; pass --overwrite to replace it"):
        open_run_folder(out, resume=False, overwrite=False)
    with pytest.raises(PsipoInputError, match=r"resume: no checkpoint in .*; drop --resume and pass --overwrite to start a fresh run$"):
        open_run_folder(out, resume=True, overwrite=False)
    assert (out / "config.yaml").read_text() == "learning_rate: 0.1\n"  # refusals touch nothing
    folder = open_run_folder(out, resume=False, overwrite=True)
    assert (out / "config.yaml").is_file()  # nothing goes before the new run writes
    folder.begin_writing()
    assert not (out / "config.yaml").exists() and not (out / "metrics.jsonl").exists()
    (out / "config.yaml").write_text("learning_rate: 0.2\n")
    folder.finish(failed=False)
    folder.release()
    assert (out / "config.yaml").read_text() == "learning_rate: 0.2\n" and not (out / ".psipo-replaced").exists()


def tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".psipo.lock"}


def test_overwrite_keeps_the_old_run_until_the_new_one_has_saved_something(base_config, rows, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(base_config, rows, save_steps=1, max_steps=2)
    before = tree(out)
    # Bad input found while setting up: the old run is never touched.
    with pytest.raises(PsipoInputError, match=r"train_data: .*not found"):
        train(load_train_config(None, base_config | {"overwrite": True, "train_data": str(tmp_path / "missing.jsonl")}))
    with pytest.raises(PsipoInputError, match=r"seed"):
        run(base_config, rows, overwrite=True, seed=-1)
    assert tree(out) == before
    # A new run that fails after its first write, before any checkpoint: the old run comes back.
    nan_on_call(monkeypatch, bad_calls={0})
    with pytest.raises(PsipoNonFiniteError, match=r"^step 1: non-finite loss"):
        run(base_config, rows, overwrite=True, save_steps=1, max_steps=3, tau=0.5)
    assert tree(out) == before
    # Killed after moving the old run aside (nothing of its own saved): the next run restores it.
    folder = open_run_folder(out, resume=False, overwrite=True)
    folder.begin_writing()
    (out / "config.yaml").write_text("the killed run's\n")
    folder.release()  # as the kernel does for a killed process: no finish
    with pytest.raises(PsipoInputError, match=r"holds another run \(config.yaml, metrics.jsonl, checkpoints/, final/\)"):
        run(base_config, rows)
    assert tree(out) == before and not (out / ".psipo-replaced").exists()
    # A new run that has saved a checkpoint replaces the old one for good, even if it then fails.
    nan_on_call(monkeypatch, bad_calls={1})
    with pytest.raises(PsipoNonFiniteError, match=r"^step 2: non-finite loss"):
        run(base_config, rows, overwrite=True, save_steps=1, max_steps=3, tau=0.5)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1"]
    assert "tau: 0.5" in (out / "config.yaml").read_text() and not (out / "final").exists()
    assert not (out / ".psipo-replaced").exists()


# ---------------------------------------------------------------------------------------
# Non-finite values never reach the disk


def test_a_diverging_run_stops_with_its_last_finite_checkpoint_intact(base_config, rows, tmp_path):
    with pytest.raises(PsipoNonFiniteError, match=r"^step (\d+): non-finite .*learning_rate 1e\+30 too high"):
        run(base_config, rows, learning_rate=1e30, max_steps=8, save_steps=1, save_total_limit=2)
    out = tmp_path / "run"
    checkpoint_weights_are_finite(out)
    assert not (out / "final").exists()


def test_a_loss_that_overflows_at_the_start_names_tau(base_config, rows, tmp_path):
    with pytest.raises(PsipoNonFiniteError, match=r"^step 1: non-finite loss, .*tau 1e-30 too small for loss ipo; nothing non-finite was saved"):
        run(base_config, rows, tau=1e-30)
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("save_steps", [2, None], ids=["checkpoint", "final"])
def test_weights_an_update_made_non_finite_are_never_saved(base_config, rows, tmp_path, monkeypatch, save_steps):
    # A step of finite loss and gradient may still leave a non-finite weight (an update that
    # overflows). The weights are checked before each checkpoint and before final/: the run
    # stops at that step, and neither step-2 nor final/ is written.
    step = torch.optim.AdamW.step
    calls = []

    def poisoning_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        calls.append(len(calls))
        if len(calls) == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    with pytest.raises(PsipoNonFiniteError, match=r"^step 2: non-finite weights, training stopped"):
        run(base_config, rows, max_steps=4 if save_steps else 2, save_steps=save_steps, save_total_limit=None)
    out = tmp_path / "run"
    assert not (out / "final").exists() and not (out / "checkpoints" / "step-2").exists()


def test_a_signal_during_the_last_step_waits_for_final_not_for_a_checkpoint(base_config, rows, tmp_path, monkeypatch):
    # The last step goes on to final/ (the run is complete) and only then stops; a checkpoint
    # of the last step in its place would leave a run without final/, for --resume to finish.
    step = torch.optim.AdamW.step
    calls = []

    def signalled_step(self, *args, **kwargs):
        calls.append(len(calls))
        if len(calls) == 3:  # max_steps 3
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", signalled_step)
    with pytest.raises(KeyboardInterrupt):
        run(base_config, rows, save_steps=None)
    out = tmp_path / "run"
    assert load_file(out / "final" / "model.safetensors")
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").iterdir())


def nan_on_call(monkeypatch, bad_calls):
    """Make the trainer's loss return NaN on the given (0-based) calls."""
    calls = []

    def patched_get_loss(name):
        loss = get_loss(name)

        def loss_fn(*args, **kwargs):
            values = loss(*args, **kwargs)
            calls.append(len(calls))
            return values * float("nan") if calls[-1] in bad_calls else values

        return loss_fn

    monkeypatch.setattr(psipo.lm.trainer, "get_loss", patched_get_loss)


def test_on_nonfinite_skip_leaves_the_weights_and_counts_the_step(base_config, rows, tmp_path, monkeypatch):
    keys = {"max_steps": 4, "logging_steps": 1, "learning_rate": 1e-3}
    nan_on_call(monkeypatch, bad_calls={2})  # the third step's loss
    with pytest.raises(PsipoNonFiniteError, match=r"^step 3: non-finite loss, training stopped"):
        run(base_config, rows, output_dir=str(tmp_path / "stop"), **keys)

    nan_on_call(monkeypatch, bad_calls={2})
    seen = {}

    def snapshot(step, model):
        seen[step] = [p.detach().clone() for p in model.parameters()]

    config = load_train_config(None, base_config | keys | {"output_dir": str(tmp_path / "skip"), "on_nonfinite": "skip"})
    skipped = train(config, train_pairs=rows, callback=snapshot)
    assert [r.get("skipped_steps", 0) for r in skipped.history] == [0, 0, 1, 0]
    assert "loss" not in skipped.history[2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in skipped.history if "loss" in r)
    same = [torch.equal(a, b) for a, b in zip(seen[2], seen[3])]
    moved = [torch.equal(a, b) for a, b in zip(seen[3], seen[4])]
    assert all(same) and not all(moved)  # step 3 left every weight as it was; step 4 trained
    # A skipped step keeps its place in the schedule (cosine over 4 steps, no warm-up): step 4
    # trains at step 4's learning rate, not at the one step 3 did not use.
    cosine = [1e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [r["lr"] for r in skipped.history] == pytest.approx(cosine, rel=1e-12)


def test_on_nonfinite_skip_stops_at_the_third_non_finite_step_in_a_row(base_config, rows, tmp_path, monkeypatch):
    keys = {"max_steps": 6, "on_nonfinite": "skip", "save_steps": 1}
    nan_on_call(monkeypatch, bad_calls={1, 2, 4})  # two in a row are skipped, and a third alone
    result = run(base_config, rows, **keys)
    assert [r.get("skipped_steps", 0) for r in result.history] == [0, 1, 1, 0, 1, 0]
    nan_on_call(monkeypatch, bad_calls={1, 2, 3})
    with pytest.raises(PsipoNonFiniteError, match=r"^step 4: non-finite loss, 3 steps in a row \(on_nonfinite: skip skips at most 2\), training stopped.*checkpoints/step-3"):
        run(base_config, rows, output_dir=str(tmp_path / "diverged"), **keys)


def test_only_the_main_process_of_a_launch_locks_the_folder(base_config, rows, tmp_path, monkeypatch):
    # Under torchrun / accelerate launch every rank trains into the same folder: rank 0 holds
    # it (here, this test), and the others must neither refuse it nor lock it.
    holder = open_run_folder(tmp_path / "run", resume=False, overwrite=False)
    try:
        monkeypatch.setenv("RANK", "1")
        run(base_config, rows, max_steps=1)
        monkeypatch.delenv("RANK")
        monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")  # an MPI launch (accelerate launch --mpirun_hostfile)
        run(base_config, rows, max_steps=1)
        monkeypatch.delenv("OMPI_COMM_WORLD_RANK")
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(PsipoInputError, match="in use by a live psipo run"):
            run(base_config, rows, max_steps=1, overwrite=True)
    finally:
        holder.release()


def test_the_first_ctrl_c_is_a_request_and_the_second_stops_at_once(capsys):
    from psipo.lm.loop import StopAtStepEnd

    previous = signal.getsignal(signal.SIGINT)
    with StopAtStepEnd() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the real signal, through the installed handler
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # not reached: the previous handler raises at once
    assert signal.getsignal(signal.SIGINT) is previous
    assert "stopping after this step" in capsys.readouterr().err


def test_a_first_sigterm_is_a_request_that_ends_in_psipo_terminated(capsys):
    from psipo.errors import PsipoTerminated
    from psipo.lm.loop import StopAtStepEnd

    calls = []

    def standing_for_the_default(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, standing_for_the_default)
    try:
        with StopAtStepEnd() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested and calls == []
            os.kill(os.getpid(), signal.SIGTERM)  # the second goes to the handler that was there
            assert calls == [signal.SIGTERM]
            with pytest.raises(PsipoTerminated):
                stop.stop()
        assert signal.getsignal(signal.SIGTERM) is standing_for_the_default  # restored
        assert "SIGTERM: stopping after this step" in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("why", ["multi-process", "ignored"])
def test_ctrl_c_is_left_alone_where_a_run_cannot_stop_at_a_step_end(why):
    from psipo.lm.loop import StopAtStepEnd

    before = signal.signal(signal.SIGINT, signal.SIG_IGN) if why == "ignored" else None
    try:
        handler = signal.getsignal(signal.SIGINT)
        with StopAtStepEnd(enabled=why != "multi-process") as stop:
            assert signal.getsignal(signal.SIGINT) is handler
        assert not stop.requested
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_final_is_saved_lets_it_finish_then_stops(base_config, rows, tmp_path, monkeypatch, capsys, signum):
    # With save_steps null, final/ is the only copy of the training: a signal that tore it off
    # (the default SIGTERM, Python's KeyboardInterrupt) would lose the whole run.
    from psipo.errors import PsipoTerminated
    from psipo.lm import checkpoint

    save_final = checkpoint.save_final

    def signalled_mid_save(*args, **kwargs):
        os.kill(os.getpid(), signum)
        save_final(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_final", signalled_mid_save)
    stand_in = []  # in place of the default SIGTERM, which would end pytest
    previous = signal.signal(signal.SIGTERM, lambda s, f: stand_in.append(s))
    try:
        with pytest.raises(KeyboardInterrupt if signum == signal.SIGINT else PsipoTerminated):
            run(base_config, rows, save_steps=None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stand_in == []
    assert load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert "final/ is saved" in capsys.readouterr().err


def test_resuming_another_commands_run_names_the_command_that_wrote_it(base_config, rows, tmp_path, monkeypatch):
    from psipo.lm.online import load_online_config, train_online
    from psipo.lm.reward import load_reward_config, train_reward

    (tmp_path / "unused.py").write_text("def judge(prompts, a, b):\n    raise AssertionError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run(base_config, rows, max_steps=1, save_steps=1)  # a psipo train run
    common = {"model": base_config["model"], "output_dir": base_config["output_dir"], "resume": True, "progress": False}
    reward = load_reward_config(None, common | {"train_data": "unused.jsonl"})
    with pytest.raises(PsipoInputError, match=r"^resume: .*step-1 was written by psipo train, not psipo reward; resume it with psipo train"):
        train_reward(reward)
    online = load_online_config(None, common | {"prompts": "unused.jsonl", "judge": "unused:judge"})
    with pytest.raises(PsipoInputError, match=r"^resume: .*step-1 was written by psipo train, not psipo online;") as refused:
        train_online(online)
    assert len(str(refused.value)) < 300  # not every key of two configs that share few


def test_a_damaged_newest_checkpoint_names_the_older_one_to_resume_from(base_config, rows, tmp_path):
    run(base_config, rows, max_steps=4, save_steps=2)
    newest = tmp_path / "run" / "checkpoints" / "step-4"
    weights = newest / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a disk that failed, a copy cut short
    with pytest.raises(PsipoInputError, match=r"^resume: cannot restore .*step-4: .*; move step-4 out of .*checkpoints to resume from step-2$"):
        run(base_config, rows, max_steps=6, save_steps=2, resume=True)
    shutil.move(newest, tmp_path / "damaged-step-4")
    assert run(base_config, rows, max_steps=6, save_steps=2, resume=True).history[-1]["step"] == 6


def test_a_resume_may_find_the_same_data_elsewhere_but_not_other_data(base_config, rows, tmp_path, monkeypatch):
    from psipo.lm.fixtures import write_jsonl

    monkeypatch.chdir(tmp_path)
    write_jsonl(rows, tmp_path / "train.jsonl")
    train(load_train_config(None, base_config | {"train_data": "train.jsonl", "max_steps": 1, "save_steps": 1}))
    moved = write_jsonl(rows, tmp_path / "scratch" / "train.jsonl")  # launched from elsewhere, or the data moved
    again = load_train_config(None, base_config | {"train_data": str(moved), "max_steps": 2, "resume": True})
    assert [r["step"] for r in train(again).history] == [1, 2]
    other = write_jsonl(rows[::-1], tmp_path / "other.jsonl")
    with pytest.raises(PsipoInputError, match=r"^resume: train_data's pairs differ from those step-\d+ was trained"):
        train(load_train_config(None, base_config | {"train_data": str(other), "max_steps": 3, "save_steps": 1, "resume": True}))


@pytest.mark.parametrize("command", ["train", "reward"])
@pytest.mark.parametrize("key", ["train_data", "eval_data"])
def test_data_in_the_run_folders_final_or_checkpoints_are_refused_before_overwrite_deletes_them(tmp_path, command, key):
    # --overwrite replaces final/ and rotation removes checkpoints: a run read its pairs from
    # there, then deleted the user's file with the old entry
    from psipo.lm.reward import load_reward_config

    load = load_train_config if command == "train" else load_reward_config
    for entry in ("final", "checkpoints/step-1"):
        data = tmp_path / "run" / entry / "pairs.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n')
        keys = {"model": "m", "train_data": "t.jsonl", key: str(data), "output_dir": str(tmp_path / "run"), "overwrite": True}
        where = entry.split("/")[0]
        with pytest.raises(PsipoInputError, match=rf"^--{key}: {data} lies in {where}/ of output_dir {tmp_path / 'run'}, which this run replaces"):
            load(None, keys)
        assert data.is_file()
