"""push_to_hub mutation audit: a run without it needs no token, the upload goes to the repository
the Hub created, and a failure to create that repository is the same one line as a failed upload.

The Hub is never contacted: huggingface_hub's HfApi calls are replaced by recorders."""

from __future__ import annotations

from types import SimpleNamespace

import huggingface_hub
import pytest
import test_upload  # the module's run folder inputs and its train command
from huggingface_hub import RepoUrl

from psipo.lm.upload import check_can_push

inputs = test_upload.inputs
run_train = test_upload.run_train


@pytest.fixture
def hub(monkeypatch):
    """A token, the Hub on, and HfApi's calls recorded; a bare name is created in the token
    owner's namespace ("me"), as the Hub does."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id}))
        return RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'me/' + repo_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        calls.append(("upload_folder", {"repo_id": repo_id}))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


@pytest.mark.parametrize("hub_private", [True, False])
def test_without_push_to_hub_neither_a_token_nor_the_hub_is_needed(monkeypatch, hub_private):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    check_can_push(SimpleNamespace(push_to_hub=None, hub_private=hub_private))  # no error: nothing will be sent


def test_final_goes_to_the_repository_the_hub_created(inputs, tmp_path, hub, capsys):
    # A name without a namespace is created in the user's; the upload must go to that repository.
    code, out = run_train(inputs, tmp_path, capsys, "--push_to_hub", "tiny-ipo")
    assert code == 0, out.err
    assert hub == [("create_repo", {"repo_id": "tiny-ipo"}), ("upload_folder", {"repo_id": "me/tiny-ipo"})]
    assert out.out.splitlines()[-1].endswith("uploaded to https://huggingface.co/me/tiny-ipo")


def test_a_repository_that_cannot_be_created_is_one_line_and_final_is_kept(inputs, tmp_path, hub, capsys, monkeypatch):
    def forbidden(self, repo_id, **kwargs):
        raise RuntimeError("403 Forbidden: you cannot create repositories in org\ndetail")  # not an OSError

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", forbidden)
    code, out = run_train(inputs, tmp_path, capsys, "--push_to_hub", "org/tiny-ipo")
    final = tmp_path / "run" / "final"
    assert code == 4 and hub == []  # nothing uploaded
    assert out.err.strip().splitlines()[-1] == (
        f"psipo: error: push_to_hub: the run is complete and final/ is saved in {final}, but uploading it to "
        f"org/tiny-ipo failed (403 Forbidden: you cannot create repositories in org); upload it with: "
        f"hf upload org/tiny-ipo {final} ."
    )
    assert (final / "README.md").is_file() and (final / "model.safetensors").is_file()
