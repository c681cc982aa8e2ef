"""Atomic writes: permissions follow the umask, a crash keeps the old file, and what a crash
leaves behind is cleaned up (and only that)."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from psipo._io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_folder,
    remove_stale_temporaries,
)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("mask", "file_mode", "folder_mode"),
    [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
    ids=["umask-022", "umask-027"],
)
def test_everything_written_follows_the_umask(tmp_path, umask, mask, file_mode, folder_mode):
    umask(mask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_write_text(tmp_path / "b.txt", "x")
    atomic_write_json(tmp_path / "c.json", {"x": 1})
    with atomic_directory(tmp_path / "folder") as folder:
        (folder / "inside.txt").write_text("x")
    assert [mode(tmp_path / name) for name in ("a.bin", "b.txt", "c.json")] == [file_mode] * 3
    assert mode(tmp_path / "folder") == folder_mode
    assert mode(tmp_path / "folder" / "inside.txt") == file_mode


def test_replacing_a_private_file_gives_the_umask_mode(tmp_path, umask):
    # Files written by earlier versions are 0600: rewriting them must not keep that.
    umask(0o022)
    path = tmp_path / "results.json"
    path.write_text("old")
    path.chmod(0o600)
    atomic_write_text(path, "new")
    assert mode(path) == 0o644


def test_an_exception_mid_write_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old\n")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, failing):
    # A write or fsync refused for want of room names no file: the error must name the one
    # asked for (not the temporary), so that the CLI's one line says which.
    import errno

    path = tmp_path / "metrics.jsonl"
    atomic_write_text(path, "old\n")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "fsync":
        monkeypatch.setattr(os, "fsync", full)
    else:
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: type("Full", (io.FileIO,), {"write": full})(fd, "wb"))
    with pytest.raises(OSError) as raised:
        atomic_write_text(path, "new\n")
    assert (raised.value.errno, raised.value.strerror, raised.value.filename) == (
        errno.ENOSPC, "No space left on device", str(path)
    )  # fmt: skip
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_killed_writer_keeps_the_old_file_and_its_temporaries_are_cleaned(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old\n")
    os.mkdir(tmp_path / "step-1")
    # Killed (SIGKILL: no clean-up code runs) once the new content is written but not renamed,
    # and once inside a new folder, before it replaced the old one.
    script = textwrap.dedent(f"""
        import os, signal
        from psipo import _io
        path = {str(path)!r}
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        if __import__("sys").argv[1] == "folder":
            with _io.atomic_directory({str(tmp_path / "step-1")!r}) as tmp:
                (tmp / "weights").write_bytes(b"new")
                os.fsync(0)
        _io.atomic_write_text(path, "new\\n")
    """)
    for where in ("file", "folder"):
        killed = subprocess.run([sys.executable, "-c", script, where], capture_output=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert path.read_text() == "old\n"
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert len(leftovers) == 2 and all(
        name.startswith((".config.yaml.", ".step-1.")) for name in leftovers
    )

    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "step-1"]


def test_stale_temporary_removal_touches_only_our_pattern(tmp_path):
    ours = [".config.yaml.k3j_x9a2.tmp", ".metrics.jsonl.abcdefgh.tmp"]
    theirs = [
        "notes.tmp",
        ".hidden.tmp",
        ".x.short.tmp",
        ".x.UPPERCAS.tmp",
        "x.abcdefgh.tmp",
        ".cache",
        "old",
    ]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    (tmp_path / ".step-10.q1w2e3r4.tmp").mkdir()
    (tmp_path / ".step-10.q1w2e3r4.tmp" / "model.safetensors").write_text("partial")
    (tmp_path / "step-5").mkdir()
    (tmp_path / ".step-5.old").mkdir()  # replaced and not yet deleted: step-5 is complete
    (tmp_path / ".notes.old").write_text("a user's file, not a folder atomic_directory moved")

    removed = remove_stale_temporaries(tmp_path)

    assert sorted(p.name for p in removed) == sorted(
        [*ours, ".step-10.q1w2e3r4.tmp", ".step-5.old"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*theirs, "step-5", ".notes.old"])


def test_a_folder_moved_aside_without_replacement_is_restored(tmp_path):
    # The crash came between moving final/ aside and renaming the new one in: .final.old is
    # the only complete copy.
    (tmp_path / ".final.old").mkdir()
    (tmp_path / ".final.old" / "config.json").write_text("{}")
    (tmp_path / ".final.abcd1234.tmp").mkdir()

    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".final.abcd1234.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert (tmp_path / "final" / "config.json").read_text() == "{}"


def test_recursive_removal_descends_but_never_through_links(tmp_path):
    nested = tmp_path / "checkpoints"
    nested.mkdir()
    (nested / ".step-2.abcd1234.tmp").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / ".data.abcd1234.tmp").write_text("x")
    (tmp_path / "link").symlink_to(outside)

    assert remove_stale_temporaries(tmp_path) == []
    assert remove_stale_temporaries(tmp_path, recursive=True) == [nested / ".step-2.abcd1234.tmp"]
    assert (outside / ".data.abcd1234.tmp").exists()


def test_a_missing_folder_has_nothing_to_remove(tmp_path):
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_a_folder_is_on_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    # Writers such as save_pretrained and safetensors do not fsync: without it a machine that
    # crashes after the rename can leave a checkpoint whose files are empty or cut short.
    import psipo._io

    synced = []

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(psipo._io.os, "fsync", fsync)
    with atomic_directory(tmp_path / "ckpt") as tmp:
        (tmp / "model").mkdir()
        (tmp / "model" / "weights.safetensors").write_bytes(b"w" * 10)
        (tmp / "state.json").write_text("{}")
        names = {str(p.relative_to(tmp)) for p in tmp.rglob("*")}
        root = str(tmp)
    assert {os.path.relpath(p, root) for p in synced if p.startswith(root + os.sep)} >= names
    assert str(tmp_path) in synced  # the rename itself


def test_what_a_writer_made_private_inside_a_folder_gets_the_umask_mode(tmp_path, umask):
    # save_pretrained (safetensors) creates 0600 files whatever the umask; folders made 0700 alike.
    umask(0o022)
    with atomic_directory(tmp_path / "final") as tmp:
        os.close(os.open(tmp / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600))
        (tmp / "sub").mkdir(mode=0o700)
        os.close(os.open(tmp / "sub" / "weights", os.O_WRONLY | os.O_CREAT, 0o600))
    final = tmp_path / "final"
    assert [mode(final / name) for name in ("model.safetensors", "sub", "sub/weights")] == [0o644, 0o755, 0o644]


def test_a_written_file_s_rename_is_on_disk(tmp_path, monkeypatch):
    import psipo._io

    synced = []
    monkeypatch.setattr(psipo._io.os, "fsync", lambda fd: synced.append(os.path.realpath(f"/proc/self/fd/{fd}")))
    atomic_write_text(tmp_path / "config.yaml", "x")
    assert synced[-1] == str(tmp_path)  # the folder, after the file's own contents
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".config.yaml."))


def test_a_replaced_folder_leaves_only_the_new_one_and_a_failed_one_only_the_old(tmp_path):
    with atomic_directory(tmp_path / "step-1") as tmp:
        (tmp / "weights").write_text("old")
    with atomic_directory(tmp_path / "step-1") as tmp:
        (tmp / "weights").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "step-1") as tmp:
        (tmp / "weights").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]
    assert (tmp_path / "step-1" / "weights").read_text() == "new"


def test_a_folder_whose_deletion_is_interrupted_leaves_a_temporary_that_is_cleaned(tmp_path, monkeypatch):
    import shutil

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        remove_folder(tmp_path / "run")
    monkeypatch.undo()
    assert not (tmp_path / "run").exists()  # gone at once, as one rename
    assert len(remove_stale_temporaries(tmp_path)) == 1 and list(tmp_path.iterdir()) == []


def test_a_folder_moved_aside_is_not_restored_over_a_link_of_that_name(tmp_path):
    # final/ is a link (to a folder elsewhere, maybe gone): it is what the user put there.
    (tmp_path / ".final.old").mkdir()
    (tmp_path / "final").symlink_to(tmp_path / "elsewhere")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".final.old"]
    assert (tmp_path / "final").is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
