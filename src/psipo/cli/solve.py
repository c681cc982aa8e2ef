"""`psipo solve PROBLEM_FILE`: the exact ΨPO optimum of a tabular problem, as a table or JSON.

Prints the optimal policy π* (Eq. 7/9) with, per action, µ, π_ref and p*(y≻µ), then the
objective (Eq. 6), the total preference p*_ρ(π*≻µ) and KL(π*‖π_ref). ``--json`` prints

    {"tau": ..., "psi": ..., "policy": {"a": 0.6, ...}, "objective": ...,
     "total_preference": ..., "kl": ...}

where ``policy`` maps action → probability, or context → (action → probability) for a
problem with contexts. JSON has no infinity: a number that is not finite (an objective that
genuinely diverges, Ψ = logit with deterministic preferences) is written as the string "inf",
"-inf" or "nan".

With ``--target nash`` (or ``target: nash`` in the file) it prints instead the regularised
Nash equilibrium π* ∝ π_ref·exp(p*(y≻π*)/τ) (:mod:`psipo.tabular.nash`) with, per action,
π_ref and p*(y≻π*), then p*_ρ(π*≻π_ref), KL(π*‖π_ref), the self-consistency residual and the
Newton steps taken; ``--json`` prints

    {"target": "nash", "tau": ..., "policy": {...}, "preference_over_reference": ...,
     "kl": ..., "residual": ..., "iterations": ...}

With ``--target ipo_md --mixture β`` it prints the fixed point of IPO-MD,
π* ∝ π_ref·exp(p*(y≻π_β)/τ) with π_β ∝ π*^(1−β)·π_ref^β (:func:`psipo.tabular.ipo_md_fixed_point`;
β = 0 is the Nash equilibrium, β = 1 the Eq. 9 optimum with µ = π_ref), with, per action, π_ref,
π_β and p*(y≻π_β), and the same summary; ``--json`` adds ``"mixture"`` and ``"mixture_policy"``
(π_β, shaped like ``policy``) to the nash document, with ``"target": "ipo_md"``.
"""

from __future__ import annotations

import argparse
import json

import torch

from psipo._config import add_arguments, overrides_from_args
from psipo._json import to_json_data
from psipo.errors import PsipoInputError
from psipo.tabular.exact import (
    kl_divergence,
    optimal_policy,
    preference_against,
    psipo_objective,
    total_preference,
)
from psipo.tabular.nash import nash_equilibrium
from psipo.tabular.online import ipo_md_fixed_point
from psipo.tabular.problem import (
    NO_CONTEXT,
    SolveSettings,
    TabularProblem,
    blame_problem_file,
    load_problem,
)


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    parser = subparsers.add_parser(
        "solve",
        help=help_text,
        description=help_text + " Options given here override the file's values.",
        epilog="Examples: psipo solve examples/problems/two_actions.yaml --psi logit --json; "
        "psipo solve examples/problems/contexts.yaml --target nash; "
        "psipo solve examples/problems/rock_paper_scissors.yaml --target ipo_md --mixture 0.5",
    )
    parser.add_argument("problem_file", metavar="PROBLEM_FILE", help="YAML or JSON problem file")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print JSON instead of a table (a number that is not finite is the string "inf", "-inf" or "nan")',
    )
    add_arguments(parser, SolveSettings, title="solve settings (override the problem file's)")
    parser.set_defaults(func=run)


def _by_context(problem: TabularProblem, policy: torch.Tensor) -> dict:
    """action → probability, or context → (action → probability) for a problem with contexts."""
    per_context = {
        context: dict(zip(problem.actions, row.tolist()))
        for context, row in zip(problem.contexts, policy)
    }
    return per_context if problem.has_contexts else next(iter(per_context.values()))


def solve(problem: TabularProblem, settings: SolveSettings) -> dict:
    """The solution and its statistics as plain data (the ``--json`` document)."""
    if settings.tau is None:
        raise PsipoInputError("tau: not given (set `tau` in the problem file or pass --tau)")
    if settings.target in ("nash", "ipo_md"):
        return _solve_equilibrium(problem, settings)
    policy = optimal_policy(problem, tau=settings.tau, psi=settings.psi)
    if not bool(torch.isfinite(policy).all()):
        raise PsipoInputError(
            f"tau: {settings.tau:g} is too small to solve in float64: g(y)/τ in π*(y) ∝ π_ref(y)·exp(g(y)/τ) overflows"
        )
    return {
        "tau": settings.tau,
        "psi": settings.psi,
        "policy": _by_context(problem, policy),
        "objective": float(psipo_objective(problem, policy, tau=settings.tau, psi=settings.psi)),
        "total_preference": float(total_preference(problem, policy)),
        "kl": float(kl_divergence(problem, policy)),
    }


