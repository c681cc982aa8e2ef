r"""The lab's world: prompts, responses in V^L, a Markov-chain generative process, a hidden oracle.

* Prompts are distinct token sequences over the same V tokens as the responses, so a language
  model whose vocabulary is exactly those V tokens assigns every response
  :math:`y\in\{0..V-1\}^L` the probability :math:`\pi(y|x)=\prod_t \pi(y_t|x,y_{<t})` and these
  sum to 1 over the V^L responses: the response space can be enumerated.
* Each prompt has a random Markov chain (Dirichlet initial and transition rows); π_ref is an LM
  trained on its samples (see :mod:`.reference`).
* A hidden reward :math:`r(y|x)=\bigl(\sum_t W_x[t,y_t]+\sum_t U_x[y_t,y_{t+1}]\bigr)/\sqrt{2L-1}`
  with standard-normal W and U (standard deviation about 1 over uniform responses).
* The oracle :math:`p^*(y\succ y'|x)=\sigma(s\,A_x(y,y'))` with the antisymmetric advantage
  :math:`A_x(y,y')=r(y|x)-r(y'|x)` (Bradley–Terry) or, for the non-transitive oracle,
  :math:`A_x(y,y')=r(y|x)-r(y'|x)+\kappa\,C(c(y),c(y'))`, where the class
  :math:`c(y)=\sum_t Z_x[t,y_t] \bmod 3` plays rock-paper-scissors
  (:math:`C(a,b)=+1` if :math:`a-b\equiv1`, :math:`-1` if :math:`a-b\equiv2`, else 0).
  The scale s is the determinism knob: :math:`s=\infty` gives :math:`p^*\in\{0,\tfrac12,1\}`.

Everything is computed pointwise on token tensors, so the same oracle serves the enumerated
world (a full [Y, Y] table per prompt) and the large world (Monte Carlo pairs).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from psipo.experiments.lm_lab.config import Oracle, WorldConfig
from psipo.lm.judges import NamedJudge, check_lengths


@dataclasses.dataclass
class World:
    """A sampled world. Tensors are indexed by prompt first (``x`` is a prompt index)."""

    prompts: torch.Tensor
    """[X, P] token ids of the prompts."""
    initial: torch.Tensor
    """[X, V] initial-token distribution of each prompt's Markov chain."""
    transition: torch.Tensor
    """[X, V, V] transition matrix (rows sum to 1) of each prompt's Markov chain."""
    token_reward: torch.Tensor
    """[X, L, V] W: reward of token v at position t."""
    pair_reward: torch.Tensor
    """[X, V, V] U: reward of consecutive tokens (v, v')."""
    class_weight: torch.Tensor
    """[X, L, V] Z: integer class contributions of the non-transitive oracle."""
    cyclic_strength: float
    """κ of the non-transitive oracle."""

    @property
    def num_prompts(self) -> int:
        return self.prompts.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.initial.shape[1]

    @property
    def response_length(self) -> int:
        return self.token_reward.shape[1]


