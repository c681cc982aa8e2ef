"""Configuration of the LM preference lab (`psipo experiment lm`): one dataclass per concern.

Every field's docstring is its documentation and its ``--help`` text. Nested fields are set
on the command line with dots, e.g. ``--grid.taus [0.1,1.0]`` or ``--world.vocab_size 8``.
``--quick`` applies :data:`QUICK` (a one-minute preset used by the tests) before any option,
``--full`` applies :data:`FULL` (the heavy sweeps).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from psipo.errors import PsipoInputError


@dataclasses.dataclass
class WorldConfig:
    """World: prompts, the response space V^L, the generative process of π_ref, the hidden reward."""

    vocab_size: int = 6
    """V: tokens of the vocabulary. The model's vocabulary is exactly these V tokens (no special
    tokens), so the softmax over V^L sequences is the full response distribution."""
    response_length: int = 4
    """L: tokens per response; every response has exactly L tokens and |Y| = V^L per prompt."""
    num_prompts: int = 4
    """Prompts x (distinct token sequences over the same V tokens), each with weight ρ(x) = 1/X."""
    prompt_length: int = 2
    """Tokens per prompt."""
    markov_concentration: float = 0.3
    """Dirichlet concentration of each prompt's random Markov chain (initial and transition
    rows) that generates the supervised data of π_ref; small values give peaked, non-uniform LMs."""
    cyclic_strength: float = 2.0
    """κ of the non-transitive oracle: weight of the rock-paper-scissors term on response classes,
    in units of the reward's standard deviation (about 1)."""
    seed: int = 0
    """Seed of the world (prompts, Markov chains, reward, classes) and of π_ref's training."""


@dataclasses.dataclass
class LabModelConfig:
    """Policy model: a small Llama-style transformer built locally from a config."""

    hidden_size: int = 32
    """Width of the transformer."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 2
    """Attention heads."""
    intermediate_size: int = 64
    """Width of the MLP of each block."""


@dataclasses.dataclass
class LabReferenceConfig:
    """π_ref: plain supervised next-token training on samples of the Markov chains (not a preference loss)."""

    samples_per_prompt: int = 2000
    """Sequences drawn from each prompt's Markov chain for the supervised phase."""
    steps: int = 300
    """Optimizer steps of the supervised phase."""
    batch_size: int = 64
    """Sequences per supervised step."""
    learning_rate: float = 3e-3
    """Adam learning rate of the supervised phase."""


