"""Atomic file output: write to a temporary sibling, then rename over the target.

A crash mid-write leaves the previous file (or none) in place, never a truncated one (what is
renamed into place was flushed to disk first, so this holds when the machine crashes too); what
it leaves behind is a temporary sibling, which :func:`remove_stale_temporaries` clears on the
next run. Everything written here gets the permissions the user's umask asks for (0644 files and
0755 folders under the usual umask 022), as if it had been created by a plain ``open``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from psipo.errors import PsipoInputError

# mkstemp/mkdtemp name a temporary ".NAME.XXXXXXXX.tmp" (8 random characters from
# [a-z0-9_]); atomic_directory moves the folder it replaces to ".NAME.old".
_TEMPORARY_SUFFIX = ".tmp"
_REPLACED_SUFFIX = ".old"
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(_TEMPORARY_SUFFIX))
_REPLACED_NAME = re.compile(r"\.(?P<name>.+)" + re.escape(_REPLACED_SUFFIX))

_umask_lock = threading.Lock()


def _umask_from_proc() -> int | None:
    """The umask from /proc/self/status (Linux ≥ 4.7), read without changing it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.cache
def _umask_by_setting() -> int:
    # os.umask can only be read by setting it: a file another thread creates in between gets
    # the temporary (restrictive) mask, so this is done once and cached. The lock stops two
    # first calls from reading each other's temporary mask and restoring the wrong one.
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _current_umask() -> int:
    """The process's umask. Read afresh where the system allows it, since a program may change it."""
    mask = _umask_from_proc()
    return _umask_by_setting() if mask is None else mask


def _apply_umask(folder: Path) -> None:
    """Give what others wrote into ``folder`` the umask's permissions: some writers (safetensors
    via save_pretrained) create 0600 files whatever the umask."""
    mask = _current_umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask, follow_symlinks=False)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), 0o666 & ~mask)


