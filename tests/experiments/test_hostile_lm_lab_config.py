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


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--large.response_length", "0", "must be >= 1"),  # was a ValueError traceback (math domain error)
    ("--large.reference_steps", "0", "must be >= 1"),  # was a ZeroDivisionError traceback
    ("--large.num_pairs", "0", "must be >= 1"),
    ("--large.steps", "0", "must be >= 1"),
    ("--large.num_prompts", "0", "must be >= 1"),
    ("--large.vocab_size", "1", "must be >= 2"),
])
def test_a_large_world_value_out_of_range_is_refused_naming_its_key(tmp_path, capsys, option, value, why):
    out = tmp_path / "out"
    assert main(["experiment", "lm", "--quick", "--no-progress", "--out", str(out), option, value]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"psipo: error: {option}: {why}"]
    assert not out.exists()