def make_world(
    *,
    vocab_size: int,
    response_length: int,
    num_prompts: int,
    prompt_length: int,
    markov_concentration: float,
    cyclic_strength: float,
    seed: int,
) -> World:
    """Sample a world from ``seed`` (probabilities and rewards in float64)."""
    rng = np.random.default_rng(seed)
    codes = rng.permutation(vocab_size**prompt_length)[:num_prompts]
    digits = [(codes // vocab_size**i) % vocab_size for i in reversed(range(prompt_length))]
    alpha = np.full(vocab_size, markov_concentration)
    reward_shape = (num_prompts, response_length, vocab_size)
    return World(
        prompts=torch.as_tensor(np.stack(digits, axis=1), dtype=torch.long),
        initial=torch.as_tensor(rng.dirichlet(alpha, size=num_prompts)),
        transition=torch.as_tensor(rng.dirichlet(alpha, size=(num_prompts, vocab_size))),
        token_reward=torch.as_tensor(rng.standard_normal(reward_shape)),
        pair_reward=torch.as_tensor(rng.standard_normal((num_prompts, vocab_size, vocab_size))),
        class_weight=torch.as_tensor(rng.integers(0, 3, size=reward_shape), dtype=torch.long),
        cyclic_strength=float(cyclic_strength),
    )


def world_from_config(config: WorldConfig) -> World:
    """The enumerable world of a :class:`~.config.WorldConfig`."""
    return make_world(**dataclasses.asdict(config))


def all_responses(vocab_size: int, response_length: int) -> torch.Tensor:
    """[V^L, L] every response, in lexicographic order (row i spells i in base V)."""
    codes = torch.arange(vocab_size**response_length)
    return torch.stack(
        [(codes // vocab_size**i) % vocab_size for i in reversed(range(response_length))], dim=1
    )


def reward(world: World, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Hidden reward :math:`r(y|x)` of responses ``y`` [..., L] under prompts ``x`` [...] (broadcast)."""
    x = torch.as_tensor(x).expand(y.shape[:-1])
    positions = torch.arange(world.response_length)
    token_part = world.token_reward[x[..., None], positions, y].sum(-1)
    pair_part = world.pair_reward[x[..., None], y[..., :-1], y[..., 1:]].sum(-1)
    return (token_part + pair_part) / math.sqrt(2 * world.response_length - 1)


def response_class(world: World, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rock-paper-scissors class c(y) ∈ {0, 1, 2} of the non-transitive oracle."""
    x = torch.as_tensor(x).expand(y.shape[:-1])
    positions = torch.arange(world.response_length)
    return world.class_weight[x[..., None], positions, y].sum(-1) % 3


def _cycle_sign(classes: torch.Tensor, classes_other: torch.Tensor) -> torch.Tensor:
    """C(c, c'): +1 if c beats c' ((c − c') mod 3 == 1), −1 if c' beats c, 0 for the same class."""
    cycle = (classes - classes_other) % 3
    return torch.where(cycle == 2, -1.0, cycle.to(torch.float64))


def advantage(
    world: World, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, y_other: torch.Tensor
) -> torch.Tensor:
    """Antisymmetric advantage A_x(y, y') whose sigmoid (times s) is p*(y ≻ y'|x)."""
    gap = reward(world, x, y) - reward(world, x, y_other)
    if oracle.kind == "cyclic":
        classes = response_class(world, x, y), response_class(world, x, y_other)
        gap = gap + world.cyclic_strength * _cycle_sign(*classes)
    return gap


def preference_from_advantage(gap: torch.Tensor, scale: float) -> torch.Tensor:
    r""":math:`\sigma(s\,A)`; at :math:`s=\infty` exactly 1, 0 or ½ (a tie)."""
    if math.isinf(scale):
        return (torch.sign(gap) + 1.0) / 2.0
    return torch.sigmoid(scale * gap)


def preference(
    world: World, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, y_other: torch.Tensor
) -> torch.Tensor:
    """p*(y ≻ y'|x) for broadcastable prompts [...] and responses [..., L]."""
    return preference_from_advantage(advantage(world, oracle, x, y, y_other), oracle.scale)


def preference_table(world: World, oracle: Oracle, responses: torch.Tensor) -> torch.Tensor:
    """[X, Y, Y] p*(y_i ≻ y_j|x) over the enumerated ``responses`` [Y, L] (float64).

    Rewards and classes are computed once per response, then compared as an outer difference.
    """
    tables = []
    for x in range(world.num_prompts):
        rewards = reward(world, torch.tensor(x), responses)
        gap = rewards[:, None] - rewards[None, :]
        if oracle.kind == "cyclic":
            classes = response_class(world, torch.tensor(x), responses)
            gap = gap + world.cyclic_strength * _cycle_sign(classes[:, None], classes[None, :])
        tables.append(preference_from_advantage(gap, oracle.scale))
    return torch.stack(tables)


def sample_markov(world: World, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One response [n, L] per prompt index in ``x`` [n] from the prompts' Markov chains."""
    tokens = [torch.multinomial(world.initial[x], 1, generator=generator)[:, 0]]
    for _ in range(world.response_length - 1):
        rows = world.transition[x, tokens[-1]]
        tokens.append(torch.multinomial(rows, 1, generator=generator)[:, 0])
    return torch.stack(tokens, dim=1)


class WorldOracle(NamedJudge):
    r"""The world's exact oracle as a :class:`psipo.lm.judges.Judge` and reward function.

    The lab's LM has a vocabulary of exactly the world's V tokens, so prompts and responses
    are token-id sequences: lists or tensors of ints, or strings of space-separated ids (what a
    word-level tokenizer over the tokens ``"0" … "V-1"`` decodes). A prompt must be one of the
    world's prompts; a response must have L tokens in range.

    * ``judge`` is :math:`p^*(a\succ b\mid x)` of the ``oracle`` — exact, not σ(r_a − r_b),
      also for the non-transitive oracle;
    * ``reward`` is :math:`s\,r(y\mid x)`, the Bradley–Terry reward whose σ-differences give
      ``judge`` exactly under a ``bt`` oracle with finite scale s (under ``bt:inf`` and the
      cyclic oracle, :math:`r(y\mid x)` itself: the transitive part, with s = 1).
    """

    def __init__(self, world: World, oracle: Oracle, *, name: str | None = None) -> None:
        self.world, self.oracle = world, oracle
        self.name = name or f"world oracle {oracle.name}"
        self._prompt_index = {tuple(p.tolist()): x for x, p in enumerate(world.prompts)}

    def _tokens(self, value, what: str, i: int, length: int | None = None) -> list[int]:
        from psipo.errors import PsipoInputError

        try:
            tokens = [int(t) for t in (value.split() if isinstance(value, str) else torch.as_tensor(value).tolist())]
        except (TypeError, ValueError):
            raise PsipoInputError(f"{self.who}: {what} {i} is {value!r}, not a sequence of token ids") from None
        if length is not None and len(tokens) != length:
            raise PsipoInputError(f"{self.who}: {what} {i} has {len(tokens)} tokens, expected {length}")
        if any(not 0 <= t < self.world.vocab_size for t in tokens):
            raise PsipoInputError(f"{self.who}: {what} {i} has a token outside 0..{self.world.vocab_size - 1}")
        return tokens

    def _prompts(self, prompts) -> torch.Tensor:
        from psipo.errors import PsipoInputError

        indices = []
        for i, prompt in enumerate(prompts):
            key = tuple(self._tokens(prompt, "prompt", i))
            if key not in self._prompt_index:
                raise PsipoInputError(f"{self.who}: prompt {i} {list(key)} is not one of the world's prompts")
            indices.append(self._prompt_index[key])
        return torch.tensor(indices, dtype=torch.long)

    def _responses(self, responses) -> torch.Tensor:
        length = self.world.response_length
        rows = [self._tokens(r, "response", i, length) for i, r in enumerate(responses)]
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)

    def judge(self, prompts, responses_a, responses_b) -> torch.Tensor:
        check_lengths(self.who, prompts, responses_a, responses_b)
        x = self._prompts(prompts)
        return preference(self.world, self.oracle, x, self._responses(responses_a), self._responses(responses_b))

    def reward(self, prompts, responses) -> torch.Tensor:
        check_lengths(self.who, prompts, responses)
        scale = self.oracle.scale if self.oracle.kind == "bt" and math.isfinite(self.oracle.scale) else 1.0
        return scale * reward(self.world, self._prompts(prompts), self._responses(responses))
