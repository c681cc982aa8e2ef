r"""Tabular preference problems: named actions and contexts, p*, µ, π_ref and ρ (Azar et al., 2023, §2).

A :class:`TabularProblem` holds everything the exact solvers need, as float64 tensors:

* ``preferences[x, i, j]`` = :math:`p^*(y_i \succ y_j \mid x)`, a table with entries in [0, 1],
  :math:`p + p^\top = 1` (so the diagonal is 1/2: an action ties with itself);
* ``mu[x, y]`` — the behaviour policy µ that generated the compared pairs;
* ``pi_ref[x, y]`` — the reference policy π_ref of the KL regularisation;
* ``rho[x]`` — the context distribution ρ.

A problem without contexts has exactly one context, named :data:`NO_CONTEXT` (the empty
string); ``has_contexts`` tells the two apart.

Problem files (YAML or JSON) use the same names; see :func:`load_problem`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from psipo._config import blame, from_dict, parse_json, read_text_file, read_yaml_mapping
from psipo._io import readable_file
from psipo.errors import PsipoInputError
from psipo.losses import check_tau

NO_CONTEXT = ""
"""The name of the single context of a problem that has no contexts."""

TOLERANCE = 1e-9
"""Slack allowed in p + pᵀ = 1, in probabilities summing to 1, and in comparing the
divergent parts of the logit-Ψ optimum (see :func:`psipo.tabular.exact.optimal_policy`)."""

DTYPE = torch.float64


# --------------------------------------------------------------------------- validation


def _index(idx: Sequence[int]) -> str:
    return "".join(f"[{int(i)}]" for i in idx)


def _names(values: Any, field: str) -> tuple[str, ...]:
    """A non-empty tuple of unique, non-empty strings."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise PsipoInputError(f"{field}: expected a non-empty list of names, got {values!r}")
    for i, name in enumerate(values):
        if not isinstance(name, str) or not name:
            raise PsipoInputError(f"{field}[{i}]: expected a non-empty string, got {name!r}")
    seen: set[str] = set()
    for i, name in enumerate(values):
        if name in seen:
            raise PsipoInputError(f"{field}[{i}]: duplicate name {name!r}")
        seen.add(name)
    return tuple(values)


