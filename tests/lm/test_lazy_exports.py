"""``import psipo.lm`` is cheap, as its docstring says: torch and transformers load only when
one of its exports is first used."""

from __future__ import annotations

import subprocess
import sys

import psipo.lm


def test_importing_psipo_lm_loads_neither_torch_nor_transformers():
    code = "import sys, psipo.lm; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip() == "[]"


def test_every_export_resolves_to_the_object_of_its_module():
    from psipo.lm import config, data, evaluate, judges, logprobs, online, reward, sampling, trainer

    modules = (config, data, evaluate, judges, logprobs, online, reward, sampling, trainer)
    for name in psipo.lm.__all__:
        homes = [m for m in modules if getattr(m, name, None) is getattr(psipo.lm, name)]
        assert homes, name
