"""The README writes psipo's API by dotted name — ``psipo.tabular.nash_equilibrium(problem,
tau=0.5)``, ``psipo.lm.evaluate.evaluate(...)``, ``psipo.lm.train_reward(...)`` — after a plain
``import psipo`` (its first example). A subpackage or submodule is therefore an attribute of its
package on first use, as ``psipo.psi`` already was; before, each of these was an AttributeError
unless the reader had imported the submodule by name. ``import psipo`` stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _python(code: str) -> subprocess.CompletedProcess:
    # A fresh interpreter: in this one, other tests have imported the submodules already.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_the_dotted_names_of_the_readme_work_after_import_psipo():
    code = (
        "import sys, psipo\n"
        "assert not any(m in sys.modules for m in ('torch', 'transformers')), 'import psipo loaded torch'\n"
        "print(psipo.tabular.nash_equilibrium.__name__, psipo.lm.evaluate.evaluate.__name__,\n"
        "      psipo.lm.train_reward.__name__, psipo.lm.judges.make_judge.__name__,\n"
        "      psipo.lm.fixtures.make_tiny_model_dir.__name__, psipo.stats.mean_and_ci.__name__,\n"
        "      psipo.experiments.lm_lab.run_experiment.__name__)\n"
    )
    completed = _python(code)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == [
        "nash_equilibrium", "evaluate", "train_reward", "make_judge", "make_tiny_model_dir", "mean_and_ci",
        "run_experiment",
    ]


def test_import_psipo_lm_stays_cheap_and_its_submodules_come_on_first_use():
    code = (
        "import sys, psipo.lm\n"
        "assert 'torch' not in sys.modules\n"
        "print(psipo.lm.evaluate.evaluate is psipo.lm.evaluate.__dict__['evaluate'])\n"
    )
    completed = _python(code)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "True"


@pytest.mark.parametrize(
    ("package", "name"),
    [("psipo", "nope"), ("psipo", "_config_missing"), ("psipo.lm", "nope"), ("psipo.lm", "__wrapped__")],
)
def test_a_name_that_is_neither_an_export_nor_a_submodule_is_an_attribute_error(package, name):
    code = (
        f"import {package}\n"
        f"try:\n    getattr({package}, {name!r})\nexcept AttributeError as e:\n    print('AttributeError', e)\n"
    )
    completed = _python(code)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == f"AttributeError module {package!r} has no attribute {name!r}"