def _plain_numbers(value: Any, field: str) -> Any:
    """Nested lists of numbers as floats (YAML 1.1 reads ``1e-3`` as a string: accept it)."""
    if isinstance(value, (list, tuple)):
        return [_plain_numbers(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise PsipoInputError(f"{field}: expected a number, got {value!r}")


def _to_tensor(value: Any, field: str, *, allow_infinite: bool = False) -> torch.Tensor:
    """A float64 copy of a nested list, array or tensor of finite (or ±inf, when allowed) real numbers."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise PsipoInputError(f"{field}: expected real numbers, got a tensor of {value.dtype}")
        tensor = value.detach().to(DTYPE).clone()
    elif getattr(getattr(value, "dtype", None), "kind", "") in ("b", "c"):  # numpy bool/complex arrays
        raise PsipoInputError(f"{field}: expected real numbers, got an array of {value.dtype}")
    else:
        if isinstance(value, (list, tuple)):
            value = _plain_numbers(value, field)
        try:
            tensor = torch.as_tensor(value, dtype=DTYPE).clone()
        except (ValueError, TypeError, RuntimeError):
            raise PsipoInputError(
                f"{field}: expected a rectangular table of numbers, got {value!r}"
            ) from None
    bad = torch.nonzero(torch.isnan(tensor) if allow_infinite else ~torch.isfinite(tensor))
    if len(bad):
        idx = tuple(bad[0].tolist())
        raise PsipoInputError(f"{field}{_index(idx)}: {tensor[idx].item()} is not a finite number")
    return tensor


def _check_preferences(table: torch.Tensor, field: str, actions: Sequence[str]) -> None:
    """Entries in [0, 1] and p(y_i ≻ y_j) + p(y_j ≻ y_i) = 1 (diagonal 1/2), per table."""
    outside = torch.nonzero((table < 0) | (table > 1))
    if len(outside):
        idx = tuple(outside[0].tolist())
        raise PsipoInputError(f"{field}{_index(idx)}: {table[idx].item():.12g} is outside [0, 1]")
    diagonal = torch.diagonal(table, dim1=-2, dim2=-1)
    off = torch.nonzero((diagonal - 0.5).abs() > TOLERANCE)
    if len(off):
        *lead, i = off[0].tolist()
        value = diagonal[(*lead, i)].item()
        raise PsipoInputError(
            f"{field}{_index([*lead, i, i])}: must be 0.5 (an action ties with itself), got {value:.12g}"
        )
    total = table + table.transpose(-1, -2)
    broken = torch.nonzero((total - 1).abs() > TOLERANCE)
    if len(broken):
        *lead, i, j = broken[0].tolist()
        i, j = sorted((i, j))
        a, b = actions[i], actions[j]
        raise PsipoInputError(
            f"{field}{_index([*lead, i, j])} + {field}{_index([*lead, j, i])} = "
            f"{total[(*lead, i, j)].item():.12g}, but p*({a}≻{b}) + p*({b}≻{a}) must be 1"
        )


def _check_distribution(vector: torch.Tensor, field: str, tolerance: float = TOLERANCE) -> None:
    """Finite, non-negative entries summing to 1 (within ``tolerance``) along the last axis."""
    bad = torch.nonzero(~torch.isfinite(vector))
    if len(bad):
        idx = tuple(bad[0].tolist())
        raise PsipoInputError(f"{field}{_index(idx)}: {vector[idx].item()} is not a finite number")
    negative = torch.nonzero(vector < 0)
    if len(negative):
        idx = tuple(negative[0].tolist())
        raise PsipoInputError(
            f"{field}{_index(idx)}: {vector[idx].item():.12g} is negative (not a probability)"
        )
    sums = vector.sum(-1)
    off = torch.nonzero((sums - 1).abs() > tolerance)
    if len(off) or sums.numel() == 0:
        idx = tuple(off[0].tolist()) if len(off) else ()
        value = sums[idx].item() if sums.numel() else 0.0
        raise PsipoInputError(
            f"{field}{_index(idx)}: sums to {value:.12g}, not 1 (not a probability distribution)"
        )


def check_real(value: Any, field: str, *, low: float = -math.inf, low_open: bool = False) -> float:
    """``value`` as a float; :class:`PsipoInputError` naming ``field`` unless it is a finite real
    number (not a bool, string or None) ≥ ``low`` (> ``low`` when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PsipoInputError(f"{field}: must be a finite number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise PsipoInputError(f"{field}: must be a finite number, got {value!r}")
    if number < low or (low_open and number == low):
        raise PsipoInputError(f"{field}: must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    return number


def check_integer(value: Any, field: str, *, low: int) -> int:
    """``value`` as an int; :class:`PsipoInputError` naming ``field`` unless it is an integer
    (not a bool, nor a float such as 20.5 or 20.0) ≥ ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PsipoInputError(f"{field}: must be an integer, got {value!r} ({type(value).__name__})")
    if value < low:
        raise PsipoInputError(f"{field}: must be >= {low}, got {value!r}")
    return int(value)


def as_list(value: Any, field: str, *, items: str) -> list[Any]:
    """An iterable (list, tuple, generator, array) as a list; a bare string or a non-iterable —
    ``taus=0.1`` for ``taus=[0.1]``, ``losses="ipo"`` — is a :class:`PsipoInputError`."""
    if not isinstance(value, (str, bytes, Mapping)):
        try:
            return list(value)
        except TypeError:  # not iterable (a number, None, a 0-d tensor)
            pass
    raise PsipoInputError(f"{field}: expected a list of {items}, got {value!r}; write [{value!r}] for one")


def check_policy(tensor: torch.Tensor, field: str = "policy") -> None:
    """Raise :class:`PsipoInputError` unless each row (last axis) of ``tensor`` is a probability
    distribution: finite, non-negative, summing to 1 up to the rounding of the tensor's dtype
    (:data:`TOLERANCE` in float64; a float32 softmax sums to 1 only within ~1e-7)."""
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise PsipoInputError(f"{field}: expected real probabilities, got a tensor of {tensor.dtype}")
    rounding = torch.finfo(tensor.dtype).eps if tensor.is_floating_point() else 0.0
    _check_distribution(tensor.detach().to(DTYPE), field, max(TOLERANCE, 64 * rounding))


def _check_shape(tensor: torch.Tensor, field: str, *shapes: tuple[int, ...]) -> None:
    if tuple(tensor.shape) not in shapes:
        expected = " or ".join(str(list(s)) for s in shapes)
        raise PsipoInputError(f"{field}: expected shape {expected}, got {list(tensor.shape)}")


def _vector_from_mapping(values: Mapping[Any, Any], actions: Sequence[str], field: str) -> list[Any]:
    """``{action: value}`` as a list in action order; actions left out get 0."""
    for name in values:
        if name not in actions:
            raise PsipoInputError(
                f"{field}: unknown action {name!r} (actions: {', '.join(actions)})"
            )
    return [values.get(name, 0.0) for name in actions]


def policy_table(
    value: Any, field: str, actions: tuple[str, ...], num_contexts: int
) -> torch.Tensor:
    """µ or π_ref as a [X, Y] table: from None (uniform), a [Y] vector or mapping, or [X, Y]."""
    num_actions = len(actions)
    if value is None:
        return torch.full((num_contexts, num_actions), 1.0 / num_actions, dtype=DTYPE)
    if isinstance(value, Mapping):
        value = _vector_from_mapping(value, actions, field)
    table = _to_tensor(value, field)
    _check_shape(table, field, (num_actions,), (num_contexts, num_actions))
    _check_distribution(table, field)
    return table.expand(num_contexts, num_actions).clone()


def _reward_gaps(rewards: torch.Tensor) -> torch.Tensor:
    r""":math:`r_i - r_j`, [..., Y, Y]: the exact log-odds of a Bradley–Terry table (antisymmetric
    in IEEE arithmetic, since a − b = −(b − a))."""
    return rewards[..., :, None] - rewards[..., None, :]


def _bradley_terry_table(rewards: torch.Tensor) -> torch.Tensor:
    r""":math:`p^*(y_i \succ y_j) = \sigma(r_i - r_j)` (Eq. 1)."""
    return torch.sigmoid(_reward_gaps(rewards))


def log_odds_of_table(table: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p_{ij} - \log p_{ji}`: the log-odds of a preference table with :math:`p+p^\top=1`.

    This is :math:`\mathrm{logit}(p_{ij})` taking :math:`1-p_{ij}` to be the stored
    :math:`p_{ji}`, so it is exact where :math:`p_{ij}` has rounded to 1 but :math:`p_{ji}`
    has not (``torch.logit(1 - 1e-17)`` is +inf, this is 39.1), exactly antisymmetric, 0 on the
    diagonal, and ±inf only where a probability is exactly 0 (a deterministic preference).
    """
    return torch.log(table) - torch.log(table.transpose(-1, -2))


def _check_log_odds(log_odds: torch.Tensor, preferences: torch.Tensor, field: str = "log_odds") -> None:
    """Antisymmetric, never NaN, and σ(log_odds) = preferences (to :data:`TOLERANCE`)."""
    nan = torch.nonzero(torch.isnan(log_odds))
    if len(nan):
        raise PsipoInputError(f"{field}{_index(nan[0].tolist())}: is NaN")
    transpose = log_odds.transpose(-1, -2)
    both_finite = torch.isfinite(log_odds) & torch.isfinite(transpose)
    broken = torch.where(both_finite, (log_odds + transpose).abs() > TOLERANCE, log_odds != -transpose)
    if bool(broken.any()):
        idx = torch.nonzero(broken)[0].tolist()
        raise PsipoInputError(f"{field}{_index(idx)}: must be antisymmetric (log-odds of p* + p*ᵀ = 1)")
    off = torch.nonzero((torch.sigmoid(log_odds) - preferences).abs() > TOLERANCE)
    if len(off):
        idx = tuple(off[0].tolist())
        raise PsipoInputError(
            f"{field}{_index(idx)}: σ({log_odds[idx].item():.12g}) does not match "
            f"preferences{_index(idx)} = {preferences[idx].item():.12g}"
        )


# --------------------------------------------------------------------------- the problem


@dataclasses.dataclass(frozen=True, eq=False)
class TabularProblem:
    r"""A preference problem on finite action (and context) spaces; validated on construction.

    Build one with :meth:`create` (lists, arrays, defaults) or :meth:`from_bradley_terry`.
    """

    actions: tuple[str, ...]
    """Names of the actions Y, in table order."""
    contexts: tuple[str, ...]
    """Names of the contexts X; ``(NO_CONTEXT,)`` for a problem without contexts."""
    preferences: torch.Tensor
    r"""[X, Y, Y]: ``preferences[x, i, j]`` = :math:`p^*(y_i \succ y_j \mid x)`."""
    mu: torch.Tensor
    """[X, Y]: the behaviour policy µ(y|x) that produced the compared pairs."""
    pi_ref: torch.Tensor
    """[X, Y]: the reference policy π_ref(y|x) of the KL regularisation."""
    rho: torch.Tensor
    """[X]: the context distribution ρ."""
    log_odds: torch.Tensor = None  # type: ignore[assignment]  # None → computed from preferences
    r"""[X, Y, Y]: :math:`\log\frac{p^*(y_i\succ y_j|x)}{p^*(y_j\succ y_i|x)}`, the Ψ = logit values of
    the table (Prop. 1). By default :func:`log_odds_of_table` of ``preferences``; a Bradley–Terry
    problem keeps its reward differences :math:`r_i-r_j` exactly, which stay finite where
    :math:`\sigma(r_i-r_j)` rounds to 1 (and even where :math:`\sigma(r_j-r_i)` underflows to 0)."""

    def __post_init__(self) -> None:
        actions = _names(self.actions, "actions")
        contexts = (
            (NO_CONTEXT,) if tuple(self.contexts) == (NO_CONTEXT,) else _names(self.contexts, "contexts")
        )
        num_contexts, num_actions = len(contexts), len(actions)
        preferences = _to_tensor(self.preferences, "preferences")
        _check_shape(preferences, "preferences", (num_contexts, num_actions, num_actions))
        _check_preferences(preferences, "preferences", actions)
        tables = {}
        for field in ("mu", "pi_ref"):
            tables[field] = _to_tensor(getattr(self, field), field)
            _check_shape(tables[field], field, (num_contexts, num_actions))
            _check_distribution(tables[field], field)
        rho = _to_tensor(self.rho, "rho")
        _check_shape(rho, "rho", (num_contexts,))
        _check_distribution(rho, "rho")
        if self.log_odds is None:
            log_odds = log_odds_of_table(preferences)
        else:
            log_odds = _to_tensor(self.log_odds, "log_odds", allow_infinite=True)
            _check_shape(log_odds, "log_odds", (num_contexts, num_actions, num_actions))
            _check_log_odds(log_odds, preferences)
        for name, value in (("actions", actions), ("contexts", contexts), ("preferences", preferences),
                            ("rho", rho), ("log_odds", log_odds), *tables.items()):
            object.__setattr__(self, name, value)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        actions: Sequence[str],
        preferences: Any,
        *,
        mu: Any = None,
        pi_ref: Any = None,
        contexts: Sequence[str] | None = None,
        rho: Any = None,
        log_odds: Any = None,
    ) -> TabularProblem:
        r"""Build and validate a problem from lists, arrays or tensors.

        ``preferences`` is a [Y, Y] table (row i, column j = :math:`p^*(y_i \succ y_j)`), shared
        by every context, or one table per context, [X, Y, Y]. ``mu`` and ``pi_ref`` are a [Y]
        vector (or ``{action: probability}`` mapping, missing actions 0) shared by every
        context, or [X, Y]; both default to uniform. ``contexts`` names the contexts (none: a
        bandit problem); ``rho`` defaults to uniform over them. ``log_odds`` (shaped like
        ``preferences``) gives the exact :math:`\log(p_{ij}/p_{ji})` where rounding ``preferences``
        to float64 loses it (see :attr:`TabularProblem.log_odds`); by default it is computed.

        Every bad value raises :class:`~psipo.errors.PsipoInputError` naming the field and
        index, e.g. ``preferences[0][2]: 1.3 is outside [0, 1]``.
        """
        actions = _names(actions, "actions")
        names = (NO_CONTEXT,) if contexts is None else _names(contexts, "contexts")
        num_contexts, num_actions = len(names), len(actions)
        table = _to_tensor(preferences, "preferences")
        _check_shape(
            table, "preferences", (num_actions, num_actions), (num_contexts, num_actions, num_actions)
        )
        _check_preferences(table, "preferences", actions)
        if rho is None:
            rho_vector = torch.full((num_contexts,), 1.0 / num_contexts, dtype=DTYPE)
        else:
            if contexts is None:
                raise PsipoInputError("rho: given, but the problem has no contexts")
            if isinstance(rho, Mapping):
                rho = _vector_from_mapping(rho, names, "rho")
            rho_vector = _to_tensor(rho, "rho")
            _check_shape(rho_vector, "rho", (num_contexts,))
            _check_distribution(rho_vector, "rho")
        square = (num_contexts, num_actions, num_actions)
        if log_odds is not None:
            log_odds = _to_tensor(log_odds, "log_odds", allow_infinite=True)
            _check_shape(log_odds, "log_odds", square[1:], square)
            log_odds = log_odds.expand(square).clone()
        return cls(
            actions=actions,
            contexts=names,
            preferences=table.expand(square).clone(),
            mu=policy_table(mu, "mu", actions, num_contexts),
            pi_ref=policy_table(pi_ref, "pi_ref", actions, num_contexts),
            rho=rho_vector,
            log_odds=log_odds,
        )

    @classmethod
    def from_bradley_terry(
        cls,
        actions: Sequence[str],
        rewards: Any,
        *,
        mu: Any = None,
        pi_ref: Any = None,
        contexts: Sequence[str] | None = None,
        rho: Any = None,
    ) -> TabularProblem:
        r"""A problem whose preferences follow Bradley–Terry (Eq. 1): :math:`p^*(y\succ y')=\sigma(r(y)-r(y'))`.

        ``rewards`` is a [Y] vector or ``{action: reward}`` mapping (missing actions 0), or
        [X, Y] with contexts. The other arguments are those of :meth:`create`. The problem keeps
        the reward differences as its exact :attr:`~TabularProblem.log_odds`, so Ψ = logit gives
        r(y) − r(y') even where σ(r(y) − r(y')) rounds to 1.
        """
        actions = _names(actions, "actions")
        if isinstance(rewards, Mapping):
            rewards = _vector_from_mapping(rewards, actions, "rewards")
        reward_table = _to_tensor(rewards, "rewards")
        num_contexts = 1 if contexts is None else len(contexts)
        _check_shape(reward_table, "rewards", (len(actions),), (num_contexts, len(actions)))
        return cls.create(
            actions,
            _bradley_terry_table(reward_table),
            mu=mu,
            pi_ref=pi_ref,
            contexts=contexts,
            rho=rho,
            log_odds=_reward_gaps(reward_table),
        )

    # -- lookups -----------------------------------------------------------------------

    @property
    def num_actions(self) -> int:
        return len(self.actions)

    @property
    def num_contexts(self) -> int:
        return len(self.contexts)

    @property
    def has_contexts(self) -> bool:
        """False for a bandit problem (its one context is :data:`NO_CONTEXT`)."""
        return self.contexts != (NO_CONTEXT,)

    def action_index(self, name: str, *, field: str = "action") -> int:
        """The index of action ``name``; an unknown name is a PsipoInputError naming ``field``."""
        if name not in self.actions:
            raise PsipoInputError(
                f"{field}: unknown action {name!r} (actions: {', '.join(self.actions)})"
            )
        return self.actions.index(name)

    def context_index(self, name: str, *, field: str = "context") -> int:
        """The index of context ``name``; an unknown name is a PsipoInputError naming ``field``."""
        if name not in self.contexts:
            known = ", ".join(self.contexts) if self.has_contexts else "none: the problem has no contexts"
            raise PsipoInputError(f"{field}: unknown context {name!r} (contexts: {known})")
        return self.contexts.index(name)


# --------------------------------------------------------------------------- problem files


@dataclasses.dataclass(frozen=True)
class SolveSettings:
    """How to solve a problem: the ΨPO objective's τ and Ψ, and which solution to compute."""

    tau: float | None = None
    """τ > 0 and finite, the strength of the KL regularisation towards π_ref (required: in the problem file or as --tau)."""
    psi: Literal["identity", "logit"] = "identity"
    """The Ψ mapping: identity (IPO) or logit (RLHF/DPO under Bradley–Terry)."""
    target: Literal["optimum", "nash", "ipo_md"] = "optimum"
    """optimum: the ΨPO optimum against µ (Eq. 7/9); nash: the regularised Nash equilibrium π ∝ π_ref·exp(p*(y≻π)/τ) of online IPO and Nash-MD; ipo_md: the fixed point of IPO-MD, π ∝ π_ref·exp(p*(y≻π_β)/τ) with π_β ∝ π^(1−β)·π_ref^β (nash and ipo_md need psi identity)."""
    mixture: float = 0.0
    """β in [0, 1], the weight of π_ref in IPO-MD's sampling mixture π_β (target ipo_md only; 0 gives the Nash equilibrium)."""

    def __post_init__(self) -> None:
        if self.tau is not None:
            check_tau(self.tau)
        if not 0.0 <= self.mixture <= 1.0:
            raise PsipoInputError(f"mixture: must be in [0, 1], got {self.mixture}")
        if self.mixture and self.target != "ipo_md":
            raise PsipoInputError(f"mixture: applies only to target ipo_md, not {self.target}")


PROBLEM_KEYS = (
    "actions", "preferences", "rewards", "mu", "pi_ref", "contexts", "tau", "psi", "target", "mixture", "description"
)
"""Top-level keys of a problem file."""
CONTEXT_KEYS = ("name", "rho", "preferences", "rewards", "mu", "pi_ref")
"""Keys of one entry of a problem file's ``contexts`` list."""


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:\n]|[^\s{}\[\],:"]+')
"""A string, a punctuation mark, a newline, or a number/true/false/null."""


def _json_lines(text: str) -> dict[str, int]:
    """Map the path of every key and list item of a JSON document to its 1-based line.

    A scan of the tokens: run only when an error needs a line, since it costs about as much
    as parsing the document with the json module.
    """
    lines: dict[str, int] = {}
    line = 1
    containers: list[list[Any]] = []  # [path, is_object, items so far] of each open {...} or [...]
    value_path = ""  # the path of the value that comes next inside an object
    expect_key = False
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token == "\n":
            line += 1
        elif token in ("}", "]"):
            containers.pop()
        elif token == ",":
            expect_key = bool(containers) and containers[-1][1]
        elif token != ":":
            parent = containers[-1] if containers else None
            if expect_key:
                key = json.loads(token)
                value_path = f"{parent[0]}.{key}" if parent[0] else key
                lines.setdefault(value_path, line)
                expect_key = False
                continue
            if parent is None:
                path = ""
            elif parent[1]:
                path = value_path
            else:
                path = f"{parent[0]}[{parent[2]}]"
                parent[2] += 1
                lines.setdefault(path, line)
            if token in ("{", "["):
                containers.append([path, token == "{", 0])
                expect_key = token == "{"
    return lines


def _read_mapping(path: str | Path) -> tuple[dict[str, Any], Callable[[], dict[str, int]]]:
    """The file's top-level mapping (YAML, or JSON for ``.json``) and how to find each path's line.

    YAML line numbers come with parsing; those of JSON are found only when asked for.
    """
    path = readable_file(path, "problem file")
    if path.suffix.lower() != ".json":
        data, lines = read_yaml_mapping(path)
        return data, lambda: lines
    text = read_text_file(path)
    data = parse_json(text, path)
    if not isinstance(data, dict):
        raise PsipoInputError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data, lambda: _json_lines(text)


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
    for key in data:
        if key not in allowed:
            raise PsipoInputError(f"{prefix}{key}: unknown key (known keys: {', '.join(allowed)})")


def _context_preferences(
    entry: Mapping[str, Any], prefix: str, actions: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The [Y, Y] table of one context and its log-odds, from its ``preferences`` or
    Bradley–Terry ``rewards`` (whose log-odds are the exact reward differences)."""
    num_actions = len(actions)
    if "preferences" in entry and "rewards" in entry:
        raise PsipoInputError(f"{prefix}rewards: give either preferences or rewards, not both")
    if "rewards" in entry:
        rewards = entry["rewards"]
        if isinstance(rewards, Mapping):
            rewards = _vector_from_mapping(rewards, actions, f"{prefix}rewards")
        reward_vector = _to_tensor(rewards, f"{prefix}rewards")
        _check_shape(reward_vector, f"{prefix}rewards", (num_actions,))
        return _bradley_terry_table(reward_vector), _reward_gaps(reward_vector)
    table = _to_tensor(entry["preferences"], f"{prefix}preferences")
    _check_shape(table, f"{prefix}preferences", (num_actions, num_actions))
    _check_preferences(table, f"{prefix}preferences", actions)
    return table, log_odds_of_table(table)


def _context_rho(value: Any, field: str) -> float:
    """One context's ρ(x): a single finite number >= 0 (a YAML string number is accepted)."""
    number = _plain_numbers(value, field)
    if isinstance(number, list):
        raise PsipoInputError(f"{field}: expected one number (this context's probability), got {value!r}")
    return check_real(number, field, low=0.0)


def _problem_from_data(data: Mapping[str, Any]) -> tuple[TabularProblem, SolveSettings]:
    _check_keys(data, PROBLEM_KEYS, "")
    if "actions" not in data:
        raise PsipoInputError("actions: missing required key (the list of action names)")
    actions = _names(data["actions"], "actions")
    settings = from_dict(SolveSettings, {k: data[k] for k in ("tau", "psi", "target", "mixture") if k in data})
    shared = {k: data[k] for k in ("preferences", "rewards", "mu", "pi_ref") if k in data}

    if "contexts" not in data:
        entries, prefixes = [shared], [""]
    else:
        if not isinstance(data["contexts"], list) or not data["contexts"]:
            raise PsipoInputError("contexts: expected a non-empty list of {name, rho, preferences, mu, pi_ref}")
        entries, prefixes = [], []
        for i, entry in enumerate(data["contexts"]):
            prefix = f"contexts[{i}]."
            if not isinstance(entry, Mapping):
                raise PsipoInputError(f"contexts[{i}]: expected a mapping with keys {', '.join(CONTEXT_KEYS)}")
            _check_keys(entry, CONTEXT_KEYS, prefix)
            if "name" not in entry:
                raise PsipoInputError(f"{prefix}name: missing required key")
            own_source = {k: entry[k] for k in ("preferences", "rewards") if k in entry}
            inherited = {k: v for k, v in shared.items() if not (own_source and k in ("preferences", "rewards"))}
            entries.append({**inherited, **entry})
            prefixes.append(prefix if own_source else "")

    tables, log_odds, mus, pi_refs = [], [], [], []
    for i, (entry, prefix) in enumerate(zip(entries, prefixes)):
        if "preferences" not in entry and "rewards" not in entry:
            where = f"contexts[{i}]." if "contexts" in data else ""
            raise PsipoInputError(f"{where}preferences: missing required key (or give rewards)")
        table, odds = _context_preferences(entry, prefix, actions)
        tables.append(table)
        log_odds.append(odds)
    for i, entry in enumerate(entries):
        for field, out in (("mu", mus), ("pi_ref", pi_refs)):
            own = "contexts" in data and field in data["contexts"][i]
            name = f"contexts[{i}].{field}" if own else field
            out.append(policy_table(entry.get(field), name, actions, 1)[0])

    if "contexts" not in data:
        problem = TabularProblem.create(actions, tables[0], mu=mus[0], pi_ref=pi_refs[0], log_odds=log_odds[0])
        return problem, settings
    names: list[str] = []
    for i, entry in enumerate(data["contexts"]):
        name = entry["name"]
        if not isinstance(name, str) or not name or name in names:
            problem = "a duplicate" if name in names else "not a non-empty string"
            raise PsipoInputError(f"contexts[{i}].name: {name!r} is {problem}")
        names.append(name)
    given = ["rho" in entry for entry in data["contexts"]]
    if any(given) and not all(given):
        raise PsipoInputError(
            f"contexts[{given.index(False)}].rho: missing (give rho for every context or for none)"
        )
    rho = [_context_rho(entry["rho"], f"contexts[{i}].rho") for i, entry in enumerate(data["contexts"])] if all(given) else None
    if rho is not None and abs(sum(rho) - 1) > TOLERANCE:
        raise PsipoInputError(f"contexts: the contexts' rho sum to {sum(rho):.12g}, not 1 (ρ is a probability distribution)")
    problem = TabularProblem.create(
        actions,
        torch.stack(tables),
        mu=torch.stack(mus),
        pi_ref=torch.stack(pi_refs),
        contexts=names,
        rho=rho,
        log_odds=torch.stack(log_odds),
    )
    return problem, settings


def load_problem(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> tuple[TabularProblem, SolveSettings]:
    """Read a problem file (YAML, or JSON for ``.json``) into a problem and its solve settings.

    Keys (row i, column j of a table = :math:`p^*(y_i \\succ y_j)`)::

        actions: [a, b, c]            # required: the action names
        preferences: [[0.5, 0.7, 0.9], [0.3, 0.5, 0.6], [0.1, 0.4, 0.5]]
        rewards: {a: 1.0, b: 0.0}     # instead of preferences: Bradley–Terry σ(r(y) − r(y'))
        mu: [0.2, 0.3, 0.5]           # or {a: 0.5, b: 0.5}; default uniform
        pi_ref: [0.4, 0.4, 0.2]       # default uniform
        tau: 0.1                      # τ > 0, finite
        psi: identity                 # identity (IPO) or logit (RLHF/DPO); default identity
        target: optimum               # or nash: the regularised Nash equilibrium, or ipo_md; default optimum
        mixture: 0.5                  # target ipo_md: β in [0, 1] of π_β ∝ π^(1−β)·π_ref^β; default 0
        contexts:                     # optional: one entry per context x
          - {name: morning, rho: 0.5, preferences: [...], mu: [...], pi_ref: [...]}

    With ``contexts``, the top-level ``preferences``/``rewards``/``mu``/``pi_ref`` are the
    defaults of every context that does not give its own; ``rho`` is given for every context
    or for none (uniform). ``overrides`` are settings (``tau``, ``psi``, ``target``, ``mixture``) given on the command
    line; they replace the file's. Every error is a one-line
    :class:`~psipo.errors.PsipoInputError` naming the file, the line where known, and the
    key, or the ``--key`` option.
    """
    data, lines = _read_mapping(path)
    path = Path(path)
    overrides = dict(overrides or {})
    try:
        return _problem_from_data({**data, **overrides})
    except PsipoInputError as exc:
        raise PsipoInputError(blame(str(exc), path, lines(), overrides)) from None


def blame_problem_file(path: str | Path, message: str, overrides: Mapping[str, Any] | None = None) -> str:
    """``message``, about a key of problem file ``path``, located as :func:`load_problem` does.

    For errors found after loading (solving at the file's τ, say); the file is read again.
    """
    _, lines = _read_mapping(path)
    return blame(message, path, lines(), overrides or {})
