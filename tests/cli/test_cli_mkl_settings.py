"""The psipo command's MKL settings: given before torch loads MKL, the user's own kept."""

from __future__ import annotations

import os
import subprocess
import sys

from psipo.cli import MKL_SETTINGS, main


def test_main_gives_mkl_its_settings_and_keeps_the_users(monkeypatch, capsys):
    monkeypatch.delenv("MKL_DISABLE_FAST_MM", raising=False)
    main(["plot", "no-such-run"])
    assert MKL_SETTINGS == {"MKL_DISABLE_FAST_MM": "1"}
    assert os.environ["MKL_DISABLE_FAST_MM"] == "1"
    monkeypatch.setenv("MKL_DISABLE_FAST_MM", "user")
    main(["plot", "no-such-run"])
    assert os.environ["MKL_DISABLE_FAST_MM"] == "user"
    capsys.readouterr()


def test_the_settings_are_in_place_before_torch_loads_mkl():
    # MKL reads them once, when torch loads it: the command module must not import torch, and a
    # subcommand's torch must see them.
    probe = (
        "import os, sys; import psipo.cli as cli; loaded = 'torch' in sys.modules; "
        "cli.set_mkl_defaults(); import torch; print(loaded, os.environ['MKL_DISABLE_FAST_MM'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "MKL_DISABLE_FAST_MM"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "1"]
