"""The run folder (``output_dir``) belongs to one run, held by one live process.

:func:`open_run_folder` is the first thing a training run does, before any model is loaded:

1. the folder must be usable: not a file, not under a file, creatable and writable;
2. a lock (``.psipo.lock``, an advisory ``flock``) keeps a second live run out; the kernel
   drops it when its process dies, however it dies, so a lock left by a killed run is
   stale by construction and is taken over;
3. a fresh run refuses a folder holding another run's files (``config.yaml``,
   ``metrics.jsonl``, ``checkpoints/``, ``final/``) unless ``overwrite`` replaces them;
   a resumed run needs a checkpoint, whose recorded config must match the new one except
   for the keys in :data:`RESUMABLE_KEYS`;
4. temporaries of writes that a crash interrupted are removed.

``overwrite`` never loses the old run to a new one that fails: the old files stay in place
while the new run loads and checks its inputs, are moved aside (into :data:`REPLACED_NAME`)
by :meth:`RunFolder.begin_writing` just before its first write, and are deleted only once it
has saved something of its own (a checkpoint or ``final/``); a run that fails before that
removes its own files and puts the old ones back (:meth:`RunFolder.finish`). A process killed
in between leaves the folder aside, which the next run to open the folder settles the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

from psipo.errors import PsipoInputError

RUN_ENTRIES = ("config.yaml", "metrics.jsonl", "checkpoints", "final")
"""What a run writes into its folder, and what ``overwrite: true`` removes (nothing else)."""

RESUMABLE_KEYS = frozenset(
    {
        "max_steps", "epochs",  # how long the run goes on
        "logging_steps", "eval_steps", "save_steps", "save_total_limit",  # cadences
        "early_stopping_patience",  # psipo reward: when to stop, like max_steps
        "progress", "report_to", "on_nonfinite",  # what is shown and how failures are met
        "resume", "overwrite", "output_dir", "cache_dir",  # where things are, not what they are
        "push_to_hub", "hub_private",  # where final/ goes
    }
)
"""Config keys that may differ between a checkpoint and the run that resumes it."""

DATA_KEYS = {"train_data": "train", "prompts": "train", "eval_data": "eval", "eval_prompts": "eval", "eval_pairs": "eval"}
"""Keys that say where the data are, and the fingerprint of what they hold: a resume may find
the same data at another path (launched from another folder, data moved), since the
checkpoint's fingerprint of their contents is checked once they are loaded."""

LOCK_NAME = ".psipo.lock"
REPLACED_NAME = ".psipo-replaced"
"""Where ``overwrite`` keeps the run it replaces until the new run has saved something."""


@dataclasses.dataclass
class RunFolder:
    """A run folder held by this process (``release`` gives it up)."""

    path: Path
    lock_fd: int | None
    replacing: list[str] = dataclasses.field(default_factory=list)
    """The entries of the run that ``overwrite`` replaces, still in place (until begin_writing)."""
    created: bool = False
    """This run made the folder: one that fails before writing anything leaves none behind."""

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def begin_writing(self) -> None:
        """Called just before the run's first write: the run it replaces moves aside."""
        if self.replacing:
            aside = self.path / REPLACED_NAME
            aside.mkdir()
            for name in self.replacing:
                os.replace(self.path / name, aside / name)
            self.replacing = []

    def finish(self, *, failed: bool) -> None:
        """Settle a replaced run (see the module docstring): deleted for good once this run has
        saved a checkpoint or final/ (or ended well), else restored in place of this run's files."""
        _settle_replaced(self.path, keep_new=not failed)

    def release(self) -> None:
        """Give up the lock (the file stays: unlinking it would race with a waiting run)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _lock(path: Path) -> int:
    """Take the folder's lock or say which live process holds it."""
    from psipo._io import lock_folder

    return lock_folder(path, LOCK_NAME, key="output_dir", what="psipo run")