def _sync(path: str | os.PathLike) -> None:
    """Flush a file's or folder's contents (a folder's: its entries) to disk. Some file systems
    refuse to sync a folder: that is no failure of the write."""
    folder = os.path.isdir(path)
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def _sync_tree(folder: Path) -> None:
    """:func:`_sync` everything in ``folder`` and the folder itself, before it is renamed into
    place: the writers that fill it (save_pretrained, safetensors) do not, and a machine that
    crashes after the rename could otherwise leave files in it empty or cut short."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _sync(os.path.join(root, name))
        _sync(root)


def expand_home(path: str | None) -> str | None:
    """``path`` with a leading ``~`` or ``~user`` expanded, as the input paths are: without it
    ``output_dir: ~/runs/ipo`` in a config (which no shell expands) made a folder named ``~``."""
    return None if path is None else os.path.expanduser(path)


def check_output_folder(path: str | os.PathLike, key: str, files: tuple[str, ...] = ()) -> Path:
    """Refuse, in one line naming ``key``, a folder path that could not hold results (empty, a
    file, under a file, not writable, one of the ``files`` to be written in it a folder),
    without creating anything: a run with bad input leaves no folder behind, and one with a bad
    output path fails before any work is done."""
    if not str(path).strip():
        raise PsipoInputError(f"{key}: empty path; name a folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PsipoInputError(f"{key}: {path} is a file, not a folder")
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise PsipoInputError(f"{key}: {path} lies under {existing}, which is a file")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise PsipoInputError(f"{key}: {path} is not writable" if existing == path else f"{key}: cannot create {path} in {existing}: not writable")
    for name in files:
        if (path / name).is_dir():
            raise PsipoInputError(f"{key}: {path / name} is a folder, not a file psipo can write; move it away")
    return path


def readable_file(path: str | os.PathLike, what: str) -> Path:
    """The file ``path`` names, ``~`` expanded (a YAML value, or ``--config=~/x`` after which no
    shell expands it); else a one-line :class:`PsipoInputError` saying why it cannot be read as
    ``what`` (e.g. "config file")."""
    if not str(path).strip():  # as a Path, "" is the current folder
        raise PsipoInputError(f"empty path; name a {what}")
    path = Path(os.path.expanduser(path))
    if path.is_dir():
        raise PsipoInputError(f"{path}: is a folder, not a {what}")
    if not path.is_file():
        raise PsipoInputError(f"{path}: {what} not found")
    return path


def lock_folder(path: Path, name: str, *, key: str, what: str) -> int:
    """Take the exclusive lock of folder ``path`` (its file ``name``, which says who holds it),
    or refuse in one line naming ``key``: another live ``what`` writes there. The lock goes
    with the returned descriptor (closed, or the process ending); the file stays, since
    unlinking it would race with a process waiting for it."""
    import datetime
    import fcntl
    import socket

    fd = os.open(path / name, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise PsipoInputError(
            f"{key}: {path} is in use by a live {what} ({holder}); wait for it or choose another {key}"
        ) from None
    os.ftruncate(fd, 0)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())
    return fd


def is_same_folder(path: str | os.PathLike | None, other: str | os.PathLike | None) -> bool:
    """Whether both are given and name one existing folder (a model id that is no folder never is)."""
    if path is None or other is None or not str(path).strip() or not os.path.isdir(other):
        return False
    return Path(path).resolve() == Path(other).resolve()


def lies_in_folder(path: str | os.PathLike, folder: str | os.PathLike | None) -> bool:
    """Whether ``folder`` is an existing folder and ``path`` (which need not exist) is it or lies in it."""
    if folder is None or not str(folder).strip() or not os.path.isdir(folder):
        return False
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def prepare_output_folder(path: str | os.PathLike, key: str) -> Path:
    """:func:`check_output_folder`, then create the folder (and its parents)."""
    path = check_output_folder(path, key)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PsipoInputError(f"{key}: cannot create {path}: {exc.strerror or exc}") from None
    return path


def check_output_file(path: str | os.PathLike, key: str) -> Path:
    """Refuse, in one line naming ``key``, a file path that cannot be written: empty, a folder,
    or under something that is not a writable folder."""
    if not str(path).strip():
        raise PsipoInputError(f"{key}: empty path; name a file")
    path = Path(path)
    if path.is_dir():
        raise PsipoInputError(f"{key}: {path} is a folder; name a file in it")
    check_output_folder(path.parent, key)
    return path


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (same-directory temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX
    )
    try:
        # mkstemp creates 0600 whatever the umask; a plain open() would give 0666 & ~umask.
        os.fchmod(fd, 0o666 & ~_current_umask())
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            # Name the file the caller asked for: a failed rename names the temporary, and a
            # failed write or fsync (a full disk) names no file at all.
            if exc.errno is None or exc.strerror is None:
                raise
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync(path.parent)  # the rename


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` by rename.

    An existing ``path`` is moved aside first and deleted only after the new folder is in
    place, so at every instant either the old or the new complete folder exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX)
    )
    try:
        # mkdtemp creates 0700 whatever the umask; a plain mkdir would give 0777 & ~umask.
        os.chmod(tmp, 0o777 & ~_current_umask())
        yield tmp
        _apply_umask(tmp)
        _sync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if path.exists():
            old = path.with_name(f".{path.name}{_REPLACED_SUFFIX}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:  # a refused rename (a full directory): the old folder back, no temporary left
        if old is not None and not path.exists():
            with contextlib.suppress(OSError):
                os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sync(path.parent)  # the rename
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_folder(path: str | os.PathLike) -> None:
    """Delete folder ``path`` as one step: it is renamed to a temporary name first, so a process
    killed while deleting leaves no half-deleted ``path``, only a temporary that
    :func:`remove_stale_temporaries` clears."""
    path = Path(path)
    doomed = tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX)
    try:
        os.replace(path, doomed)  # over the empty folder that reserved the name
    except OSError:  # e.g. a folder that cannot be renamed away: deleted where it is
        os.rmdir(doomed)
        doomed = str(path)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Clear what interrupted atomic writes left in ``folder``; return the paths removed.

    Temporary files and folders (``.NAME.XXXXXXXX.tmp``) are deleted. A folder that
    :func:`atomic_directory` had moved aside (``.NAME.old``) is deleted when ``NAME`` exists,
    and renamed back to ``NAME`` when the crash came before its replacement was in place (it
    is then the only complete copy). Nothing else is touched; a missing ``folder`` is fine.

    A temporary of a write in progress looks exactly like a stale one: the caller must be the
    only writer of ``folder`` (hold the run's lock) while this runs.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if _TEMPORARY_NAME.fullmatch(entry.name):
            _remove(entry)
            removed.append(entry)
            continue
        replaced = _REPLACED_NAME.fullmatch(entry.name)
        if replaced and _is_real_directory(entry):
            original = entry.with_name(replaced["name"])
            if original.exists() or original.is_symlink():
                _remove(entry)
                removed.append(entry)
                continue
            os.replace(entry, original)
            entry = original
        if recursive and _is_real_directory(entry):
            removed += remove_stale_temporaries(entry, recursive=True)
    return removed


def _is_real_directory(path: Path) -> bool:
    """A directory that is not a symlink: cleaning never follows links out of ``folder``."""
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    if _is_real_directory(path):
        shutil.rmtree(path)
    else:
        path.unlink()
