"""psipo._config: field docs, validation, YAML with file:line errors, flat concerns, CLI options."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml

from psipo._config import (
    MAX_ALIAS_EXPANSION,
    MAX_NESTING,
    add_arguments,
    decode_utf8,
    field_docs,
    flat,
    from_dict,
    load_config,
    overrides_from_args,
    parse_json,
    read_yaml_mapping,
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
    with pytest.raises(PsipoInputError, match=r"^.*: is a folder, not a config file$"):
        load_config(Nested, tmp_path)


def test_an_empty_config_path_is_refused_and_a_home_one_is_read(tmp_path, monkeypatch):
    # "" is "." as a Path ("is a folder"); `--config=~/x.yaml` reaches psipo with its ~ (no shell
    # expands it after '='), which was "not found"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PsipoInputError, match=r"^empty path; name a config file$"):
        load_config(Nested, "")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "run.yaml").write_text("name: a\nsteps: 4\n")
    assert load_config(Nested, "~/run.yaml").steps == 4


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


# --------------------------------------------------------------------------- hostile YAML

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)
"""A 'billion laughs' document: nine levels of nine aliases each, 9**9 nodes when expanded."""


def test_alias_bomb_is_refused_from_the_files_own_nodes_before_anything_is_built(tmp_path, monkeypatch):
    """The work is bounded by the file, not by its expansion: the composer is called at most once
    per node event of the file (counted by PyYAML's own parser), nothing is constructed, and the
    refusal comes at line 6, where the expanded sizes 9·10 + 9·91 + 9·820 + 9·7381 + 66430 first
    pass MAX_ALIAS_EXPANSION."""
    from psipo._config import _BoundedComposer, _SafeLoader

    node_events = sum(isinstance(e, yaml.NodeEvent) for e in yaml.parse(LAUGHS))
    calls = []

    def counted(self, parent, index):
        calls.append(index)
        return _BoundedComposer.compose_node(self, parent, index)

    def forbidden(self, node):
        raise AssertionError("the alias bomb was constructed")

    monkeypatch.setattr(_SafeLoader, "compose_node", counted)
    monkeypatch.setattr(yaml.constructor.BaseConstructor, "construct_document", forbidden)
    path = tmp_path / "bomb.yaml"
    path.write_text(LAUGHS)
    with pytest.raises(PsipoInputError, match=rf"bomb.yaml:6: aliases expand to more than {MAX_ALIAS_EXPANSION} nodes"):
        load_config(Nested, path)
    assert 0 < len(calls) <= node_events == 100


def test_aliases_within_the_bound_work_and_lines_do_not_expand_them(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: &n x\ntags: [*n, *n]\noptim:\n  schedule: bogus\n")
    data, lines = read_yaml_mapping(path)
    assert data == {"name": "x", "tags": ["x", "x"], "optim": {"schedule": "bogus"}}
    assert lines == {"name": 1, "tags": 2, "tags[0]": 1, "tags[1]": 1, "optim": 3, "optim.schedule": 4}
    with pytest.raises(PsipoInputError, match=r"run.yaml:4: key 'optim.schedule'"):
        load_config(Nested, path)
    path.write_text("name: &n [*n]\n")
    with pytest.raises(PsipoInputError, match=r"run.yaml:1: an alias refers to a node that contains it"):
        read_yaml_mapping(path)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 100_000])
def test_deep_nesting_is_one_line_not_a_crash(tmp_path, depth):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(PsipoInputError, match=rf"deep.yaml:1: nested deeper than {MAX_NESTING} levels"):
        read_yaml_mapping(path)
    path.write_text("tags: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1) + "\n")
    assert read_yaml_mapping(path)[0]["tags"]


def test_yaml_is_parsed_once_without_yaml_module_helpers(tmp_path, monkeypatch):
    """One safe parse gives both the data and the lines: no yaml.safe_load + yaml.compose."""

    def forbidden(*args, **kwargs):
        raise AssertionError("parsed through a yaml module helper")

    for helper in ("safe_load", "compose", "load"):
        monkeypatch.setattr(yaml, helper, forbidden)
    path = tmp_path / "run.yaml"
    path.write_text("name: a\nsteps: 3\n")
    assert read_yaml_mapping(path) == ({"name": "a", "steps": 3}, {"name": 1, "steps": 2})


def test_unsafe_tags_are_refused(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(PsipoInputError, match=r"run.yaml:1: invalid YAML: could not determine a constructor"):
        read_yaml_mapping(path)


def test_non_utf8_config_names_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"name: a\nsteps: caf\xe9\n")
    with pytest.raises(PsipoInputError, match=r"run.yaml:2: not valid UTF-8 \(byte 0xe9 at column 11\)"):
        load_config(Nested, path)


def test_command_line_values_are_blamed_on_the_option_not_the_file(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("seed: 1\nlearning_rate: 0.5\n")
    with pytest.raises(PsipoInputError) as info:
        load_config(Flat, path, {"learning_rate": "abc"})
    assert str(info.value) == "--learning_rate: expected a number, got 'abc'"
    with pytest.raises(PsipoInputError, match=r"^--tags\[1\]: expected a string, got 3$"):
        load_config(Nested, None, {"name": "a", "tags": ["x", 3]})
    path.write_text("seed: 1\nlearning_rate: abc\n")
    with pytest.raises(PsipoInputError, match=r"flat.yaml:2: key 'learning_rate'"):  # the file's own value
        load_config(Flat, path, {"seed": 2})


def test_check_errors_name_the_option_or_the_line(tmp_path):
    def no_big_steps(config: Nested) -> None:
        if config.steps > 5:
            raise PsipoInputError(f"steps: at most 5, got {config.steps}")

    path = tmp_path / "run.yaml"
    path.write_text("name: a\nsteps: 9\n")
    with pytest.raises(PsipoInputError, match=r"run.yaml:2: steps: at most 5, got 9"):
        load_config(Nested, path, check=no_big_steps)
    with pytest.raises(PsipoInputError, match=r"^--steps: at most 5, got 7$"):
        load_config(Nested, path, {"steps": 7}, check=no_big_steps)
    assert load_config(Nested, path, {"steps": 2}, check=no_big_steps).steps == 2


def test_a_preset_gives_way_to_the_file_and_the_file_to_the_options(tmp_path):
    def no_big_steps(config: Nested) -> None:
        if config.steps > 5:
            raise PsipoInputError(f"steps: at most 5, got {config.steps}")

    preset = {"name": "preset", "steps": 3, "optim.learning_rate": 0.25, "optim.schedule": "linear"}
    path = tmp_path / "run.yaml"
    path.write_text("steps: 4\noptim:\n  learning_rate: 0.5\n")
    config = load_config(Nested, path, defaults=preset)
    # the file's keys win, the preset fills the rest, inside a section too
    assert (config.name, config.steps, config.optim.learning_rate, config.optim.schedule) == ("preset", 4, 0.5, "linear")
    config = load_config(Nested, path, {"optim.learning_rate": 0.125}, defaults=preset)
    assert (config.steps, config.optim.learning_rate) == (4, 0.125)
    path.write_text("steps: 9\n")  # a bad value in the file is the file's, preset or not
    with pytest.raises(PsipoInputError, match=r"run.yaml:1: steps: at most 5, got 9"):
        load_config(Nested, path, defaults=preset, check=no_big_steps)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: a\nsteps: 1\noptim:\n  learning_rate: 0.5\n  learning_rate: 0.1\n")
    with pytest.raises(PsipoInputError, match=r"^.*run.yaml:5: key 'learning_rate' is given twice \(first on line 4\)$"):
        load_config(Nested, path)
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")  # a merge key's values may be overridden
    assert read_yaml_mapping(path)[0]["other"] == {"x": 3, "y": 2}
    with pytest.raises(PsipoInputError, match=r"^data.jsonl:7: key 'tau' is given twice in one object$"):
        parse_json('{"tau": 1, "tau": 2}', "data.jsonl", 7)
    assert parse_json('[{"tau": 1}, {"tau": 2}]', "data.jsonl") == [{"tau": 1}, {"tau": 2}]


def test_an_integer_beyond_64_bits_is_refused_by_key():
    with pytest.raises(PsipoInputError, match=r"key 'steps': expected an integer of at most 64 bits, got 99999999999999999999$"):
        from_dict(Nested, {"name": "a", "steps": 99999999999999999999})
    assert from_dict(Nested, {"name": "a", "steps": 2**63 - 1}).steps == 2**63 - 1


def test_a_string_option_is_taken_as_written_and_help_shows_literal_words_as_typed():
    @dataclasses.dataclass
    class Paths:
        out: Path | None = None
        """Output folder."""
        name: str = "run"
        """A name."""
        pieces: int | Literal["auto"] | None = "auto"
        """Tokens per piece."""
        tags: list[str] = dataclasses.field(default_factory=list)
        """Labels."""

    parser = argparse.ArgumentParser()
    add_arguments(parser, Paths)
    args = parser.parse_args(["--out", "2024", "--name", "1e-5", "--pieces", "auto", "--tags", "007", "true"])
    config = load_config(Paths, None, overrides_from_args(args))
    assert (config.out, config.name, config.pieces, config.tags) == (Path("2024"), "1e-5", "auto", ["007", "true"])
    args = parser.parse_args(["--out", "null", "--pieces", "64", "--tags", "[a, b]"])
    config = load_config(Paths, None, overrides_from_args(args))
    assert (config.out, config.pieces, config.tags) == (None, 64, ["a", "b"])
    # '~' quoted past the shell is the home folder (psipo expands it), not a run without a folder.
    args = parser.parse_args(["--out", "~", "--tags", "~"])
    config = load_config(Paths, None, overrides_from_args(args))
    assert (config.out, config.tags) == (Path("~"), ["~"])
    assert "--pieces INT | auto" in " ".join(parser.format_help().split())


def test_a_list_that_may_be_null_takes_words_as_a_list_does():
    # `--lora_target_modules q_proj v_proj` was refused (unrecognized argument v_proj), and one
    # word was "expected list or null": an optional list option took a single YAML value only.
    @dataclasses.dataclass
    class Targets:
        modules: list[str] | None = None
        """Module names; null: all."""
        sizes: list[int] | None = None
        """Sizes."""

    parser = argparse.ArgumentParser()
    add_arguments(parser, Targets)
    for words, expected in [
        (["--modules", "q_proj", "v_proj", "--sizes", "1", "2"], (["q_proj", "v_proj"], [1, 2])),
        (["--modules", "q_proj", "--sizes", "3"], (["q_proj"], [3])),
        (["--modules", "[q_proj, v_proj]", "--sizes", "[4]"], (["q_proj", "v_proj"], [4])),
        (["--modules", "null", "--sizes", "null"], (None, None)),
    ]:
        config = load_config(Targets, None, overrides_from_args(parser.parse_args(words)))
        assert (config.modules, config.sizes) == expected, words
    assert "--modules STR [STR ...]" in " ".join(parser.format_help().split())


def test_an_integer_written_the_yaml_1_1_way_or_quoted_is_read_as_the_float_keys_are():
    assert from_dict(Nested, {"name": "a", "steps": "1e3"}).steps == 1000  # YAML 1.1: a string
    assert from_dict(Nested, {"name": "a", "steps": "8"}).steps == 8
    for bad in ("1.5", "ten", True):
        with pytest.raises(PsipoInputError, match=rf"key 'steps': expected an integer, got {bad!r}$"):
            from_dict(Nested, {"name": "a", "steps": bad})


@dataclasses.dataclass
class Inner:
    size: int = 8
    """Width."""
    seed: int = 0
    """Seed."""


@dataclasses.dataclass
class Middle:
    inner: Inner = dataclasses.field(default_factory=lambda: Inner(size=3, seed=7))
    """A section whose default is not Inner's."""
    steps: int = 5
    """Steps."""


@dataclasses.dataclass
class Outer:
    middle: Middle = dataclasses.field(default_factory=lambda: Middle(inner=Inner(size=2, seed=9), steps=1))
    """A section two levels deep whose default is not Middle's."""


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, Middle(Inner(2, 9), 1)),
        ({"middle.inner.seed": 5}, Middle(Inner(2, 5), 1)),  # size stays the field's 2, not Inner's 8
        ({"middle.steps": 4}, Middle(Inner(2, 9), 4)),
        ({"middle": {"inner": {"size": 6}}}, Middle(Inner(6, 9), 1)),
    ],
)
def test_a_nested_key_changes_only_itself_and_the_rest_keep_the_fields_own_default(overrides, expected):
    assert load_config(Outer, None, overrides).middle == expected


