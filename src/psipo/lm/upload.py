"""``push_to_hub``: the run's ``final/`` folder uploaded to a Hugging Face Hub repository.

What can be known before training is checked before training (a run of hours must not end in
"no token"): the key names a repository, the run has a folder, the Hub is not switched off and
a token is there. Nothing is sent until the run is complete: the repository is created (private
unless ``hub_private: false``; an existing one keeps its visibility) and ``final/``, model card
included, is uploaded as one commit once it is saved. A failed upload therefore loses nothing:
its one line says where ``final/`` is and the command that uploads it later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psipo.errors import PsipoInputError, PsipoUploadError, first_line


def check_push_settings(run: Any) -> None:
    """``push_to_hub`` and ``hub_private`` of a run config, checked in one line each."""
    if run.push_to_hub is None:
        if not run.hub_private:
            raise PsipoInputError(
                "key 'hub_private': is used only with push_to_hub; set push_to_hub, or remove hub_private"
            )
        return
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(run.push_to_hub)
    except ValueError:
        raise PsipoInputError(
            f"key 'push_to_hub': {run.push_to_hub!r} is no Hub repository id; give user/name or org/name"
        ) from None
    if run.output_dir is None:
        raise PsipoInputError("key 'push_to_hub': uploads the run folder's final/, and output_dir is null; set output_dir")


def check_can_push(run: Any) -> None:
    """Before training: refuse a ``push_to_hub`` whose upload could not happen (the Hub switched
    off, no token). Sends nothing."""
    if run.push_to_hub is None:
        return
    from huggingface_hub import constants, get_token

    from psipo.lm.hub import offline_variable

    if constants.HF_HUB_OFFLINE:
        raise PsipoInputError(
            f"push_to_hub: {offline_variable()} is set, so final/ could not be uploaded; unset it, or remove push_to_hub"
        )
    if get_token() is None:
        raise PsipoInputError(
            "push_to_hub: no Hugging Face token; log in (hf auth login) or set HF_TOKEN, or remove push_to_hub"
        )


def push_final(run: Any, final: Path, *, command: str) -> str:
    """Create ``run.push_to_hub`` if missing and upload ``final`` to it as one commit; the
    repository's URL. A failure is a :class:`PsipoUploadError` naming ``final`` and the command
    that uploads it later."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(run.push_to_hub, private=run.hub_private, exist_ok=True)
        api.upload_folder(repo_id=url.repo_id, folder_path=final, commit_message=f"{command}: final model")
    except Exception as exc:  # no network, no permission, a quota: final/ is safe on disk either way
        from shlex import quote

        raise PsipoUploadError(
            f"push_to_hub: the run is complete and final/ is saved in {final}, but uploading it to "
            f"{run.push_to_hub} failed ({first_line(exc)}); upload it with: hf upload {run.push_to_hub} {quote(str(final))} ."
        ) from None
    return str(url)