def _run_files(path: Path) -> list[str]:
    """The entries of a run present in ``path`` (checkpoints/ only if it holds a checkpoint)."""
    from psipo.lm.checkpoint import list_checkpoints

    present = [name for name in RUN_ENTRIES if (path / name).exists() or (path / name).is_symlink()]
    return [name for name in present if name != "checkpoints" or list_checkpoints(path)]


def _clear(path: Path, names: list[str]) -> None:
    for name in names:
        entry = path / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _settle_replaced(path: Path, *, keep_new: bool) -> None:
    """The run moved aside by ``overwrite``, if any: deleted when the new run is kept (it ended
    well, or saved a checkpoint or final/), else put back in place of the new run's files."""
    aside = path / REPLACED_NAME
    if not aside.is_dir():
        return
    new = _run_files(path)
    if keep_new or "final" in new or "checkpoints" in new:
        shutil.rmtree(aside)
        return
    _clear(path, new)
    for entry in aside.iterdir():
        if entry.name == "checkpoints" and (path / "checkpoints").is_dir():
            shutil.rmtree(path / "checkpoints")  # an empty one of the new run's (it saved nothing)
        os.replace(entry, path / entry.name)
    aside.rmdir()


def open_run_folder(output_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> RunFolder:
    """Check, lock and prepare ``output_dir`` for one run (see the module docstring)."""
    from psipo._io import prepare_output_folder, remove_stale_temporaries
    from psipo.lm.checkpoint import list_checkpoints

    enclosing = next((p for p in Path(output_dir).absolute().parents if (p / LOCK_NAME).is_file()), None)
    if enclosing is not None:  # its checkpoints/ or final/ would be written over by this run
        raise PsipoInputError(
            f"output_dir: {output_dir} lies inside the psipo run folder {enclosing}; choose a folder outside it"
        )
    created = not Path(output_dir).expanduser().exists()
    path = prepare_output_folder(output_dir, "output_dir")  # before anything is computed
    folder = RunFolder(path, _lock(path), created=created)
    try:
        # Only now, holding the lock, can no live writer own a temporary here.
        remove_stale_temporaries(path)
        remove_stale_temporaries(folder.checkpoints)
        _settle_replaced(path, keep_new=False)  # left by a killed run with --overwrite
        present = _run_files(path)
        resumable = bool(list_checkpoints(path))
        if resume and not resumable:
            # A run that stopped before its first checkpoint leaves files a fresh start must replace.
            fresh = "drop --resume and pass --overwrite" if present else "drop --resume"
            raise PsipoInputError(
                f"resume: no checkpoint in {folder.checkpoints} to resume (save_steps sets how often "
                f"checkpoints are written); {fresh} to start a fresh run"
            )
        if not resume and present:
            if not overwrite:
                shown = ", ".join(name + ("/" if (path / name).is_dir() else "") for name in present)
                instead = "pass --resume to continue it, --overwrite" if resumable else "it has no checkpoint to resume; pass --overwrite"
                raise PsipoInputError(
                    f"output_dir: {path} holds another run ({shown}); {instead} to replace it, or choose another output_dir"
                )
            folder.replacing = present  # moved aside only when the new run writes (begin_writing)
    except BaseException:
        if created:
            _remove_if_only_the_lock(path)
        folder.release()
        raise
    return folder


def config_differences(
    recorded: dict[str, Any], current: dict[str, Any], *, fingerprinted: Collection[str] = ()
) -> list[str]:
    """``key (old → new)`` for each key outside :data:`RESUMABLE_KEYS` whose value changed; a
    path of :data:`DATA_KEYS` may change to another path when its data's fingerprint is
    among those the checkpoint recorded (``fingerprinted``)."""
    changed = []
    for key in sorted(set(recorded) | set(current)):
        if key in RESUMABLE_KEYS:
            continue
        if DATA_KEYS.get(key) in fingerprinted and recorded.get(key) and current.get(key):
            continue
        old, new = recorded.get(key, "unset"), current.get(key, "unset")
        if old != new:
            changed.append(f"{key} ({old!r} → {new!r})")
    return changed


def command_of(config: dict[str, Any]) -> str:
    """The command whose config this is, by a key only it has."""
    return "psipo reward" if "reward_l2" in config else "psipo online" if "algorithm" in config else "psipo train"


def check_resumable(
    checkpoint: Path, recorded: dict[str, Any] | None, current: dict[str, Any], *, fingerprinted: Collection[str] = ()
) -> None:
    """Refuse to resume ``checkpoint`` with a config that would mix two runs; name each key.
    ``fingerprinted``: the data whose fingerprints the checkpoint recorded (see :data:`DATA_KEYS`)."""
    if recorded is None:
        raise PsipoInputError(
            f"resume: {checkpoint} records no config, so a resume cannot be checked against it; "
            "it was written by an older psipo: start a fresh run"
        )
    if (written_by := command_of(recorded)) != (resuming_with := command_of(current)):
        # Two configs that share few keys: listing them all would hide what went wrong.
        raise PsipoInputError(
            f"resume: {checkpoint} was written by {written_by}, not {resuming_with}; resume it with "
            f"{written_by}, or start a fresh {resuming_with} run in another output_dir"
        )
    changed = config_differences(recorded, current, fingerprinted=fingerprinted)
    if changed:
        raise PsipoInputError(
            f"resume: the config differs from the one {checkpoint.name} was trained with: "
            f"{'; '.join(changed)}. Undo the change, or start a fresh run in another output_dir"
        )


@contextlib.contextmanager
def held_run_folder(output_dir: str | os.PathLike | None, *, resume: bool, overwrite: bool):
    """:func:`open_run_folder` for the length of a ``with`` block; None for ``output_dir`` None.

    In a multi-process launch (torchrun, accelerate launch, MPI) only the main process (rank
    0) checks and locks the folder: the others belong to the same run.
    """
    if output_dir is None:
        yield None
        return
    ranks = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
    if int(next((os.environ[k] for k in ranks if k in os.environ), "0")) != 0:
        yield RunFolder(Path(output_dir), None)
        return
    folder = open_run_folder(output_dir, resume=resume, overwrite=overwrite)
    try:
        yield folder
    except BaseException:
        folder.finish(failed=True)
        if folder.created:
            _remove_if_only_the_lock(folder.path)
        raise
    else:
        folder.finish(failed=False)
    finally:
        folder.release()


def _remove_if_only_the_lock(path: Path) -> None:
    """Remove a folder that holds nothing but this run's lock (a run that failed before its
    first write, in a folder it made): bad input leaves no folder behind. The lock goes while
    still held, so that no other run can take a lock on a file about to disappear."""
    if [entry.name for entry in path.iterdir()] != [LOCK_NAME]:
        return
    with contextlib.suppress(OSError):  # something appeared meanwhile: leave the folder
        (path / LOCK_NAME).unlink()
        path.rmdir()


def run_folder_mistaken_for_model(key: str, name: str) -> PsipoInputError | None:
    """The error for a psipo run folder (config.yaml and final/ in it) named where a model is
    wanted: its model is ``final/``. None for any other path."""
    folder = Path(name).expanduser()
    if not ((folder / "config.yaml").is_file() and (folder / "final").is_dir()):
        return None
    return PsipoInputError(f"{key}: {name} is a psipo run folder, not a model; its model is {folder / 'final'}: name that")


def config_beside_final(path: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The ``config.yaml`` of the psipo run whose ``final/`` folder is ``path``, and its mapping;
    None when ``path`` is not a run's ``final/`` folder with a config.yaml beside it."""
    from psipo._config import read_yaml_mapping

    path = Path(path).expanduser()
    run_config = path.parent / "config.yaml"
    if not (path.is_dir() and path.name == "final" and run_config.is_file()):
        return None
    data, _ = read_yaml_mapping(run_config)
    return run_config, data if isinstance(data, dict) else {}
