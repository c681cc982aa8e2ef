"""Hostile inputs to the day's new features (psipo evaluate --pairs, push_to_hub): each found
wrong once, and what happens now. The Hub is never contacted (HfApi is replaced)."""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import huggingface_hub
import pytest

from psipo.errors import PsipoUploadError
from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl


def test_evaluate_pairs_on_one_pair_says_pair_not_prompt(tmp_path, capsys):
    # One pair has no interval: the line said "no interval from one prompt" and "on 1 pairs".
    from psipo.cli import main

    model, pairs = tmp_path / "model", tmp_path / "pairs.jsonl"
    make_tiny_model_dir(model, layers=1, hidden=16, heads=2, vocab=64)
    write_jsonl(make_synthetic_preferences(4, vocab=64, seed=2), pairs)
    code = main([
        "evaluate", "--model", str(model), "--baseline", str(model), "--pairs", str(pairs),
        "--pairs_split", "train[:1]", "--tau", "0.5", "--out", str(tmp_path / "ev"), "--progress", "false",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "(no interval from one pair)" in out.out and "one prompt" not in out.out
    assert " on 1 pair; " in out.out
    report = (tmp_path / "ev" / "evaluation.md").read_text(encoding="utf-8")
    assert "one pair" in report and "one prompt" not in report
    assert " on 1 pair of " in report


def test_failed_upload_names_a_command_that_works_for_a_folder_with_a_space(tmp_path, monkeypatch):
    # The hint "hf upload REPO FINAL ." was not shell-quoted: a run folder with a space split it.
    from psipo.lm.upload import push_final

    def create_repo(self, repo_id, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    final = tmp_path / "my runs" / "final"
    final.mkdir(parents=True)
    (final / "README.md").write_text("card", encoding="utf-8")
    run = SimpleNamespace(push_to_hub="me/model", hub_private=True)
    with pytest.raises(PsipoUploadError) as caught:
        push_final(run, final, command="psipo train")
    command = str(caught.value).split("upload it with: ", 1)[1]
    assert shlex.split(command) == ["hf", "upload", "me/model", str(final), "."]
    assert (final / "README.md").read_text(encoding="utf-8") == "card"


def test_model_card_commands_quote_a_run_folder_with_a_space(tmp_path, capsys):
    # The card's "psipo evaluate --model FINAL ..." split at a space in the run folder's path.
    from psipo.cli import main

    model, pairs = tmp_path / "model", tmp_path / "pairs.jsonl"
    make_tiny_model_dir(model, layers=1, hidden=16, heads=2, vocab=64)
    write_jsonl(make_synthetic_preferences(4, vocab=64, seed=3), pairs)
    final = tmp_path / "my runs" / "final"
    code = main([
        "train", "--model", str(model), "--train_data", str(pairs), "--output_dir", str(final.parent),
        "--cache_dir", str(tmp_path / "cache"), "--max_steps", "1", "--batch_size", "4", "--progress", "false",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    card = (final / "README.md").read_text(encoding="utf-8")
    commands = [part for part in card.split("`") if part.startswith("psipo evaluate --model")]
    assert commands and all(shlex.split(c)[3] == str(final) for c in commands)


@pytest.mark.parametrize("mode", ["pairs", "pairs with baseline", "prompts"])
def test_evaluate_names_final_when_given_a_run_folder_as_model(tmp_path, capsys, mode):
    # A run folder named as the model said "baseline: required" or "has no tokenizer".
    from psipo.cli import main

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("model: m\n", encoding="utf-8")
    data = tmp_path / "pairs.jsonl"
    write_jsonl(make_synthetic_preferences(2, vocab=64, seed=4), data)
    extra = {
        "pairs": ["--pairs", str(data)],
        "pairs with baseline": ["--pairs", str(data), "--baseline", str(tmp_path / "base")],
        "prompts": ["--prompts", str(data), "--judge", "length"],
    }[mode]
    code = main(["evaluate", "--model", str(run), *extra, "--out", str(tmp_path / "ev"), "--progress", "false"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"psipo: error: model: {run} is a psipo run folder, not a model; its model is {run / 'final'}: name that\n"


@pytest.mark.parametrize("name", ["evaluation.json", "evaluation.md"])
def test_evaluate_refuses_a_folder_in_place_of_its_report_before_scoring(tmp_path, capsys, name):
    # A folder named evaluation.md in out failed only after every pair was scored, and
    # evaluation.json was written beside it.
    from psipo.cli import main

    model, pairs = tmp_path / "model", tmp_path / "pairs.jsonl"
    make_tiny_model_dir(model, layers=1, hidden=16, heads=2, vocab=64)
    write_jsonl(make_synthetic_preferences(2, vocab=64, seed=5), pairs)
    (tmp_path / "ev" / name).mkdir(parents=True)
    code = main([
        "evaluate", "--model", str(model), "--baseline", str(model), "--pairs", str(pairs),
        "--out", str(tmp_path / "ev"), "--progress", "false",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"psipo: error: out: {tmp_path / 'ev' / name} is a folder, not a file psipo can write; move it away\n"
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [name]


def test_evaluate_pairs_refuses_a_causal_lm_beside_a_reward_runs_config(tmp_path, capsys):
    # A causal LM's final/ with a psipo reward run's config.yaml beside it was scored as a
    # reward model, its head fresh and random: accuracy 0, exit 0.
    from psipo.cli import main

    pairs = tmp_path / "pairs.jsonl"
    make_tiny_model_dir(tmp_path / "run" / "final", layers=1, hidden=16, heads=2, vocab=64)
    (tmp_path / "run" / "config.yaml").write_text(f"model: m\ntrain_data: {pairs}\nreward_l2: 0.0\n", encoding="utf-8")
    write_jsonl(make_synthetic_preferences(2, vocab=64, seed=6), pairs)
    final = tmp_path / "run" / "final"
    code = main(["evaluate", "--model", str(final), "--pairs", str(pairs), "--out", str(tmp_path / "ev"), "--progress", "false"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"psipo: error: model: {final} holds a LlamaForCausalLM, not a reward model") and err.count("\n") == 1
    assert not (tmp_path / "ev").exists()


def test_a_run_that_fails_before_writing_leaves_no_folder_it_made(tmp_path, capsys):
    # A model that cannot load, or a --resume with nothing to resume, left output_dir behind
    # with only .psipo.lock in it; a folder that was there before stays.
    from psipo.cli import main

    write_jsonl(make_synthetic_preferences(4, vocab=64, seed=2), tmp_path / "pairs.jsonl")
    common = ["train", "--train_data", str(tmp_path / "pairs.jsonl"), "--progress", "false"]
    assert main([*common, "--model", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "runs" / "new")]) == 2
    assert "no such local folder" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "new").exists()
    assert main([*common, "--model", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "r2"), "--resume"]) == 2
    assert "resume: no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
    (tmp_path / "mine").mkdir()
    assert main([*common, "--model", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir()  # the user's own folder is kept
