"""`psipo experiment lm` refuses out-of-range values before any work, naming the key at fault."""

from __future__ import annotations

import pytest

from psipo.cli import main


@pytest.mark.parametrize(("option", "value"), [
    ("--grid.seeds", "-1"), ("--large.seeds", "4294967296"), ("--online.seeds", "-3"),
    ("--sweep.seeds", "-1"), ("--lm_sweep.seeds", "-2"),
])
def test_a_seed_out_of_range_is_refused_before_the_grid(tmp_path, capsys, option, value):
    # It used to train the whole grid and then fail in a worker with "key 'seed': ...".
    out = tmp_path / "out"
    assert main(["experiment", "lm", "--quick", "--no-progress", "--out", str(out), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"psipo: error: {option}: must be integers in [0, 4294967295] (2**32 − 1)"]
    assert not out.exists()
