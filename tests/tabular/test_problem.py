"""TabularProblem construction, validation (§8) and problem files."""

from __future__ import annotations

import json
import math

import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.tabular.problem import NO_CONTEXT, SolveSettings, TabularProblem, load_problem

F64 = torch.float64
P3 = [[0.5, 0.7, 0.9], [0.3, 0.5, 0.6], [0.1, 0.4, 0.5]]


def test_create_fills_uniform_defaults_and_one_unnamed_context():
    problem = TabularProblem.create(["a", "b", "c"], P3)
    assert problem.actions == ("a", "b", "c")
    assert problem.contexts == (NO_CONTEXT,) and not problem.has_contexts
    assert problem.preferences.shape == (1, 3, 3) and problem.preferences.dtype == F64
    assert torch.equal(problem.mu, torch.full((1, 3), 1 / 3, dtype=F64))
    assert torch.equal(problem.pi_ref, torch.full((1, 3), 1 / 3, dtype=F64))
    assert torch.equal(problem.rho, torch.ones(1, dtype=F64))
    assert problem.num_actions == 3 and problem.num_contexts == 1


def test_create_with_contexts_broadcasts_shared_tables():
    problem = TabularProblem.create(
        ["a", "b", "c"], P3, mu={"a": 0.5, "b": 0.5}, contexts=["x1", "x2"], rho=[0.25, 0.75]
    )
    assert problem.has_contexts and problem.contexts == ("x1", "x2")
    assert problem.preferences.shape == (2, 3, 3)
    assert problem.mu.tolist() == [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]
    assert problem.rho.tolist() == [0.25, 0.75]
    assert problem.context_index("x2") == 1 and problem.action_index("c") == 2


def test_bradley_terry_table_is_sigmoid_of_reward_gaps():
    problem = TabularProblem.from_bradley_terry(["a", "b"], {"a": math.log(3.0)})
    # σ(log 3 − 0) = 3/4
    expected = torch.tensor([[0.5, 0.75], [0.25, 0.5]], dtype=F64)
    torch.testing.assert_close(problem.preferences[0], expected, rtol=0, atol=1e-15)


def test_inputs_are_copied_and_problem_is_frozen():
    table = torch.tensor(P3, dtype=F64)
    problem = TabularProblem.create(["a", "b", "c"], table)
    table[0, 1] = 0.0
    assert problem.preferences[0, 0, 1] == 0.7
    with pytest.raises(AttributeError):
        problem.actions = ("z",)  # type: ignore[misc]


