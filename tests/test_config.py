"""psipo._config: field docs, validation, YAML with file:line errors, flat concerns, CLI options."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from psipo._config import (
    add_arguments,
    field_docs,
    flat,
    from_dict,
    load_config,
    overrides_from_args,
    save_yaml,
    to_dict,
)
from psipo.errors import PsipoInputError


@dataclasses.dataclass
class Optim:
    """Optimisation settings."""

    learning_rate: float = 1e-3
    """Peak step size (100% at the end of warm-up)."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Decay shape."""


@dataclasses.dataclass
class Nested:
    name: str
    """Run name (required)."""
    steps: int = 10
    """Optimizer steps."""
    tags: list[str] = dataclasses.field(default_factory=list)
    """Free-form labels."""
    out: Path | None = None
    """Output folder."""
    verbose: bool = False
    """Print more."""
    optim: Optim = dataclasses.field(default_factory=Optim)
    """Nested optimizer settings (dotted keys)."""


@dataclasses.dataclass
class Flat:
    """A config whose concerns lend their keys to the top level."""

    optim: Optim = flat(Optim)
    seed: int = 0
    """Random seed."""


def test_field_docs_are_the_strings_under_the_fields():
    assert field_docs(Nested)["steps"] == "Optimizer steps."
    assert field_docs(Optim)["learning_rate"] == "Peak step size (100% at the end of warm-up)."


def test_from_dict_converts_and_rejects_with_the_key_named():
    config = from_dict(Nested, {"name": "a", "steps": 3.0, "out": "x", "optim": {"learning_rate": "1e-5"}})
    assert config.steps == 3 and config.out == Path("x") and config.optim.learning_rate == 1e-5
    for data, message in [
        ({"name": "a", "stepz": 1}, r"unknown key 'stepz' \(did you mean 'steps'\?\)"),
        ({"name": "a", "zzz": 1}, r"unknown key 'zzz' \(known keys: name, "),
        ({"name": "a", "steps": 1.5}, "key 'steps': expected an integer"),
        ({"name": "a", "verbose": "yes"}, "key 'verbose': expected true or false"),
        ({"name": "a", "optim": {"schedule": "step"}}, "key 'optim.schedule': expected one of 'cosine', 'linear'"),
        ({"name": "a", "optim": {"lr": 1}}, "unknown key 'optim.lr'"),
        ({"name": "a", "tags": "x"}, "key 'tags': expected a list"),
        ({}, "missing required key 'name'"),
    ]:
        with pytest.raises(PsipoInputError, match=message):
            from_dict(Nested, data)


def test_load_config_names_file_and_line_and_applies_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: a\nsteps: 4\noptim:\n  learning_rate: 0.5\n  schedule: bogus\n")
    with pytest.raises(PsipoInputError, match=r"run.yaml:5: key 'optim.schedule'"):
        load_config(Nested, path)
    config = load_config(Nested, path, {"optim.schedule": "linear", "steps": 7})
    assert (config.steps, config.optim.schedule, config.optim.learning_rate) == (7, "linear", 0.5)
    path.write_text("name: [unclosed\n")
    with pytest.raises(PsipoInputError, match=r"run.yaml:\d+: invalid YAML"):
        load_config(Nested, path)
    with pytest.raises(PsipoInputError, match="config file not found"):
        load_config(Nested, tmp_path / "missing.yaml")


def test_flat_concerns_take_top_level_keys(tmp_path):
    config = from_dict(Flat, {"learning_rate": 0.1, "seed": 3})
    assert config.optim.learning_rate == 0.1 and config.seed == 3
    assert to_dict(config) == {"learning_rate": 0.1, "schedule": "cosine", "seed": 3}
    with pytest.raises(PsipoInputError, match="unknown key 'optim'"):
        from_dict(Flat, {"optim": {"learning_rate": 0.1}})
    path = tmp_path / "flat.yaml"
    path.write_text("seed: 1\nschedule: nope\n")
    with pytest.raises(PsipoInputError, match=r"flat.yaml:2: key 'schedule'"):
        load_config(Flat, path)
    save_yaml(config, path)
    assert load_config(Flat, path) == config


def test_cli_options_round_trip_and_group_by_concern():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Flat)
    help_text = parser.format_help()  # '%' in a field doc must not break argparse's formatting
    assert "Optimisation settings:" in help_text and "100% at the end" in help_text
    args = parser.parse_args(["--learning-rate", "0.25", "--schedule", "linear", "--seed", "5"])
    overrides = overrides_from_args(args)
    assert overrides == {"learning_rate": 0.25, "schedule": "linear", "seed": 5}
    assert load_config(Flat, None, overrides) == Flat(optim=Optim(0.25, "linear"), seed=5)

    nested = argparse.ArgumentParser()
    add_arguments(nested, Nested)
    args = nested.parse_args(["--name", "x", "--optim.learning_rate", "2", "--verbose", "--tags", "[a, b]"])
    config = load_config(Nested, None, overrides_from_args(args))
    assert (config.optim.learning_rate, config.verbose, config.tags) == (2.0, True, ["a", "b"])


def test_save_yaml_round_trips(tmp_path):
    config = Nested(name="r", steps=2, tags=["t"], out=Path("o"), optim=Optim(0.5, "linear"))
    save_yaml(config, tmp_path / "c.yaml")
    assert load_config(Nested, tmp_path / "c.yaml") == config
