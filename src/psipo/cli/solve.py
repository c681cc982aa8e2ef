"""`psipo solve PROBLEM_FILE`: the exact ΨPO optimum of a tabular problem, as a table or JSON.

Prints the optimal policy π* (Eq. 7/9) with, per action, µ, π_ref and p*(y≻µ), then the
objective (Eq. 6), the total preference p*_ρ(π*≻µ) and KL(π*‖π_ref). ``--json`` prints

    {"tau": ..., "psi": ..., "policy": {"a": 0.6, ...}, "objective": ...,
     "total_preference": ..., "kl": ...}

where ``policy`` maps action → probability, or context → (action → probability) for a
problem with contexts. JSON has no infinity: an objective that genuinely diverges (Ψ = logit
with deterministic preferences) is written as the string "inf" or "-inf".
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from psipo._config import add_arguments, from_dict, overrides_from_args, to_dict
from psipo.errors import PsipoInputError
from psipo.tabular.exact import (
    kl_divergence,
    optimal_policy,
    preference_against,
    psipo_objective,
    total_preference,
)
from psipo.tabular.problem import SolveSettings, TabularProblem, load_problem


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    parser = subparsers.add_parser(
        "solve",
        help=help_text,
        description=help_text + " Options given here override the file's values.",
        epilog="Example: psipo solve examples/problems/two_actions.yaml --psi logit --json",
    )
    parser.add_argument("problem_file", metavar="PROBLEM_FILE", type=Path, help="YAML or JSON problem file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_arguments(parser, SolveSettings, title="solve settings (override the problem file's)")
    parser.set_defaults(func=run)


def _number(value: float) -> float | str:
    """A JSON-safe number: ±inf become the strings "inf"/"-inf"."""
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def solve(problem: TabularProblem, settings: SolveSettings) -> dict:
    """The optimum and its statistics as plain data (the ``--json`` document)."""
    if settings.tau is None:
        raise PsipoInputError("tau: not given (set `tau` in the problem file or pass --tau)")
    policy = optimal_policy(problem, tau=settings.tau, psi=settings.psi)
    per_context = {
        context: dict(zip(problem.actions, row.tolist()))
        for context, row in zip(problem.contexts, policy)
    }
    return {
        "tau": settings.tau,
        "psi": settings.psi,
        "policy": per_context if problem.has_contexts else next(iter(per_context.values())),
        "objective": _number(float(psipo_objective(problem, policy, tau=settings.tau, psi=settings.psi))),
        "total_preference": float(total_preference(problem, policy)),
        "kl": _number(float(kl_divergence(problem, policy))),
    }


def _table(problem: TabularProblem, result: dict) -> str:
    """Aligned text: one row per (context,) action, then the summary numbers."""
    against_mu = preference_against(problem)
    header = (["context"] if problem.has_contexts else []) + ["action", "mu", "pi_ref", "p*(y≻mu)", "pi*"]
    rows = []
    for x, context in enumerate(problem.contexts):
        policy = result["policy"][context] if problem.has_contexts else result["policy"]
        for y, action in enumerate(problem.actions):
            numbers = [problem.mu[x, y], problem.pi_ref[x, y], against_mu[x, y], policy[action]]
            rows.append(([context] if problem.has_contexts else []) + [action] + [f"{float(v):.6f}" for v in numbers])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    text_columns = len(header) - 4

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines = [f"Optimal policy (ΨPO, Eq. 7/9): psi = {result['psi']}, tau = {result['tau']:g}", ""]
    lines += [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows), ""]
    for label, key in (
        ("objective (Eq. 6)", "objective"),
        ("total preference p*(π*≻µ)", "total_preference"),
        ("KL(π*‖π_ref)", "kl"),
    ):
        value = result[key]
        lines.append(f"{label:<28}{value if isinstance(value, str) else format(value, '.6g')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    problem, settings = load_problem(args.problem_file)
    settings = from_dict(SolveSettings, {**to_dict(settings), **overrides_from_args(args)})
    result = solve(problem, settings)
    print(json.dumps(result, indent=2) if args.json else _table(problem, result))
    return 0