def test_yaml_style_string_numbers_are_accepted():
    problem = TabularProblem.create(["a", "b"], [[0.5, "1e-3"], ["0.999", 0.5]])
    assert problem.preferences[0, 0, 1] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preferences": [[0.5, 1.3], [-0.3, 0.5]]}, "preferences[0][1]: 1.3 is outside [0, 1]"),
        ({"preferences": [[0.5, 0.7], [0.4, 0.5]]}, "preferences[0][1] + preferences[1][0] = 1.1"),
        ({"preferences": [[0.6, 0.5], [0.5, 0.4]]}, "preferences[0][0]: must be 0.5"),
        ({"preferences": [[0.5, 0.5]]}, "preferences: expected shape [2, 2] or [1, 2, 2], got [1, 2]"),
        ({"preferences": [[0.5, "x"], [0.5, 0.5]]}, "preferences[0][1]: expected a number, got 'x'"),
        ({"preferences": [[0.5, float("nan")], [0.5, 0.5]]}, "preferences[0][1]: nan is not a finite"),
        ({"preferences": [[0.5, 0.5], [0.5]]}, "preferences: expected a rectangular table"),
        ({"mu": [0.5, 0.6]}, "mu: sums to 1.1, not 1"),
        ({"mu": [1.5, -0.5]}, "mu[1]: -0.5 is negative"),
        ({"mu": [1.0]}, "mu: expected shape [2] or [1, 2], got [1]"),
        ({"pi_ref": [0.2, 0.2]}, "pi_ref: sums to 0.4, not 1"),
        ({"pi_ref": {"z": 1.0}}, "pi_ref: unknown action 'z' (actions: a, b)"),
        ({"actions": ["a", "a"]}, "actions[1]: duplicate name 'a'"),
        ({"actions": []}, "actions: expected a non-empty list of names"),
        ({"actions": ["a", 3]}, "actions[1]: expected a non-empty string, got 3"),
        ({"rho": [1.0]}, "rho: given, but the problem has no contexts"),
        ({"contexts": ["x", "y"], "rho": [0.5, 0.6]}, "rho: sums to 1.1, not 1"),
    ],
)
def test_bad_input_names_the_field(kwargs, message):
    arguments = {"actions": ["a", "b"], "preferences": [[0.5, 0.5], [0.5, 0.5]], **kwargs}
    with pytest.raises(PsipoInputError) as info:
        TabularProblem.create(arguments.pop("actions"), arguments.pop("preferences"), **arguments)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_tolerance_of_p_plus_p_transpose_is_tight():
    TabularProblem.create(["a", "b"], [[0.5, 0.7], [0.3 + 1e-12, 0.5]])
    with pytest.raises(PsipoInputError, match="must be 1"):
        TabularProblem.create(["a", "b"], [[0.5, 0.7], [0.3 + 1e-7, 0.5]])


def test_direct_construction_is_validated_too():
    with pytest.raises(PsipoInputError, match=r"mu\[0\]: sums to 0.5"):
        TabularProblem(
            actions=("a", "b"),
            contexts=(NO_CONTEXT,),
            preferences=torch.full((1, 2, 2), 0.5, dtype=F64),
            mu=torch.tensor([[0.25, 0.25]], dtype=F64),
            pi_ref=torch.full((1, 2), 0.5, dtype=F64),
            rho=torch.ones(1, dtype=F64),
        )


