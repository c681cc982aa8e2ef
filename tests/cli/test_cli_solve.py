"""`psipo solve`: output against hand-derived values, and every bad input → one line, exit 2."""

from __future__ import annotations

import errno
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from psipo.cli import main
from psipo.errors import PsipoInputError
from psipo.tabular import TabularProblem, load_problem, optimal_policy

PSIPO = [sys.executable, "-m", "psipo"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "problems"


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def run_psipo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PSIPO, *map(str, args)], capture_output=True, text=True, timeout=120)


def two_action_statistics(s: float) -> tuple[float, float]:
    """π = (s, 1 − s) on §5.3.1 (p*(y1≻y2) = 1, uniform µ, π_ref): p*(y1≻µ) = 3/4,
    p*(y2≻µ) = 1/4, so total preference = 3s/4 + (1 − s)/4; KL = Σ π log(2π)."""
    total = 0.75 * s + 0.25 * (1 - s)
    kl = s * math.log(2 * s) + (1 - s) * math.log(2 * (1 - s))
    return total, kl


def test_yaml_example_table_and_json_with_overrides():
    table = run_psipo("solve", EXAMPLES / "two_actions.yaml")
    assert table.returncode == 0, table.stderr
    s = sigmoid(0.5)  # IPO, τ = 1 (from the file): σ(0.5/τ)
    assert f"{s:.6f}" in table.stdout and f"{1 - s:.6f}" in table.stdout
    for label in ("objective (Eq. 6)", "total preference", "KL"):
        assert label in table.stdout

    result = run_psipo("solve", EXAMPLES / "two_actions.yaml", "--tau", "0.25", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    s = sigmoid(0.5 / 0.25)
    total, kl = two_action_statistics(s)
    assert data["tau"] == 0.25 and data["psi"] == "identity"
    assert set(data["policy"]) == {"y1", "y2"}
    assert data["policy"]["y1"] == pytest.approx(s, rel=1e-12)
    assert data["policy"]["y2"] == pytest.approx(1 - s, rel=1e-12)
    assert data["total_preference"] == pytest.approx(total, rel=1e-12)
    assert data["kl"] == pytest.approx(kl, rel=1e-12)
    assert data["objective"] == pytest.approx(total - 0.25 * kl, rel=1e-12)


def test_json_file_with_logit_psi(tmp_path):
    """Uniform µ, p*(a≻b) = 0.8, π_ref = (1/4, 3/4), τ = 1/2, Ψ = logit: g(a) − g(b) = logit(0.8)
    = log 4, so π(a)/π(b) = (1/3)·e^{2 log 4} = 16/3 and π(a) = 16/19."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps({
        "actions": ["a", "b"], "preferences": [[0.5, 0.8], [0.2, 0.5]],
        "mu": [0.5, 0.5], "pi_ref": [0.25, 0.75], "tau": 0.5, "psi": "logit",
    }))
    data = json.loads(run_psipo("solve", path, "--json").stdout)
    assert data["policy"]["a"] == pytest.approx(16 / 19, rel=1e-12)
    # total preference: π(a)·p*(a≻µ) + π(b)·p*(b≻µ) = (16/19)(0.65) + (3/19)(0.35)
    assert data["total_preference"] == pytest.approx((16 * 0.65 + 3 * 0.35) / 19, rel=1e-12)
    kl = (16 / 19) * math.log((16 / 19) / 0.25) + (3 / 19) * math.log((3 / 19) / 0.75)
    assert data["kl"] == pytest.approx(kl, rel=1e-12)


def test_logit_with_deterministic_preference_is_deterministic_and_infinite(capsys):
    assert main(["solve", str(EXAMPLES / "two_actions.yaml"), "--psi", "logit", "--tau", "100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["policy"] == {"y1": 1.0, "y2": 0.0}
    assert data["objective"] == "inf"  # JSON has no infinity
    assert data["kl"] == pytest.approx(math.log(2), rel=1e-15)
    assert data["total_preference"] == 0.75


def test_contexts_give_a_policy_per_context(tmp_path, capsys):
    """Context u is §5.3.1 (π*(y1) = σ(0.5/τ) = σ(1) at τ = 1/2); in v the actions tie (uniform)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "actions: [y1, y2]\ntau: 0.5\ncontexts:\n"
        "  - {name: u, rho: 0.25, preferences: [[0.5, 1], [0, 0.5]]}\n"
        "  - {name: v, rho: 0.75, preferences: [[0.5, 0.5], [0.5, 0.5]]}\n"
    )
    assert main(["solve", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["policy"]) == {"u", "v"}
    assert data["policy"]["u"]["y1"] == pytest.approx(sigmoid(1.0), rel=1e-12)
    assert data["policy"]["v"] == {"y1": 0.5, "y2": 0.5}
    total_u, kl_u = two_action_statistics(sigmoid(1.0))
    assert data["total_preference"] == pytest.approx(0.25 * total_u + 0.75 * 0.5, rel=1e-12)
    assert data["kl"] == pytest.approx(0.25 * kl_u, rel=1e-12)
    assert main(["solve", str(path)]) == 0
    assert "context" in capsys.readouterr().out


GOOD = "actions: [a, b]\npreferences: [[0.5, 0.7], [0.3, 0.5]]\ntau: 1\n"
RPS = (EXAMPLES / "rock_paper_scissors.yaml").read_text()


@pytest.mark.parametrize(
    ("name", "text", "extra", "message"),
    [
        ("t.yaml", "actions: [a, b]\npreferences: [[0.5, 1.2], [-0.2, 0.5]]\ntau: 1\n", [],
         "t.yaml:2: preferences[0][1]: 1.2 is outside [0, 1]"),
        ("t.yaml", "actions: [a, b]\npreferences: [[0.5, 0.7], [0.7, 0.5]]\ntau: 1\n", [],
         "preferences[0][1] + preferences[1][0] = 1.4"),
        ("t.yaml", GOOD + "mu: [0.7, 0.7]\n", [], "t.yaml:4: mu: sums to 1.4, not 1"),
        ("t.yaml", GOOD + "pi_ref: [1.5, -0.5]\n", [], "t.yaml:4: pi_ref[1]: -0.5 is negative"),
        ("t.yaml", GOOD.replace("tau: 1", "tau: 0"), [], "t.yaml:3: tau: must be > 0, got 0.0"),
        ("t.yaml", GOOD, ["--tau", "-2"], "tau: must be > 0, got -2.0"),
        ("t.yaml", GOOD.replace("tau: 1\n", ""), [], "tau: not given"),
        ("t.yaml", GOOD + "mu: {a: 0.5, c: 0.5}\n", [], "t.yaml:4: mu: unknown action 'c'"),
        ("t.yaml", GOOD + "beta: 0.1\n", [], "t.yaml:4: beta: unknown key"),
        ("t.yaml", "actions: [a, b\n", [], "t.yaml:2: invalid YAML"),
        ("t.json", '{"actions": ["a", "b"],\n "tau": 1,,}', [], "t.json:2: invalid JSON"),
        ("missing.yaml", None, [], "missing.yaml: problem file not found"),
        ("t.yaml", GOOD, ["--target", "best"], "--target: expected one of 'optimum', 'nash', 'ipo_md', got 'best'"),
        ("t.yaml", GOOD + "target: best\n", [], "t.yaml:4: key 'target': expected one of 'optimum', 'nash', 'ipo_md'"),
        ("t.yaml", GOOD + "psi: logit\n", ["--target", "nash"], "t.yaml:4: psi: logit does not apply to target nash"),
        ("t.yaml", GOOD + "psi: logit\n", ["--target", "ipo_md"], "t.yaml:4: psi: logit does not apply to target ipo_md"),
        ("t.yaml", GOOD, ["--target", "ipo_md", "--mixture", "1.5"], "--mixture: must be in [0, 1], got 1.5"),
        ("t.yaml", GOOD + "mixture: 0.5\n", [], "t.yaml:4: mixture: applies only to target ipo_md, not optimum"),
        ("t.yaml", RPS, ["--tau", "1e-9"], "--tau: the Nash equilibrium did not converge at tau = 1e-09: residual "),
        ("t.yaml", GOOD + "contexts:\n  - {name: x, rho: .nan}\n  - {name: y, rho: 0.5}\n", [],
         "t.yaml:5: contexts[0].rho: must be a finite number, got nan"),
        ("t.yaml", GOOD + "contexts:\n  - {name: x, rho: 1.5}\n  - {name: y, rho: -0.5}\n", [],
         "t.yaml:6: contexts[1].rho: must be >= 0, got -0.5"),
        ("t.yaml", GOOD + "contexts:\n  - {name: x, rho: [1.0]}\n", [],
         "t.yaml:5: contexts[0].rho: expected one number (this context's probability), got [1.0]"),
        ("t.yaml", GOOD + "contexts:\n  - {name: x, rho: 0.7}\n  - {name: y, rho: 0.5}\n", [],
         "t.yaml:4: contexts: the contexts' rho sum to 1.2, not 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, name, text, extra, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    assert main(["solve", str(path), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("psipo: error: ")
    assert message in lines[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("actions: [a, b]\npreferences: [[0.5, 0.9], [0.9, 0.5]]\ntau: 1\n", "preferences[0][1] + preferences[1][0]"),
        ("actions: [a, b]\npreferences: [[0.5, 0.9],\n", "invalid YAML"),
    ],
)
def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_psipo("solve", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("psipo: error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_non_monotone_psi_via_the_python_api():
    problem = TabularProblem.create(["a", "b"], [[0.5, 0.7], [0.3, 0.5]])
    with pytest.raises(PsipoInputError, match="psi: Ψ must be non-decreasing"):
        optimal_policy(problem, tau=1.0, psi=lambda q: (q - 0.5) ** 2)


def strict_json(text: str) -> dict:
    """Parse JSON as the standard has it: no Infinity, -Infinity or NaN tokens."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_tiny_tau_is_solved_and_printed_faithfully(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace("tau: 1", "tau: 1e-300"))
    table = run_psipo("solve", path)
    assert table.returncode == 0, table.stderr
    assert "tau = 1e-300" in table.stdout
    data = strict_json(run_psipo("solve", path, "--json").stdout)
    assert data["tau"] == 1e-300 and data["policy"] == {"a": 1.0, "b": 0.0}  # τ → 0: the best action


@pytest.mark.parametrize(
    ("tau_line", "extra", "message"),
    [
        ("tau: 1e-310", [], "t.yaml:3: tau: 1e-310 is too small to solve in float64"),
        ("tau: 1", ["--tau", "1e-310"], "--tau: 1e-310 is too small to solve in float64"),
        ("tau: .inf", ["--json"], "t.yaml:3: tau: must be a finite number, got inf"),
        ("tau: 1", ["--tau", "inf", "--json"], "--tau: must be a finite number, got inf"),
        ("tau: 1", ["--tau", "0"], "--tau: must be > 0, got 0.0"),
    ],
)
def test_unusable_tau_is_one_line_naming_where_it_was_set(tmp_path, capsys, tau_line, extra, message):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace("tau: 1", tau_line))
    assert main(["solve", str(path), *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("psipo: error: ") and message in lines[0]


def test_json_output_is_strict_json_when_values_are_not_finite(tmp_path):
    result = run_psipo("solve", EXAMPLES / "two_actions.yaml", "--psi", "logit", "--json")
    assert result.returncode == 0, result.stderr
    data = strict_json(result.stdout)
    assert data["objective"] == "inf"


# --------------------------------------------------------------------------- --target nash


def nash_map(preferences: list, pi_ref: list, pi: list, tau: float) -> list:
    """T(π)(y) ∝ π_ref(y)·exp(p*(y≻π)/τ), p*(y≻π) = Σ_y' π(y')p*(y≻y'): the equilibrium solves π = T(π)."""
    against = [sum(q * p for q, p in zip(pi, row)) for row in preferences]
    weights = [r * math.exp(a / tau) for r, a in zip(pi_ref, against)]
    return [w / sum(weights) for w in weights]


def test_target_nash_prints_the_equilibrium_of_rock_paper_scissors():
    """The example file sets target: nash; its π_ref leans on rock, so π* is not uniform."""
    table = run_psipo("solve", EXAMPLES / "rock_paper_scissors.yaml")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("Nash equilibrium (online IPO, Nash-MD)")
    for label in ("pi_ref", "p*(y≻pi*)", "pi*", "preference p*(π*≻π_ref)", "KL(π*‖π_ref)", "residual"):
        assert label in table.stdout
    data = strict_json(run_psipo("solve", EXAMPLES / "rock_paper_scissors.yaml", "--json").stdout)
    assert data["target"] == "nash" and data["tau"] == 0.5
    actions = ["rock", "paper", "scissors"]
    preferences = [[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]]
    pi_ref = [0.5, 0.25, 0.25]
    pi = [data["policy"][a] for a in actions]
    assert pi == pytest.approx(nash_map(preferences, pi_ref, pi, 0.5), rel=0, abs=1e-10)
    assert data["residual"] < 1e-12 and isinstance(data["iterations"], int)
    assert data["kl"] == pytest.approx(sum(q * math.log(q / r) for q, r in zip(pi, pi_ref)), rel=1e-12)
    against_ref = [sum(r * p for r, p in zip(pi_ref, row)) for row in preferences]
    assert data["preference_over_reference"] == pytest.approx(sum(q * a for q, a in zip(pi, against_ref)), rel=1e-12)
    assert table.stdout.count(f"{data['policy']['paper']:.6f}") == 1


def test_target_option_overrides_the_file(capsys):
    assert main(["solve", str(EXAMPLES / "rock_paper_scissors.yaml"), "--target", "optimum", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "target" not in data and "objective" in data
    assert main(["solve", str(EXAMPLES / "two_actions.yaml"), "--target", "nash", "--tau", "0.25", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # two actions: p*(y1≻π) − p*(y2≻π) = p − 1/2 for every π, so π*(y1) = σ((p − 1/2)/τ) = σ(2)
    assert data["policy"]["y1"] == pytest.approx(sigmoid(2.0), rel=1e-12)


def test_target_nash_with_uniform_reference_on_rock_paper_scissors_is_uniform(tmp_path, capsys):
    path = tmp_path / "rps.yaml"
    path.write_text(RPS.replace("pi_ref: {rock: 0.5, paper: 0.25, scissors: 0.25}", "tau: 0.01").replace("tau: 0.5\n", ""))
    assert main(["solve", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tau"] == 0.01
    assert list(data["policy"].values()) == pytest.approx([1 / 3] * 3, rel=0, abs=1e-12)


def test_target_nash_with_contexts(capsys):
    assert main(["solve", str(EXAMPLES / "contexts.yaml"), "--target", "nash", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["policy"]) == {"chit-chat", "harmful-request"}
    problem, _ = load_problem(EXAMPLES / "contexts.yaml")
    for x, context in enumerate(problem.contexts):
        pi = [data["policy"][context][a] for a in problem.actions]
        expected = nash_map(problem.preferences[x].tolist(), problem.pi_ref[x].tolist(), pi, 0.5)
        assert pi == pytest.approx(expected, rel=0, abs=1e-10)
    assert main(["solve", str(EXAMPLES / "contexts.yaml"), "--target", "nash"]) == 0
    assert "harmful-request" in capsys.readouterr().out


# --------------------------------------------------------------------------- --target ipo_md


def ipo_md_map(preferences: list, pi_ref: list, pi: list, tau: float, beta: float) -> list:
    """T_β(π) = nash_map with the opponent π_β ∝ π^(1−β)·π_ref^β in place of π."""
    mixed = [q ** (1 - beta) * r**beta for q, r in zip(pi, pi_ref)]
    return nash_map(preferences, pi_ref, [m / sum(mixed) for m in mixed], tau)


def test_target_ipo_md_prints_its_fixed_point_between_nash_and_eq9(capsys):
    """On rock–paper–scissors with π_ref leaning on rock: self-consistent, π_β as printed, and
    Nash at β = 0; in between it differs from Nash."""
    path = str(EXAMPLES / "rock_paper_scissors.yaml")
    assert main(["solve", path, "--target", "ipo_md", "--mixture", "0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"] == "ipo_md" and data["mixture"] == 0.5 and data["tau"] == 0.5
    actions = ["rock", "paper", "scissors"]
    preferences = [[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]]
    pi_ref = [0.5, 0.25, 0.25]
    pi = [data["policy"][a] for a in actions]
    assert pi == pytest.approx(ipo_md_map(preferences, pi_ref, pi, 0.5, 0.5), rel=0, abs=1e-10)
    mixed = [q**0.5 * r**0.5 for q, r in zip(pi, pi_ref)]
    assert [data["mixture_policy"][a] for a in actions] == pytest.approx([m / sum(mixed) for m in mixed], abs=1e-14)
    assert data["residual"] < 1e-12 and isinstance(data["iterations"], int)

    def policy(*options: str) -> list:
        assert main(["solve", path, *options, "--json"]) == 0
        solution = json.loads(capsys.readouterr().out)["policy"]
        return [solution[a] for a in actions]

    nash = policy("--target", "nash")
    assert max(abs(a - b) for a, b in zip(pi, nash)) > 0.01
    assert policy("--target", "ipo_md") == pytest.approx(nash, abs=1e-12)  # β = 0 by default

    assert main(["solve", path, "--target", "ipo_md", "--mixture", "0.5"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("IPO-MD fixed point")
    for label in ("pi_ref", "pi_beta", "p*(y≻pi_beta)", "pi*", "residual", f"{data['policy']['paper']:.6f}"):
        assert label in table


def test_target_ipo_md_with_contexts_from_the_file(tmp_path, capsys):
    path = tmp_path / "contexts.yaml"
    path.write_text((EXAMPLES / "contexts.yaml").read_text() + "target: ipo_md\nmixture: 0.3\n")
    assert main(["solve", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    problem, settings = load_problem(path)
    assert settings.target == "ipo_md" and settings.mixture == 0.3
    for x, context in enumerate(problem.contexts):
        pi = [data["policy"][context][a] for a in problem.actions]
        expected = ipo_md_map(problem.preferences[x].tolist(), problem.pi_ref[x].tolist(), pi, settings.tau, 0.3)
        assert pi == pytest.approx(expected, rel=0, abs=1e-10)


def test_output_into_a_pipe_whose_reader_has_gone_ends_quietly_with_141():
    """`psipo solve … --json | head -1`: once head has what it wants, no traceback follows."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before psipo writes
    try:
        result = subprocess.run(
            [sys.executable, "-m", "psipo", "solve", str(EXAMPLES / "two_actions.yaml"), "--json"], stdout=write_end, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


class _FullDisk:
    """A stdout on a full disk (`psipo solve … > out.json`): every write, or every flush, fails."""

    def __init__(self, fail_flush: bool = False) -> None:
        self.fail_flush = fail_flush

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        if self.fail_flush:
            raise OSError(errno.ENOSPC, "No space left on device")


def test_output_onto_a_full_disk_is_one_line_exit_1(monkeypatch, capsys):
    import psipo.cli

    monkeypatch.setattr(sys, "stdout", _FullDisk())
    assert main(["solve", str(EXAMPLES / "two_actions.yaml"), "--json"]) == 1
    assert capsys.readouterr().err == "psipo: error: cannot write to stdout: No space left on device\n"
    # output that reaches the disk only at exit, in psipo's final flush; or a pipe that closes then
    monkeypatch.setattr(psipo.cli, "main", lambda: 0)
    dropped: list[bool] = []
    monkeypatch.setattr(psipo.cli, "_stdout_to_devnull", lambda: dropped.append(True))
    for stdout, code, err in [
        (_FullDisk(fail_flush=True), 1, "psipo: error: cannot write to stdout: No space left on device\n"),
        (_HeldOutput(BrokenPipeError(errno.EPIPE, "Broken pipe")), 141, ""),
    ]:
        dropped.clear()
        monkeypatch.setattr(sys, "stdout", stdout)
        with pytest.raises(SystemExit) as exit_info:
            psipo.cli.run()
        assert exit_info.value.code == code and dropped == [True]
        assert capsys.readouterr().err == err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_output_into_dev_full_names_stdout_in_one_line_exit_1(json_flag):
    """`psipo solve … > /dev/full`: one line says where the output was going (it said "the output")."""
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*PSIPO, "solve", str(EXAMPLES / "two_actions.yaml"), *json_flag], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert (result.returncode, result.stderr) == (1, "psipo: error: cannot write to stdout: No space left on device\n")


def test_output_with_stdout_closed_names_stdout_in_one_line_exit_1():
    """`psipo solve … >&-`: Python's print drops output to a closed stdout without a word, and the
    final flush met None (a traceback); now the first write fails as a closed descriptor's."""
    result = subprocess.run(
        ["sh", "-c", '"$0" "$@" >&-', *PSIPO, "solve", str(EXAMPLES / "two_actions.yaml")], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stderr) == (1, "psipo: error: cannot write to stdout: Bad file descriptor\n")
    # bad input with stdout closed is still bad input (the final flush has no stdout to flush)
    result = subprocess.run(["sh", "-c", '"$0" "$@" >&-', *PSIPO, "solve", "missing.yaml"], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (2, "psipo: error: missing.yaml: problem file not found\n")


def test_a_nameless_write_failure_elsewhere_is_not_blamed_on_stdout(monkeypatch, capsys):
    """A full disk met by a file object (a library's, say) has no file name; it is not stdout's."""

    def failing(args):
        print("written to stdout")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("psipo.cli.solve.run", failing)
    assert main(["solve", "p.yaml"]) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("written to stdout\n", "psipo: error: cannot write the output: No space left on device\n")


class _HeldOutput:
    """A stdout that takes writes into its buffer, and whose flush fails with ``error``."""

    def __init__(self, error: OSError) -> None:
        self.error = error

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        raise self.error


def test_a_file_error_with_unflushable_output_is_one_line_and_the_output_is_dropped(monkeypatch, capsys):
    # A file the system will not write, with output still buffered for a full disk: main flushes
    # it (and drops it when that fails too) before its one line, so that exit does not add a second.
    import psipo.cli

    def failing(args):
        print("part of a table")
        raise OSError(errno.ENOSPC, "No space left on device", "out.json")

    dropped = []
    monkeypatch.setattr("psipo.cli.solve.run", failing)
    monkeypatch.setattr(sys, "stdout", _HeldOutput(OSError(errno.ENOSPC, "No space left on device")))
    monkeypatch.setattr(psipo.cli, "_stdout_to_devnull", lambda: dropped.append(True))
    assert main(["solve", "p.yaml"]) == 1
    assert dropped == [True]
    assert capsys.readouterr().err == "psipo: error: out.json: No space left on device\n"