def test_a_nested_section_in_a_file_keeps_the_fields_own_default_for_the_keys_it_leaves_out(tmp_path):
    (tmp_path / "c.yaml").write_text("middle:\n  inner:\n    seed: 1\n")
    assert load_config(Outer, tmp_path / "c.yaml").middle == Middle(Inner(2, 1), 1)


def test_help_shows_a_nested_sections_own_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Outer)
    helps = {a.dest: a.help for a in parser._actions if a.dest.startswith("cfg:")}
    assert helps["cfg:middle.inner.size"].endswith("(default: 2)") and helps["cfg:middle.inner.seed"].endswith("(default: 9)")
    assert helps["cfg:middle.steps"].endswith("(default: 1)")


@pytest.mark.parametrize(
    ("command", "paths"),
    [
        ("train", {"output_dir": "~/runs/ipo", "cache_dir": "~/cache"}),
        ("online", {"output_dir": "~/runs/ipo"}),
        ("reward", {"output_dir": "~/runs/ipo"}),
        ("evaluate", {"out": "~/evaluation"}),
    ],
)
def test_output_folders_in_a_config_expand_the_home_folder_as_input_paths_do(tmp_path, monkeypatch, command, paths):
    """No shell expands ``~`` inside a YAML file: psipo must, or the run lands in a folder named '~'."""
    from psipo.lm.config import TrainConfig
    from psipo.lm.evaluate import EvaluateConfig
    from psipo.lm.online import OnlineConfig
    from psipo.lm.reward import RewardConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    cls, required = {
        "train": (TrainConfig, {"model": "m", "train_data": "pairs.jsonl"}),
        "online": (OnlineConfig, {"model": "m", "prompts": "p.jsonl", "algorithm": "online_ipo", "judge": "j.k:f"}),
        "reward": (RewardConfig, {"model": "m", "train_data": "pairs.jsonl"}),
        "evaluate": (EvaluateConfig, {"model": "m", "prompts": "p.jsonl", "judge": "j.k:f"}),
    }[command]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({**required, **paths}))
    loaded = to_dict(load_config(cls, config_file))
    assert {key: loaded[key] for key in paths} == {key: str(tmp_path / value[2:]) for key, value in paths.items()}


