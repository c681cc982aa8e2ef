"""push_to_hub: checked before training, final/ uploaded once complete, a failed upload loses nothing.

The Hub is never contacted: huggingface_hub's HfApi calls are replaced by recorders."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
from huggingface_hub import RepoUrl

from psipo.errors import PsipoInputError
from psipo.lm.config import load_train_config
from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl
from psipo.lm.online import load_online_config


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("upload")
    make_tiny_model_dir(root / "model", layers=1, hidden=16, heads=2, vocab=64)
    write_jsonl(make_synthetic_preferences(8, vocab=64, seed=1), root / "pairs.jsonl")
    return root


@pytest.fixture
def hub(monkeypatch):
    """A token, the Hub switched on, and HfApi's create_repo/upload_folder recorded (each
    upload lists the files of the folder at the time of the call)."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        files = sorted(p.name for p in folder_path.iterdir())
        calls.append(("upload_folder", {"repo_id": repo_id, "folder_path": folder_path, "files": files, "message": commit_message}))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def run_train(inputs, tmp_path, capsys, *extra):
    from psipo.cli import main

    args = [
        "train", "--model", inputs / "model", "--train_data", inputs / "pairs.jsonl", "--output_dir", tmp_path / "run",
        "--cache_dir", tmp_path / "cache", "--max_steps", "1", "--batch_size", "4", "--progress", "false", *extra,
    ]  # fmt: skip
    code = main([str(a) for a in args])
    return code, capsys.readouterr()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"push_to_hub": "two words"}, "--push_to_hub: 'two words' is no Hub repository id; give user/name or org/name"),
        ({"push_to_hub": "a/b/c"}, "--push_to_hub: 'a/b/c' is no Hub repository id"),
        ({"push_to_hub": ""}, "--push_to_hub: '' is no Hub repository id"),
        ({"push_to_hub": "me/model", "output_dir": None}, "--push_to_hub: uploads the run folder's final/, and output_dir is null"),
        ({"hub_private": False}, "--hub_private: is used only with push_to_hub"),
    ],
)
def test_bad_push_settings_are_one_line_naming_the_key(overrides, message):
    # (given as overrides, as the command line gives them: the error names the option)
    for load in (load_train_config, load_online_config):
        with pytest.raises(PsipoInputError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
            load(None, {"model": "m", "train_data": "p.jsonl", **overrides} if load is load_train_config else {"model": "m", "prompts": "p.jsonl", **overrides})


def test_a_complete_run_uploads_final_with_its_card_as_one_commit(inputs, tmp_path, hub, capsys):
    code, out = run_train(inputs, tmp_path, capsys, "--push_to_hub", "me/tiny-ipo")
    assert code == 0, out.err
    assert [name for name, _ in hub] == ["create_repo", "upload_folder"]
    assert hub[0][1] == {"repo_id": "me/tiny-ipo", "private": True, "exist_ok": True}
    upload = hub[1][1]
    assert upload["repo_id"] == "me/tiny-ipo" and upload["folder_path"] == tmp_path / "run" / "final"
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(upload["files"])
    assert upload["message"] == "psipo train: final model"
    assert out.out.splitlines()[-1].endswith(f"final model: {tmp_path / 'run' / 'final'}, uploaded to https://huggingface.co/me/tiny-ipo")


def test_hub_private_false_creates_a_public_repository(inputs, tmp_path, hub, capsys):
    code, out = run_train(inputs, tmp_path, capsys, "--push_to_hub", "me/tiny-ipo", "--hub_private", "false")
    assert code == 0, out.err
    assert hub[0][1]["private"] is False


def test_a_failed_upload_keeps_final_and_says_how_to_upload_it(inputs, tmp_path, hub, capsys, monkeypatch):
    def unreachable(self, **kwargs):
        raise ConnectionError("Connection refused\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", unreachable)
    code, out = run_train(inputs, tmp_path, capsys, "--push_to_hub", "me/tiny-ipo")
    final = tmp_path / "run" / "final"
    assert code == 4
    assert out.err.strip().splitlines()[-1] == (
        f"psipo: error: push_to_hub: the run is complete and final/ is saved in {final}, but uploading it "
        f"to me/tiny-ipo failed (Connection refused); upload it with: hf upload me/tiny-ipo {final} ."
    )
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(final).config.vocab_size == 64  # whole and loadable
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1


@pytest.mark.parametrize("cause", ["no token", "offline"])
def test_an_upload_that_cannot_happen_is_refused_before_training(inputs, tmp_path, hub, capsys, monkeypatch, cause):
    if cause == "no token":
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
        want = "psipo: error: push_to_hub: no Hugging Face token; log in (hf auth login) or set HF_TOKEN, or remove push_to_hub"
    else:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        want = "psipo: error: push_to_hub: HF_HUB_OFFLINE is set, so final/ could not be uploaded; unset it, or remove push_to_hub"
    code, out = run_train(inputs, tmp_path, capsys, "--push_to_hub", "me/tiny-ipo")
    assert code == 2 and out.err.strip().splitlines() == [want]
    assert not (tmp_path / "run").exists() and hub == []  # nothing written, nothing sent