def _solve_equilibrium(problem: TabularProblem, settings: SolveSettings) -> dict:
    """The Nash equilibrium or the IPO-MD fixed point and its statistics (the ``--json`` document)."""
    if settings.psi != "identity":
        raise PsipoInputError(
            f"psi: {settings.psi} does not apply to target {settings.target}, a fixed point of the "
            "preference game p* itself (Ψ = identity); set psi to identity"
        )
    if settings.target == "nash":
        solution = nash_equilibrium(problem, tau=settings.tau)
        extra = {}
    else:
        solution = ipo_md_fixed_point(problem, tau=settings.tau, mixture=settings.mixture)
        extra = {"mixture": settings.mixture, "mixture_policy": _by_context(problem, solution.mixture_policy)}
    policy = solution.policy
    over_reference = (policy * preference_against(problem, problem.pi_ref)).sum(-1)
    return {
        "target": settings.target,
        "tau": settings.tau,
        **extra,
        "policy": _by_context(problem, policy),
        "preference_over_reference": float((problem.rho * over_reference).sum()),
        "kl": float(kl_divergence(problem, policy)),
        "residual": solution.residual,
        "iterations": solution.iterations,
    }


def _from_context_mapping(problem: TabularProblem, mapping: dict) -> torch.Tensor:
    """The [X, Y] table of a :func:`_by_context` mapping."""
    by_context = mapping if problem.has_contexts else {NO_CONTEXT: mapping}
    return torch.tensor(
        [[by_context[context][action] for action in problem.actions] for context in problem.contexts],
        dtype=torch.float64,
    )


def _table(problem: TabularProblem, result: dict) -> str:
    """Aligned text: one row per (context,) action, then the summary numbers."""
    policy = _from_context_mapping(problem, result["policy"])
    target = result.get("target")
    if target in ("nash", "ipo_md"):
        if target == "nash":
            columns = {"pi_ref": problem.pi_ref, "p*(y≻pi*)": preference_against(problem, policy)}
            title = f"Nash equilibrium (online IPO, Nash-MD): π* ∝ π_ref·exp(p*(y≻π*)/τ), tau = {result['tau']:g}"
        else:
            mixed = _from_context_mapping(problem, result["mixture_policy"])
            columns = {"pi_ref": problem.pi_ref, "pi_beta": mixed, "p*(y≻pi_beta)": preference_against(problem, mixed)}
            title = (
                "IPO-MD fixed point: π* ∝ π_ref·exp(p*(y≻π_β)/τ), π_β ∝ π*^(1−β)·π_ref^β, "
                f"tau = {result['tau']:g}, mixture β = {result['mixture']:g}"
            )
        summary = (
            ("preference p*(π*≻π_ref)", "preference_over_reference"),
            ("KL(π*‖π_ref)", "kl"),
            ("residual max|π*−T(π*)|", "residual"),
            ("Newton steps", "iterations"),
        )
    else:
        columns = {"mu": problem.mu, "pi_ref": problem.pi_ref, "p*(y≻mu)": preference_against(problem)}
        title = f"Optimal policy (ΨPO, Eq. 7/9): psi = {result['psi']}, tau = {result['tau']:g}"
        summary = (
            ("objective (Eq. 6)", "objective"),
            ("total preference p*(π*≻µ)", "total_preference"),
            ("KL(π*‖π_ref)", "kl"),
        )
    header = (["context"] if problem.has_contexts else []) + ["action", *columns, "pi*"]
    rows = []
    for x, context in enumerate(problem.contexts):
        for y, action in enumerate(problem.actions):
            numbers = [*(table[x, y] for table in columns.values()), policy[x, y]]
            rows.append(([context] if problem.has_contexts else []) + [action] + [f"{float(v):.6f}" for v in numbers])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    text_columns = len(header) - len(columns) - 1

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines = [title, ""]
    lines += [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows), ""]
    for label, key in summary:
        lines.append(f"{label:<28}{result[key]:.6g}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from_args(args)
    problem, settings = load_problem(args.problem_file, overrides)
    try:
        result = solve(problem, settings)
    except PsipoInputError as exc:
        raise PsipoInputError(blame_problem_file(args.problem_file, str(exc), overrides)) from None
    print(json.dumps(to_json_data(result), indent=2, allow_nan=False) if args.json else _table(problem, result))
    return 0