def test_unknown_names_in_lookups():
    problem = TabularProblem.create(["a", "b"], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(PsipoInputError, match="y_w: unknown action 'z'"):
        problem.action_index("z", field="y_w")
    with pytest.raises(PsipoInputError, match="the problem has no contexts"):
        problem.context_index("x")


# --------------------------------------------------------------------------- files


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_yaml_problem_with_settings(tmp_path):
    path = write(
        tmp_path,
        "p.yaml",
        "actions: [a, b]\npreferences: [[0.5, 0.8], [0.2, 0.5]]\nmu: [0.25, 0.75]\ntau: 0.5\npsi: logit\n",
    )
    problem, settings = load_problem(path)
    assert problem.mu.tolist() == [[0.25, 0.75]]
    assert problem.pi_ref.tolist() == [[0.5, 0.5]]
    assert settings == SolveSettings(tau=0.5, psi="logit")


def test_load_json_problem_defaults_psi_and_needs_no_tau(tmp_path):
    path = write(tmp_path, "p.json", json.dumps({"actions": ["a", "b"], "rewards": {"a": 1.0}}))
    problem, settings = load_problem(path)
    assert problem.preferences[0, 0, 1].item() == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert settings == SolveSettings(tau=None, psi="identity")


def test_contexts_inherit_top_level_defaults(tmp_path):
    path = write(
        tmp_path,
        "c.yaml",
        """\
actions: [a, b]
preferences: [[0.5, 0.9], [0.1, 0.5]]
mu: [0.5, 0.5]
contexts:
  - name: first
    rho: 0.2
  - name: second
    rho: 0.8
    rewards: [0.0, 1.0]
    pi_ref: {a: 1.0}
""",
    )
    problem, _ = load_problem(path)
    assert problem.contexts == ("first", "second")
    assert problem.rho.tolist() == [0.2, 0.8]
    assert problem.preferences[0, 0, 1] == 0.9
    assert problem.preferences[1, 1, 0].item() == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert problem.pi_ref.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    assert problem.mu.tolist() == [[0.5, 0.5], [0.5, 0.5]]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "actions: [a, b]\npreferences: [[0.5, 1.3],\n   [-0.3, 0.5]]\n",
         "bad.yaml:2: preferences[0][1]: 1.3 is outside [0, 1]"),
        ("bad.yaml", "actions: [a, b]\npreferences:\n  - [0.5, 0.7]\n  - [0.4, 0.5]\n",
         "bad.yaml:3: preferences[0][1] + preferences[1][0] = 1.1"),
        ("bad.yaml", "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\nmu: [0.5, 0.6]\n",
         "bad.yaml:3: mu: sums to 1.1"),
        ("bad.yaml", "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\nmu: {a: 0.5, z: 0.5}\n",
         "bad.yaml:3: mu: unknown action 'z'"),
        ("bad.yaml", "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\ntemperature: 1\n",
         "bad.yaml:3: temperature: unknown key (known keys: actions, preferences"),
        ("bad.yaml", "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\ntau: -1\n",
         "bad.yaml:3: tau: must be > 0, got -1.0"),
        ("bad.yaml", "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\npsi: square\n",
         "bad.yaml:3: key 'psi': expected one of 'identity', 'logit', got 'square'"),
        ("bad.yaml", "actions: [a, b\npreferences: 1\n", "bad.yaml:2: invalid YAML"),
        ("bad.yaml", "- a\n- b\n", "bad.yaml: expected a mapping of keys at the top level, got list"),
        ("bad.json", "[1, 2]", "bad.json: expected a mapping of keys at the top level, got list"),
        ("bad.yaml", "actions: [a]\npreferences: [[0.5]]\ntau: fast\n",
         "bad.yaml:3: key 'tau': expected float or null, got 'fast'"),
        ("bad.yaml", "preferences: [[0.5]]\n", "bad.yaml: actions: missing required key"),
        ("bad.yaml", "actions: [a]\n", "bad.yaml: preferences: missing required key (or give rewards)"),
        ("bad.json", '{"actions": ["a", "b"],\n "preferences": [[0.5, 0.5] [0.5, 0.5]]}',
         "bad.json:2: invalid JSON"),
        ("bad.yaml",
         "actions: [a, b]\ncontexts:\n  - name: x\n    preferences: [[0.5, 0.5], [0.5, 0.5]]\n"
         "    mu: [0.9, 0.9]\n", "bad.yaml:5: contexts[0].mu: sums to 1.8"),
        ("bad.yaml",
         "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\ncontexts:\n  - {name: x, rho: 1}\n"
         "  - {name: y}\n", "contexts[1].rho: missing (give rho for every context or for none)"),
        ("bad.yaml",
         "actions: [a, b]\ncontexts:\n  - name: x\n    preferences: [[0.5, 0.2], [0.8, 0.5]]\n"
         "    rewards: [1, 2]\n", "contexts[0].rewards: give either preferences or rewards"),
        ("bad.yaml",
         "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\ncontexts:\n  - {name: x, colour: 1}\n",
         "bad.yaml:4: contexts[0].colour: unknown key"),
    ],
)
def test_problem_file_errors_name_file_line_and_key(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(PsipoInputError) as info:
        load_problem(path)
    assert str(info.value).startswith(str(tmp_path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_problem_file(tmp_path):
    with pytest.raises(PsipoInputError, match="nope.yaml: problem file not found"):
        load_problem(tmp_path / "nope.yaml")
    with pytest.raises(PsipoInputError, match=r"^.*problems\.yaml: is a folder, not a problem file$"):
        load_problem((tmp_path / "problems.yaml").mkdir() or tmp_path / "problems.yaml")


def test_an_empty_problem_path_is_refused_and_a_home_one_is_read(tmp_path, monkeypatch):
    # `psipo solve ""` said ".: is a folder"; a quoted "~/p.yaml" was "not found"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PsipoInputError, match=r"^empty path; name a problem file$"):
        load_problem("")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "p.yaml").write_text("actions: [a, b]\nrewards: {a: 1.0, b: 0.0}\ntau: 0.5\n")
    problem, _ = load_problem("~/p.yaml")
    assert problem.num_actions == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"actions": ["a", "b"],\n "preferences": [[0.5, 1.5],\n   [-0.5, 0.5]]}',
         "p.json:2: preferences[0][1]: 1.5 is outside [0, 1]"),
        ('{"actions": ["a", "b"],\n "preferences": [[0.5, 0.5],\n   [0.5, 0.5]],\n "psi": "square"}',
         "p.json:4: key 'psi': expected one of 'identity', 'logit'"),
        ('{"actions": ["a", "b"], "preferences": [[0.5, 0.5], [0.5, 0.5]],\n'
         ' "contexts": [{"name": "x,[y]\\"", "rho": 1,\n  "mu": [0.9, 0.9]}]}',
         "p.json:3: contexts[0].mu: sums to 1.8"),
        ('{"actions": ["a", "b"],\n\t"preferences": [[0.5, 0.5], [0.5, 0.5]],\n"tau": 1e999}',
         "p.json:3: tau: must be a finite number, got inf"),
    ],
)
def test_json_problem_errors_name_the_line(tmp_path, text, message):
    with pytest.raises(PsipoInputError) as info:
        load_problem(write(tmp_path, "p.json", text))
    assert message in str(info.value)