# --------------------------------------------------------------------------- bounds and names
# Each test below fails on a mutant that the tests above let through (mutation testing of
# _config.py): a nested key named without its section, a bound off by one, a type too lenient.


@dataclasses.dataclass
class Holder:
    run: Nested
    """A required section: its own required keys are named with the section."""


def test_errors_about_a_nested_key_name_it_with_its_section():
    with pytest.raises(PsipoInputError, match=r"^unknown key 'optim.schedul' \(did you mean 'optim.schedule'\?\)$"):
        from_dict(Nested, {"name": "a", "optim": {"schedul": "linear"}})
    with pytest.raises(PsipoInputError, match=r"^unknown key 'optim.zzz' \(known keys: optim.learning_rate, optim.schedule\)$"):
        from_dict(Nested, {"name": "a", "optim": {"zzz": 1}})
    with pytest.raises(PsipoInputError, match=r"^missing required key 'run.name'$"):
        from_dict(Holder, {"run": {"steps": 1}})


def test_values_of_another_type_are_refused_not_coerced():
    @dataclasses.dataclass
    class Typed:
        pieces: int | Literal["auto"] = "auto"
        """Not nullable."""
        shape: tuple[int, ...] = (1,)
        """A tuple stays a tuple."""

    # null is also what an empty value reads as (`pieces:` in YAML, `--pieces ""`): said as such, not "None"
    with pytest.raises(PsipoInputError, match=r"^key 'pieces': expected int or 'auto', got null \(an empty value\)$"):
        from_dict(Typed, {"pieces": None})
    assert from_dict(Typed, {"shape": [2, 3]}).shape == (2, 3)
    for key, value, expected in [
        ("verbose", 1, "true or false"),
        ("verbose", 0, "true or false"),
    ]:
        with pytest.raises(PsipoInputError, match=rf"^key '{key}': expected {expected}, got {value!r}$"):
            from_dict(Nested, {"name": "a", key: value})
    with pytest.raises(PsipoInputError, match=r"^key 'optim.learning_rate': expected a number, got True$"):
        from_dict(Nested, {"name": "a", "optim": {"learning_rate": True}})