@dataclasses.dataclass
class GridConfig:
    """The experiment grid: {loss} × τ × seed × oracle, each run trained with psipo.lm.train."""

    losses: list[str] = dataclasses.field(default_factory=lambda: ["dpo", "ipo"])
    """Losses from psipo.losses."""
    taus: list[float] = dataclasses.field(default_factory=lambda: [0.03, 0.1, 0.3, 1.0, 3.0])
    """τ values (sequence-level: log-probs are summed over the L response tokens)."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3])
    """Seeds: each draws its own dataset (pairs and labels) and training order; world and π_ref
    are shared, so confidence intervals are over datasets."""
    oracles: list[str] = dataclasses.field(default_factory=lambda: ["bt:1", "bt:inf", "cyclic:inf"])
    """Preference oracles p*, as kind:scale. bt: Bradley–Terry σ(s·(r(y)−r(y'))) on the hidden
    reward; cyclic: the same plus a rock-paper-scissors term no Bradley–Terry model can express.
    The scale s is the determinism knob; inf gives deterministic preferences."""
    num_pairs: int = 64
    """N: preference pairs per dataset (prompts drawn from ρ, y, y' ~ µ = π_ref, labels ~ p*)."""
    steps: int = 300
    """Optimizer steps of each preference run."""
    batch_size: int = 16
    """Pairs per optimizer step."""
    learning_rate: float = 1e-3
    """Learning rate (AdamW, constant, no warm-up: the optimiser of the paper's §5.4)."""
    eval_every: int = 50
    """Evaluate the policy exactly every this many steps (learning curves)."""


@dataclasses.dataclass
class SweepConfig:
    """Consistency in N: the exact minimiser of IPO's empirical loss as N grows (no LM is trained)."""

    enabled: bool = True
    """Run it (set false to skip)."""
    num_pairs: list[int] = dataclasses.field(default_factory=lambda: [64, 512, 4096, 32768, 262144])
    """N of the sweep's datasets (each drawn afresh, for every oracle, τ of the grid and seed)."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3])
    """Seeds of the sweep's datasets (intervals over seeds of the fitted rate)."""


@dataclasses.dataclass
class LargeConfig:
    """The non-enumerable configuration: Monte Carlo estimates with confidence intervals."""

    enabled: bool = True
    """Run it (set false to skip)."""
    vocab_size: int = 64
    """V of the large world."""
    response_length: int = 16
    """L of the large world (V^L responses per prompt: far too many to enumerate)."""
    num_prompts: int = 4
    """Prompts of the large world."""
    losses: list[str] = dataclasses.field(default_factory=lambda: ["dpo", "ipo"])
    """Losses of the large runs."""
    taus: list[float] = dataclasses.field(default_factory=lambda: [0.1, 1.0])
    """τ values of the large runs."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    """Seeds (datasets) of the large runs."""
    oracle: str = "bt:inf"
    """The oracle of the large runs (kind:scale)."""
    num_pairs: int = 128
    """N: preference pairs of each large dataset."""
    steps: int = 200
    """Optimizer steps of each large run."""
    samples: int = 512
    """Monte Carlo samples per prompt for each estimate."""
    reference_steps: int = 300
    """Supervised steps of the large π_ref."""


def _online_world() -> WorldConfig:
    """A 3^2-response, one-prompt world whose cyclic oracle pulls the three targets apart."""
    return WorldConfig(vocab_size=3, response_length=2, num_prompts=1, prompt_length=2, seed=3)


def _online_model() -> LabModelConfig:
    """The smallest policy that reaches the targets within a few hundred online steps."""
    return LabModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)


@dataclasses.dataclass
class OnlineLabConfig:
    """Online vs offline, exactly: online IPO and IPO-MD (the exact oracle as judge) against
    offline IPO on as many labelled pairs as the online runs asked the oracle for."""

    enabled: bool = True
    """Run it (set false to skip)."""
    world: WorldConfig = dataclasses.field(default_factory=_online_world)
    """The section's own enumerable world (small: every run is evaluated exactly at every
    logged step); π_ref is the policy model at its initialisation, so every response has mass."""
    model: LabModelConfig = dataclasses.field(default_factory=_online_model)
    """The section's policy model (π_ref and the initial policy of every run)."""
    oracle: str = "cyclic:inf"
    """The oracle (kind:scale) that labels every pair, online and offline; a non-transitive one
    sets the regularised Nash equilibrium apart from the Eq. 9 optimum."""
    algorithms: list[str] = dataclasses.field(default_factory=lambda: ["online_ipo", "ipo_md", "offline_ipo"])
    """online_ipo: pairs from π (target: the regularised Nash equilibrium); ipo_md: pairs from
    the token-level geometric mixture of π and π_ref (target: its fixed point); offline_ipo:
    N pairs from µ = π_ref labelled once (target: the Eq. 9 optimum), N = the online runs' queries."""
    tau: float = 0.3
    """τ of every run (sequence-level: log-probs summed over the response)."""
    mixture: float = 0.5
    """β of IPO-MD's token-level geometric mixture π^(1−β)·π_ref^β."""
    num_generations: int = 16
    """K: responses sampled per prompt and online step; the judge labels all K(K−1)/2 pairs."""
    steps: int = 300
    """Optimizer steps of every run (offline IPO: one pass over its N pairs in as many steps).
    300 steps at 1.5e-3 bring every run within about 0.01 TV of its target (200 at 2e-3 left
    IPO-MD 0.03 away on one seed)."""
    learning_rate: float = 1.5e-3
    """AdamW learning rate of every run, decayed linearly to 0 (no warm-up, no clipping)."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    """Seeds: the online runs' sampling, offline IPO's dataset and order (intervals over seeds)."""
    eval_every: int = 25
    """Evaluate every run exactly every this many steps (distance to its target against queries)."""


@dataclasses.dataclass
class PopulationConfig:
    """The LM trained on the exact population losses (Eq. 13 for IPO, Eq. 5 for DPO): the learner without data."""

    enabled: bool = True
    """Run it (set false to skip)."""
    oracles: list[str] = dataclasses.field(default_factory=lambda: ["bt:inf", "cyclic:1"])
    """Oracles p* (kind:scale). IPO is trained under each (target π* of Eq. 9, Theorem 2); DPO under
    each but the deterministic cyclic ones: under a deterministic Bradley–Terry oracle its target is
    the reward's argmax (Prop. 1, §4.2), under a finite-scale one the Bradley–Terry projection of p*
    (Prop. 4), which a deterministic cycle can leave undefined (no Bradley–Terry minimiser)."""
    taus: list[float] = dataclasses.field(default_factory=lambda: [0.1, 1.0])
    """τ values of the population runs."""
    steps: int = 100
    """Full-batch Adam steps of each run (every step is one pass over all X·V^L responses)."""
    learning_rate: float = 3e-3
    """Initial Adam learning rate; it decays to 0 along a cosine, which leaves no optimiser noise."""
    record_every: int = 20
    """Record the distance to the target (and the mass on its support) every this many steps."""


@dataclasses.dataclass
class WinnerConfig:
    """C6 (the paper's D1): in each oracle's world where an action beats all others (a Condorcet
    winner y_a: p*(y_a ≻ y) > ½ for every y ≠ y_a), a dataset that compares y_a with responses
    y ~ π_ref, and DPO's and IPO's probability mass on y_a at the grid's largest τ."""

    enabled: bool = True
    """Run it (set false to skip)."""
    num_pairs: int = 32
    """Pairs (y_a, y) per dataset, prompts uniform over those with a winner, y ~ π_ref(·|x) given
    y ≠ y_a, labels ~ p*; one dataset per seed of the grid."""
    steps: int = 300
    """Optimizer steps of each run (the grid's batch size and constant learning rate)."""


@dataclasses.dataclass
class LMSweepConfig:
    """Consistency in N with trained LMs: DPO and IPO on datasets of growing N, each oracle of the
    grid, trained to the end of a learning-rate decay and evaluated exactly (claims C19, C20).

    Steps scale with N: ``max(min_steps, ceil(epochs · N / batch_size))``. ``min_steps`` is the
    travel budget the grid needs at small N; the ``epochs`` term makes every pair contribute
    several times before the decay ends, so the run ends near the minimiser of the whole empirical
    loss (π̂_N), not of its last batches. The decay to 0 removes the jitter of Adam at a constant
    rate, whose steps have size ~lr whatever the gradient (a floor on the distance to π̂_N)."""

    enabled: bool = False
    """Run it (``--full`` sets it true)."""
    num_pairs: list[int] = dataclasses.field(default_factory=lambda: [64, 512, 4096])
    """N of the datasets (each drawn afresh for every oracle and seed)."""
    taus: list[float] = dataclasses.field(default_factory=lambda: [0.1, 1.0])
    """τ values (at least two: C20 fits DPO's slope of log KL against log τ)."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    """Seeds (datasets and training order): the intervals of the fitted rates are over them."""
    batch_size: int = 64
    """Pairs per optimizer step."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (no warm-up), decayed by ``lr_scheduler``."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay of the learning rate to 0 over the run (constant: the grid's, no decay)."""
    min_steps: int = 300
    """Fewest optimizer steps of a run, whatever N."""
    epochs: float = 20.0
    """Passes over the N pairs; a run takes max(min_steps, ceil(epochs · N / batch_size)) steps."""


@dataclasses.dataclass
class LabConfig:
    """The LM preference lab."""

    world: WorldConfig = dataclasses.field(default_factory=WorldConfig)
    """The enumerable world."""
    model: LabModelConfig = dataclasses.field(default_factory=LabModelConfig)
    """The policy model."""
    reference: LabReferenceConfig = dataclasses.field(default_factory=LabReferenceConfig)
    """The supervised phase that makes π_ref."""
    grid: GridConfig = dataclasses.field(default_factory=GridConfig)
    """The experiment grid on the enumerable world."""
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    """The exact N-sweep of IPO's empirical optimum (consistency, Prop. 3)."""
    large: LargeConfig = dataclasses.field(default_factory=LargeConfig)
    """The large, Monte Carlo configuration."""
    workers: int = 2
    """Processes that train the runs in parallel, one torch thread each (1: in this process); no more
    start than there are tasks or CPUs available to the process (a note says so)."""
    population: PopulationConfig = dataclasses.field(default_factory=PopulationConfig)
    """The LM trained on the exact population losses, with no data (Theorem 2, Props. 1 and 4)."""
    online: OnlineLabConfig = dataclasses.field(default_factory=OnlineLabConfig)
    """Online vs offline, exactly: online IPO and IPO-MD against offline IPO at equal oracle queries."""
    winner: WinnerConfig = dataclasses.field(default_factory=WinnerConfig)
    """C6's D1 datasets: an action that beats all others, compared with the rest."""
    lm_sweep: LMSweepConfig = dataclasses.field(default_factory=LMSweepConfig)
    """Consistency in N of the trained LMs (off by default; ``--full`` turns it on)."""


QUICK: dict[str, object] = {
    "world.num_prompts": 2,
    "world.vocab_size": 4,
    "world.response_length": 4,
    "reference.steps": 120,
    "reference.samples_per_prompt": 500,
    "grid.taus": [0.1, 3.0],
    "grid.seeds": [0, 1],
    "grid.oracles": ["bt:inf"],
    "grid.num_pairs": 32,
    "grid.steps": 60,
    "grid.learning_rate": 3e-3,
    "grid.eval_every": 30,
    "large.vocab_size": 16,
    "large.response_length": 8,
    "large.num_prompts": 2,
    "large.taus": [1.0],
    "large.seeds": [0],
    "large.num_pairs": 32,
    "large.steps": 40,
    "large.samples": 128,
    "large.reference_steps": 60,
    "population.steps": 30,
    "population.record_every": 10,
    "online.num_generations": 4,
    "online.steps": 20,
    "online.learning_rate": 1e-2,
    "online.seeds": [0, 1],
    "online.eval_every": 10,
    "winner.steps": 60,
}
"""Overrides of the ``--quick`` preset: about a minute on 2 CPU cores."""

FULL: dict[str, object] = {
    "lm_sweep.enabled": True,
}
"""Overrides of the ``--full`` preset: the default run plus the LM N-sweep (C19, C20), 36 (oracle, seed,
τ, loss) runs of 300 + 300 + 1280 steps at batch 64. Measured: one oracle's third of the sweep took 836
CPU-seconds (on a shared 2-core machine, where a CPU-second is slower than on an idle one), so the
sweep adds about 2500 CPU-seconds: about 21 min on 2 cores, beside the default run's ~12."""


@dataclasses.dataclass(frozen=True)
class Oracle:
    """A preference oracle: ``kind`` ("bt" or "cyclic") and scale s (``math.inf``: deterministic)."""

    kind: Literal["bt", "cyclic"]
    scale: float

    @property
    def name(self) -> str:
        scale = "inf" if math.isinf(self.scale) else f"{self.scale:g}"
        return f"{self.kind}:{scale}"


def parse_oracle(text: str, *, key: str = "grid.oracles") -> Oracle:
    """Parse ``kind:scale`` (e.g. ``bt:1``, ``bt:inf``, ``cyclic:inf``) into an :class:`Oracle`."""
    kind, _, scale_text = str(text).partition(":")
    if kind not in ("bt", "cyclic"):
        raise PsipoInputError(f"{key}: oracle {text!r} must start with 'bt:' or 'cyclic:'")
    try:
        scale = float(scale_text)
    except ValueError:
        raise PsipoInputError(f"{key}: oracle {text!r} needs a scale after ':', e.g. bt:1 or bt:inf") from None
    if not scale > 0:
        raise PsipoInputError(f"{key}: oracle {text!r} needs a scale s > 0")
    return Oracle(kind, scale)  # type: ignore[arg-type]


def validate(config: LabConfig) -> None:
    """Raise :class:`PsipoInputError` naming the first out-of-range key of ``config``."""
    from psipo.lm.config import MAX_SEED
    from psipo.losses import get_loss

    w, g, lc = config.world, config.grid, config.large
    checks = [
        ("world.vocab_size", w.vocab_size >= 2, "must be >= 2"),
        ("world.response_length", w.response_length >= 1, "must be >= 1"),
        ("world.num_prompts", w.num_prompts >= 1, "must be >= 1"),
        ("world.prompt_length", w.prompt_length >= 1, "must be >= 1"),
        ("world.num_prompts", w.vocab_size**w.prompt_length >= w.num_prompts,
         "must be at most vocab_size ** prompt_length (prompts are distinct)"),
        ("world.markov_concentration", w.markov_concentration > 0, "must be > 0"),
        ("grid.taus", len(g.taus) > 0, "must not be empty"),
        _tau_check("grid.taus", g.taus),
        ("grid.seeds", len(g.seeds) > 0, "must not be empty"),
        ("grid.losses", len(g.losses) > 0, "must not be empty"),
        ("grid.oracles", len(g.oracles) > 0, "must not be empty"),
        ("grid.num_pairs", g.num_pairs >= 1, "must be >= 1"),
        ("grid.steps", g.steps >= 1, "must be >= 1"),
        ("grid.eval_every", g.eval_every >= 1, "must be >= 1"),
        ("grid.batch_size", g.batch_size >= 1, "must be >= 1"),
        ("grid.learning_rate", 0 < g.learning_rate < math.inf, "must be a finite number > 0"),
        ("sweep.num_pairs", all(n >= 1 for n in config.sweep.num_pairs)
         and (not config.sweep.enabled or len(set(config.sweep.num_pairs)) >= 2), "must be >= 2 distinct values >= 1"),
        ("sweep.seeds", not config.sweep.enabled or len(config.sweep.seeds) > 0, "must not be empty"),
        _tau_check("large.taus", lc.taus),
        ("large.samples", lc.samples >= 2, "must be >= 2"),
        ("large.vocab_size", lc.vocab_size >= 2, "must be >= 2"),
        *((f"large.{key}", getattr(lc, key) >= 1, "must be >= 1")
          for key in ("response_length", "num_prompts", "num_pairs", "steps", "reference_steps")),
        *((f"large.{key}", not lc.enabled or len(getattr(lc, key)) > 0, "must not be empty")
          for key in ("losses", "taus", "seeds")),
        ("large.vocab_size", lc.vocab_size ** w.prompt_length >= lc.num_prompts,
         "must allow num_prompts distinct prompts"),
        ("workers", config.workers >= 1, "must be >= 1"),
        ("population.taus", not config.population.enabled or len(config.population.taus) > 0, "must not be empty"),
        _tau_check("population.taus", config.population.taus),
        ("population.oracles", not config.population.enabled or len(config.population.oracles) > 0,
         "must not be empty"),
        ("population.steps", config.population.steps >= 1, "must be >= 1"),
        ("population.learning_rate", 0 < config.population.learning_rate < math.inf, "must be a finite number > 0"),
        ("population.record_every", config.population.record_every >= 1, "must be >= 1"),
        ("winner.num_pairs", config.winner.num_pairs >= 1, "must be >= 1"),
        ("winner.steps", config.winner.steps >= 1, "must be >= 1"),
        ("lm_sweep.num_pairs", all(n >= 1 for n in config.lm_sweep.num_pairs)
         and (not config.lm_sweep.enabled or len(set(config.lm_sweep.num_pairs)) >= 2),
         "must be >= 2 distinct values >= 1"),
        _tau_check("lm_sweep.taus", config.lm_sweep.taus),
        ("lm_sweep.taus", not config.lm_sweep.enabled or len(set(config.lm_sweep.taus)) >= 2, "must be >= 2 distinct values"),
        ("lm_sweep.seeds", not config.lm_sweep.enabled or len(config.lm_sweep.seeds) > 0, "must not be empty"),
        ("lm_sweep.batch_size", config.lm_sweep.batch_size >= 1, "must be >= 1"),
        ("lm_sweep.learning_rate", 0 < config.lm_sweep.learning_rate < math.inf, "must be a finite number > 0"),
        ("lm_sweep.min_steps", config.lm_sweep.min_steps >= 1, "must be >= 1"),
        ("lm_sweep.epochs", config.lm_sweep.epochs > 0, "must be > 0"),
    ]
    checks += [*_world_checks("world", w), *_model_checks("model", config.model), *_reference_checks(config.reference)]
    # Every run's seed goes to psipo.lm.train, which takes [0, MAX_SEED]: checked here, not in a
    # worker at the end of the grid.
    checks += [(key, all(0 <= seed <= MAX_SEED for seed in seeds), f"must be integers in [0, {MAX_SEED}] (2**32 − 1)")
               for key, seeds in (("grid.seeds", g.seeds), ("sweep.seeds", config.sweep.seeds),
                                  ("large.seeds", lc.seeds), ("online.seeds", config.online.seeds),
                                  ("lm_sweep.seeds", config.lm_sweep.seeds))]
    checks += _distinct_checks({
        "grid.losses": g.losses, "grid.taus": g.taus, "grid.seeds": g.seeds,
        "grid.oracles": [_oracle_name(o) for o in g.oracles], "sweep.num_pairs": config.sweep.num_pairs,
        "sweep.seeds": config.sweep.seeds, "large.losses": lc.losses, "large.taus": lc.taus,
        "large.seeds": lc.seeds, "population.oracles": [_oracle_name(o) for o in config.population.oracles],
        "population.taus": config.population.taus, "lm_sweep.num_pairs": config.lm_sweep.num_pairs,
        "lm_sweep.taus": config.lm_sweep.taus, "lm_sweep.seeds": config.lm_sweep.seeds,
    })
    for key, ok, why in checks:
        if not ok:
            raise PsipoInputError(f"{key}: {why}")
    responses = config.world.vocab_size ** config.world.response_length
    if responses > 8192:
        raise PsipoInputError(
            f"world: V^L = {responses} responses per prompt is too many to enumerate (at most 8192)"
        )
    for loss in [*config.grid.losses, *config.large.losses]:
        get_loss(loss)
    for text in config.grid.oracles:
        parse_oracle(text)
    parse_oracle(config.large.oracle, key="large.oracle")
    for text in config.population.oracles:
        parse_oracle(text, key="population.oracles")
    if config.online.enabled:
        _validate_online(config.online)


def _tau_check(key: str, taus: list[float]) -> tuple[str, bool, str]:
    """Every τ of ``key`` by the rule of psipo train, online and evaluate (each run of the lab is
    one of theirs): τ, 2τ and IPO's target 1/(2τ) normal float32 numbers; the first that is not
    is named."""
    from psipo.lm.config import TAU_REQUIREMENT, is_usable_tau

    unusable = [tau for tau in taus if not is_usable_tau(tau)]
    return key, not unusable, f"every τ {TAU_REQUIREMENT}, got {unusable[0]!r}" if unusable else ""


def _world_checks(prefix: str, w: WorldConfig) -> list[tuple[str, bool, str]]:
    """Checks of a world's values that its range checks leave open: a negative seed (numpy
    refuses it mid-run) and a Dirichlet concentration or cyclic strength that is not finite
    (a world of NaN probabilities)."""
    return [
        (f"{prefix}.seed", w.seed >= 0, "must be >= 0"),
        (f"{prefix}.markov_concentration", 0 < w.markov_concentration < math.inf, "must be a finite number > 0"),
        (f"{prefix}.cyclic_strength", math.isfinite(w.cyclic_strength), "must be a finite number"),
    ]


def _model_checks(prefix: str, m: LabModelConfig) -> list[tuple[str, bool, str]]:
    """A transformer that can be built: positive sizes, heads that divide the width."""
    return [
        *((f"{prefix}.{key}", getattr(m, key) >= 1, "must be >= 1")
          for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size")),
        (f"{prefix}.num_heads", m.num_heads < 1 or m.hidden_size % m.num_heads == 0,
         f"must divide {prefix}.hidden_size ({m.hidden_size})"),
    ]


def _reference_checks(r: LabReferenceConfig) -> list[tuple[str, bool, str]]:
    return [
        *((f"reference.{key}", getattr(r, key) >= 1, "must be >= 1")
          for key in ("samples_per_prompt", "steps", "batch_size")),
        ("reference.learning_rate", 0 < r.learning_rate < math.inf, "must be a finite number > 0"),
    ]


def _distinct_checks(lists: dict[str, list]) -> list[tuple[str, bool, str]]:
    """A value given twice in a list would run (and count) the same runs twice: a seed twice
    halves its confidence interval with no new data."""
    return [(key, len(set(values)) == len(values), f"values must be distinct, got {values}")
            for key, values in lists.items()]


def _oracle_name(text: str) -> str:
    """The oracle's canonical name (bt:1.0 and bt:1 are one oracle); the text itself when it
    does not parse (parse_oracle then says why)."""
    try:
        return parse_oracle(text).name
    except PsipoInputError:
        return str(text)


def _validate_online(online: OnlineLabConfig) -> None:
    """The online section's range checks; errors name the ``online.`` key at fault."""
    from psipo.lm.config import TAU_REQUIREMENT, is_usable_tau
    from psipo.lm.online import MAX_GENERATIONS

    known = ("online_ipo", "ipo_md", "offline_ipo")
    w = online.world
    checks = [
        ("online.algorithms", len(online.algorithms) > 0 and set(online.algorithms) <= set(known),
         f"must be a non-empty subset of {list(known)}"),
        ("online.tau", is_usable_tau(online.tau), TAU_REQUIREMENT),
        ("online.mixture", 0 <= online.mixture <= 1, "must be in [0, 1]"),
        ("online.num_generations", online.num_generations >= 2, "must be >= 2 (pairs of samples)"),
        ("online.num_generations", online.num_generations <= MAX_GENERATIONS,
         f"must be at most {MAX_GENERATIONS} (psipo online's limit)"),
        ("online.steps", online.steps >= 1, "must be >= 1"),
        ("online.learning_rate", 0 < online.learning_rate < math.inf, "must be a finite number > 0"),
        ("online.seeds", len(online.seeds) > 0, "must not be empty"),
        ("online.eval_every", online.eval_every >= 1, "must be >= 1"),
        ("online.world.vocab_size", w.vocab_size >= 2, "must be >= 2"),
        ("online.world.response_length", w.response_length >= 1, "must be >= 1"),
        ("online.world.num_prompts", 1 <= w.num_prompts <= w.vocab_size**w.prompt_length,
         "must be between 1 and vocab_size ** prompt_length (prompts are distinct)"),
        ("online.world", w.vocab_size**w.response_length <= 1024,
         "V^L must be at most 1024 responses (every logged step enumerates them)"),
        *_world_checks("online.world", w),
        *_model_checks("online.model", online.model),
        *_distinct_checks({"online.algorithms": online.algorithms, "online.seeds": online.seeds}),
    ]
    for key, ok, why in checks:
        if not ok:
            raise PsipoInputError(f"{key}: {why}")
    parse_oracle(online.oracle, key="online.oracle")