def test_a_valid_json_problem_is_parsed_as_json_only(tmp_path, monkeypatch):
    """One json parse and nothing else: no YAML pass (it made a 1000×1000 problem take over a
    minute) and no scan for line numbers, which only an error needs."""
    import yaml

    def forbidden(*args, **kwargs):
        raise AssertionError("a valid JSON problem file went through YAML or the line scan")

    for helper in ("safe_load", "compose", "load"):
        monkeypatch.setattr(yaml, helper, forbidden)
    monkeypatch.setattr("psipo.tabular.problem.read_yaml_mapping", forbidden)
    monkeypatch.setattr("psipo.tabular.problem._json_lines", forbidden)
    path = write(tmp_path, "p.json", json.dumps({"actions": ["a", "b"], "preferences": [[0.5, 0.8], [0.2, 0.5]]}))
    assert load_problem(path)[0].preferences[0, 0, 1] == 0.8


def test_yaml_aliases_share_tables_and_bombs_are_refused(tmp_path):
    shared = (
        "actions: [a, b]\ntable: &t [[0.5, 0.9], [0.1, 0.5]]\n"
        "contexts:\n  - {name: x, preferences: *t}\n  - {name: y, preferences: *t, mu: [0.7, 0.7]}\n"
    ).replace("table: &t", "preferences: &t")
    with pytest.raises(PsipoInputError, match=r"p.yaml:5: contexts\[1\].mu: sums to 1.4"):
        load_problem(write(tmp_path, "p.yaml", shared))
    problem, _ = load_problem(write(tmp_path, "p.yaml", shared.replace("0.7, 0.7", "0.3, 0.7")))
    assert problem.preferences[1, 0, 1] == 0.9
    bomb = "actions: [a, b]\nl0: &l0 [0.5, 0.5]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
    )
    with pytest.raises(PsipoInputError, match=r"bomb.yaml:\d+: aliases expand to more than"):
        load_problem(write(tmp_path, "bomb.yaml", bomb))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("deep.json", '{"actions": ' + "[" * 100_000 + "]" * 100_000 + "}", "deep.json:1: JSON nested too deeply"),
        ("deep.yaml", "actions: " + "[" * 100_000 + "]" * 100_000, "deep.yaml:1: nested deeper than"),
        ("bad.json", b'{"actions": ["a", "b"],\n "preferences": "\xff"}', "bad.json:2: not valid UTF-8 (byte 0xff"),
        ("bad.yaml", b"actions: [a, b]\npreferences: \xff\n", "bad.yaml:2: not valid UTF-8 (byte 0xff"),
        ("inf.yaml", "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\ntau: .inf\n",
         "inf.yaml:3: tau: must be a finite number, got inf"),
        ("nan.yaml", "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\ntau: .nan\n",
         "nan.yaml:3: tau: must be a finite number, got nan"),
    ],
)
def test_hostile_problem_files_give_one_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(PsipoInputError) as info:
        load_problem(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_settings_given_as_overrides_are_blamed_on_the_option(tmp_path):
    path = write(tmp_path, "p.yaml", "actions: [a, b]\npreferences: [[0.5, 0.5], [0.5, 0.5]]\ntau: -1\n")
    assert load_problem(path, {"tau": 2.0})[1].tau == 2.0  # the option replaces the file's bad value
    with pytest.raises(PsipoInputError, match=r"^--tau: must be > 0, got -3.0$"):
        load_problem(path, {"tau": -3.0})
    with pytest.raises(PsipoInputError, match=r"^--psi: expected one of"):
        load_problem(path, {"tau": 1.0, "psi": "square"})


# --------------------------------------------------------------------------- log-odds (review)


def test_log_odds_are_antisymmetric_and_exact_where_p_rounds_to_one():
    table = TabularProblem.create(["a", "b"], [[0.5, 1 - 1e-17], [1e-17, 0.5]])
    assert table.log_odds[0, 0, 1].item() == pytest.approx(-math.log(1e-17), rel=1e-15)
    assert torch.equal(table.log_odds, -table.log_odds.transpose(-1, -2))
    # Bradley–Terry problems keep r_i − r_j exactly, also through problem files
    problem = TabularProblem.from_bradley_terry(["a", "b", "c"], [20.0, -20.0, 3.0])
    assert problem.log_odds[0].tolist() == [[0.0, 40.0, 17.0], [-40.0, 0.0, -23.0], [-17.0, 23.0, 0.0]]
    deterministic = TabularProblem.create(["a", "b"], [[0.5, 1.0], [0.0, 0.5]])
    assert deterministic.log_odds[0].tolist() == [[0.0, math.inf], [-math.inf, 0.0]]


def test_problem_files_keep_reward_gaps(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "actions: [a, b]\nrewards: {a: 400, b: -400}\ncontexts:\n"
        "  - {name: x}\n  - {name: y, preferences: [[0.5, 0.75], [0.25, 0.5]]}\n"
    )
    problem, _ = load_problem(path)
    assert problem.log_odds[0, 0, 1].item() == 800.0
    assert problem.log_odds[1, 0, 1].item() == pytest.approx(math.log(3.0), rel=1e-15)


@pytest.mark.parametrize(
    ("log_odds", "message"),
    [
        ([[0.0, 1.0], [1.0, 0.0]], r"log_odds\[0\]\[0\]\[1\]: must be antisymmetric"),
        ([[0.0, 2.0], [-2.0, 0.0]], r"log_odds\[0\]\[0\]\[1\]: σ\(2\) does not match preferences"),
        ([[0.0, float("nan")], [0.0, 0.0]], r"log_odds\[0\]\[1\]: nan is not a finite number|log_odds.*NaN"),
        ([0.0, 1.0], r"log_odds: expected shape"),
    ],
)
def test_given_log_odds_must_match_the_table(log_odds, message):
    with pytest.raises(PsipoInputError, match=message):
        TabularProblem.create(["a", "b"], [[0.5, sigmoid_of(1.0)], [1 - sigmoid_of(1.0), 0.5]], log_odds=log_odds)


def sigmoid_of(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))
