"""psipo.lm.fixtures writes what the umask asks for, and leaves other files alone."""

from __future__ import annotations

import os
import stat

import pytest

from psipo.lm.fixtures import main


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_fixture_files_respect_the_umask(tmp_path, umask):
    folder = tmp_path / "qs"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "notes.txt").write_text("keep me")
    old = os.umask(umask)
    try:
        assert main(["quickstart", str(folder)]) == 0
    finally:
        os.umask(old)
    written = [p for p in folder.rglob("*") if p.name != "notes.txt"]
    assert {p.name for p in written} >= {"model.safetensors", "config.json", "tokenizer.json", "train.jsonl"}
    for path in written:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        if path == folder / "model":
            continue  # made by the test
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert (folder / "model" / "notes.txt").read_text() == "keep me"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left