def test_the_64_bit_integer_bounds_are_exact():
    assert from_dict(Nested, {"name": "a", "steps": -(2**63)}).steps == -(2**63)
    for outside in (2**63, -(2**63) - 1):
        with pytest.raises(PsipoInputError, match=rf"^key 'steps': expected an integer of at most 64 bits, got {outside}$"):
            from_dict(Nested, {"name": "a", "steps": outside})


def test_the_nesting_bound_is_exact(tmp_path):
    # The top-level mapping is a level: it and MAX_NESTING - 1 lists are read, one list more is not.
    path = tmp_path / "deep.yaml"
    path.write_text("tags: " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\n")
    with pytest.raises(PsipoInputError, match=rf"deep.yaml:1: nested deeper than {MAX_NESTING} levels"):
        read_yaml_mapping(path)


def test_the_alias_expansion_bound_is_exact(tmp_path):
    # A list of 1000 nodes (itself and 999 items), then aliases to it: exactly the bound is read.
    items = ", ".join(["x"] * 999)
    path = tmp_path / "aliases.yaml"
    for copies, allowed in [(MAX_ALIAS_EXPANSION // 1000, True), (MAX_ALIAS_EXPANSION // 1000 + 1, False)]:
        path.write_text(f"a: &a [{items}]\nb: [{', '.join(['*a'] * copies)}]\n")
        if allowed:
            assert len(read_yaml_mapping(path)[0]["b"]) == copies
        else:
            with pytest.raises(PsipoInputError, match=rf"aliases.yaml:2: aliases expand to more than {MAX_ALIAS_EXPANSION} nodes"):
                read_yaml_mapping(path)


def test_merge_keys_may_repeat_and_an_empty_file_is_an_empty_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("a: &a {x: 1}\nb: &b {y: 2}\nother:\n  <<: *a\n  <<: *b\n")  # two merges are not a key given twice
    assert read_yaml_mapping(path)[0]["other"] == {"x": 1, "y": 2}
    path.write_text("# nothing set yet\n")
    assert read_yaml_mapping(path) == ({}, {})
    with pytest.raises(PsipoInputError, match=r"^.*run.yaml: missing required key 'name'$"):
        load_config(Nested, path)
    assert load_config(Nested, path, {"name": "x"}) == Nested(name="x")


def test_invalid_json_names_the_line_of_the_error_counted_from_the_first_line():
    with pytest.raises(PsipoInputError, match=r"^data.jsonl:8: invalid JSON: Expecting value$"):
        parse_json('{"tau":\n}', "data.jsonl", 7)


def test_an_option_value_that_is_not_yaml_is_taken_as_written_and_help_quotes_string_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Nested)
    args = parser.parse_args(["--name", "a", "--steps", "[1"])  # not YAML: a string, refused by type
    assert overrides_from_args(args)["steps"] == "[1"
    with pytest.raises(PsipoInputError, match=r"^--steps: expected an integer, got '\[1'$"):
        load_config(Nested, None, overrides_from_args(args))
    helps = {a.dest: a.help for a in parser._actions if a.dest.startswith("cfg:")}
    assert helps["cfg:optim.schedule"].endswith("(default: 'cosine')") and helps["cfg:out"].endswith("(default: None)")


def test_an_option_into_a_section_the_file_sets_to_a_value_blames_the_file(tmp_path):
    # `--optim.learning_rate 0.5` over `optim: 3` was a TypeError traceback (from setting a key in 3).
    path = tmp_path / "run.yaml"
    for value, shown in [("3", "3"), ("[1]", r"\[1\]"), ("", "None")]:
        path.write_text(f"name: a\noptim: {value}\n")
        with pytest.raises(PsipoInputError, match=rf"^.*run.yaml:2: key 'optim': expected a mapping of its keys, got {shown}$"):
            load_config(Nested, path, {"optim.learning_rate": 0.5})


def test_a_byte_order_mark_is_dropped_and_a_top_level_that_is_no_mapping_is_one_line(tmp_path):
    # as Windows editors save UTF-8; json.loads refuses the mark, so it is dropped for JSON files too
    assert decode_utf8("\ufeff{}".encode(), "data.json") == "{}"
    path = tmp_path / "run.yaml"
    path.write_text("- name: a\n")
    with pytest.raises(PsipoInputError, match=r"^.*run.yaml: expected a mapping of keys at the top level, got list$"):
        load_config(Nested, path)
    with pytest.raises(PsipoInputError, match=r"^data.jsonl:8: not valid UTF-8 \(byte 0xe9 at column 1\)"):
        decode_utf8(b'{"a": 1}\n\xe9', "data.jsonl", first_line=7)  # one line of a file, from its line 7


def test_help_says_which_keys_are_required():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Nested)
    helps = {a.dest: a.help for a in parser._actions if a.dest.startswith("cfg:")}
    assert helps["cfg:name"] == "Run name (required). (default: 'required')"
