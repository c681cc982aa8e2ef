"""Judges: who says which of two responses is better, or how good one response is.

Two interfaces, one for each kind of answer:

* a :class:`Judge` — ``judge(prompts, responses_a, responses_b)`` → P(a ≻ b), a float tensor
  of shape [N] in [0, 1];
* a :class:`RewardFunction` — ``reward(prompts, responses)`` → r, a finite float tensor [N].

Provided:

* :class:`RewardModel` — a Bradley–Terry reward model (``psipo reward``'s ``final/``, or any
  ``AutoModelForSequenceClassification`` with one output); as a judge, σ(r_a − r_b) (Eq. 1);
* :class:`CallableJudge` / :class:`CallableReward` — any Python callable named
  ``package.module:function`` in a config (:func:`load_callable`);
* :class:`TabularOracle` — the exact p*(a ≻ b | x) of a :class:`psipo.tabular.TabularProblem`
  (responses are action names, prompts are context names), and as a reward its exact
  p*(y ≻ µ | x), so that everything built on judges can be checked exactly. (An oracle for
  the LM lab's world is :class:`psipo.experiments.lm_lab.world.WorldOracle`: responses are
  token-id sequences, and the judge is exact for its Bradley–Terry and non-transitive oracles.)

:func:`make_judge` / :func:`make_reward` turn a config value into one: a local folder is a
reward model, ``package.module:function`` a callable.

Every judge's output passes :func:`checked_probabilities` / :func:`checked_rewards`: a wrong
shape, a NaN, a probability outside [0, 1] or a non-finite reward is a one-line
:class:`~psipo.errors.PsipoInputError` naming the judge.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from psipo.errors import PsipoInputError

Text = Any
"""A prompt or response: a string, or (conversational) a list of ``{"role", "content"}`` messages."""


@runtime_checkable
class Judge(Protocol):
    """Pairwise preferences: the probability that response a is preferred to response b."""

    name: str

    def judge(self, prompts: Sequence[Text], responses_a: Sequence[Text], responses_b: Sequence[Text]) -> torch.Tensor:
        """P(a_i ≻ b_i | prompt_i) for every i: float tensor [N] in [0, 1]."""
        ...


@runtime_checkable
class RewardFunction(Protocol):
    """A scalar score per (prompt, response)."""

    name: str

    def reward(self, prompts: Sequence[Text], responses: Sequence[Text]) -> torch.Tensor:
        """r(prompt_i, response_i) for every i: finite float tensor [N]."""
        ...


# ---------------------------------------------------------------------------------------
# Output checks


def check_lengths(who: str, prompts: Sequence[Any], *others: Sequence[Any]) -> int:
    n = len(prompts)
    for other in others:
        if len(other) != n:
            raise PsipoInputError(f"{who}: got {n} prompts but {len(other)} responses")
    return n


def _as_vector(values: Any, n: int, who: str, what: str) -> torch.Tensor:
    try:
        raw = values.detach().cpu() if torch.is_tensor(values) else values
        if hasattr(raw, "dtype") and torch.as_tensor(raw).is_complex():  # else cast to real with a warning
            raise TypeError(f"complex numbers ({str(torch.as_tensor(raw).dtype).removeprefix('torch.')})")
        tensor = torch.as_tensor(raw, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PsipoInputError(f"{who}: returned {type(values).__name__}, not {what}: {exc}") from None
    if tuple(tensor.shape) != (n,):
        raise PsipoInputError(f"{who}: returned shape {list(tensor.shape)}, expected [{n}] ({what}, one per response)")
    return tensor


def checked_probabilities(values: Any, n: int, who: str) -> torch.Tensor:
    """``values`` as a float64 tensor [n] of probabilities; anything else is an error naming
    ``who`` (the config key and the judge, e.g. ``"judge mypkg.prefs:judge"``)."""
    p = _as_vector(values, n, who, "probabilities")
    if bool(torch.isnan(p).any()):
        raise PsipoInputError(f"{who}: returned NaN at index {int(torch.isnan(p).nonzero()[0])}")
    outside = (p < 0) | (p > 1)
    if bool(outside.any()):
        i = int(outside.nonzero()[0])
        raise PsipoInputError(f"{who}: returned probability {float(p[i]):g} at index {i}, outside [0, 1]")
    return p


def checked_rewards(values: Any, n: int, who: str, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``values`` as a float64 tensor [n] of rewards that stay finite in ``dtype`` (float32:
    what the losses compute in); anything else is an error naming ``who``."""
    r = _as_vector(values, n, who, "rewards")
    bad = ~torch.isfinite(r)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise PsipoInputError(f"{who}: returned non-finite reward {float(r[i])} at index {i}")
    check_finite_in(r, dtype, who, "reward")
    return r


def check_finite_in(values: torch.Tensor, dtype: torch.dtype, who: str, what: str) -> None:
    """Finite ``values`` that overflow ``dtype`` are an error naming ``who``: the training step
    would otherwise blame its own settings for the inf."""
    bad = ~torch.isfinite(values.to(dtype))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        limit = torch.finfo(dtype).max
        raise PsipoInputError(
            f"{who}: {what} {float(values.flatten()[i]):g} at index {i} overflows {str(dtype).removeprefix('torch.')} "
            f"(|x| ≤ {limit:.3g}); rescale the rewards"
        )


def judge_label(judge: Any, key: str = "judge") -> str:
    """How errors name a judge object: its ``who`` (the config key and its name), else ``key``
    and its ``name`` or class."""
    return getattr(judge, "who", None) or f"{key} {getattr(judge, 'name', type(judge).__name__)}"


def asked_probabilities(judge: Any, prompts: Sequence[Text], responses_a: Sequence[Text], responses_b: Sequence[Text]) -> torch.Tensor:
    """``judge.judge(...)`` checked (:func:`checked_probabilities`): a judge object given from
    Python need not check its own output."""
    return checked_probabilities(judge.judge(prompts, responses_a, responses_b), len(prompts), judge_label(judge))


class NamedJudge:
    """How error messages name a judge: the config key that named it, then its name."""

    name: str
    key: str = "judge"

    @property
    def who(self) -> str:
        return f"{self.key} {self.name}"


class RewardJudge(NamedJudge):
    """A :class:`RewardFunction` as a :class:`Judge` too: P(a ≻ b) = σ(r_a − r_b) (Bradley–Terry, Eq. 1)."""

    def _rewards(self, prompts: Sequence[Text], responses: Sequence[Text]) -> Any:
        raise NotImplementedError

    def reward(self, prompts: Sequence[Text], responses: Sequence[Text]) -> torch.Tensor:
        n = check_lengths(self.who, prompts, responses)
        return checked_rewards(self._rewards(list(prompts), list(responses)), n, self.who)

    def judge(self, prompts: Sequence[Text], responses_a: Sequence[Text], responses_b: Sequence[Text]) -> torch.Tensor:
        check_lengths(self.who, prompts, responses_a, responses_b)
        return torch.sigmoid(self.reward(prompts, responses_a) - self.reward(prompts, responses_b))


# ---------------------------------------------------------------------------------------
# Python callables named in a config


def load_callable(spec: str, *, key: str = "judge") -> Callable[..., Any]:
    """Resolve ``package.module:function`` (dots after the colon reach attributes) with importlib.

    A spec without a colon, a module that does not import, a missing attribute or an object
    that is not callable is a one-line :class:`PsipoInputError` naming ``key`` and the spec.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise PsipoInputError(f"{key}: {spec!r} is not of the form package.module:function")
    module_name, attribute = spec.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PsipoInputError(f"{key}: {spec!r}: cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 — the user's module raised while importing
        raise PsipoInputError(f"{key}: {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise PsipoInputError(f"{key}: {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PsipoInputError(f"{key}: {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


def _call(who: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; an exception inside the user's function is one line naming ``who``."""
    try:
        return fn(*args)
    # The user's code: report it, do not bury it in a traceback. sys.exit() in it too: else the
    # command would end mid-run with the judge's exit code (0: "success", no final/, no message).
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise PsipoInputError(f"{who}: raised {type(exc).__name__}: {exc}") from None


def _callable_and_name(fn: Callable[..., Any] | str, name: str | None, key: str) -> tuple[Callable[..., Any], str]:
    """A function given itself or as its ``package.module:function`` spec, and its name."""
    resolved = load_callable(fn, key=key) if isinstance(fn, str) else fn
    return resolved, name or (fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn)))


class CallableJudge(NamedJudge):
    """A :class:`Judge` from ``fn(prompts, responses_a, responses_b) -> P(a ≻ b)`` (or its spec)."""

    def __init__(self, fn: Callable[..., Any] | str, *, name: str | None = None, key: str = "judge") -> None:
        self.fn, self.name = _callable_and_name(fn, name, key)
        self.key = key

    def judge(self, prompts: Sequence[Text], responses_a: Sequence[Text], responses_b: Sequence[Text]) -> torch.Tensor:
        n = check_lengths(self.who, prompts, responses_a, responses_b)
        values = _call(self.who, self.fn, list(prompts), list(responses_a), list(responses_b))
        return checked_probabilities(values, n, self.who)


class CallableReward(RewardJudge):
    """A :class:`RewardFunction` (and judge σ(r_a − r_b)) from ``fn(prompts, responses) -> r`` (or its spec)."""

    def __init__(self, fn: Callable[..., Any] | str, *, name: str | None = None, key: str = "reward") -> None:
        self.fn, self.name = _callable_and_name(fn, name, key)
        self.key = key

    def _rewards(self, prompts: Sequence[Text], responses: Sequence[Text]) -> Any:
        return _call(self.who, self.fn, prompts, responses)


# ---------------------------------------------------------------------------------------
# Exact oracles of a tabular problem


class TabularOracle(RewardJudge):
    r"""The exact preferences of a :class:`~psipo.tabular.TabularProblem`.

    Responses are action names; prompts are context names (any prompt, for a problem without
    contexts). ``judge`` is :math:`p^*(a \succ b \mid x)` read from the problem's table, and
    ``reward`` is :math:`p^*(y \succ \mu \mid x)`, the reward that IPO maximises (§5, Eq. 8).
    Unlike :class:`RewardJudge`, ``judge`` is *not* σ(r_a − r_b): it is the table itself.
    """

    def __init__(self, problem: Any, *, name: str = "tabular") -> None:
        from psipo.tabular.exact import preference_against

        self.problem, self.name = problem, name
        self.scores = preference_against(problem)

    def _contexts(self, prompts: Sequence[Text]) -> list[int]:
        if not self.problem.has_contexts:
            return [0] * len(prompts)
        return [self.problem.context_index(p, field=f"{self.who}: prompt") for p in prompts]

    def _actions(self, responses: Sequence[Text]) -> list[int]:
        return [self.problem.action_index(r, field=f"{self.who}: response") for r in responses]

    def _rewards(self, prompts: Sequence[Text], responses: Sequence[Text]) -> Any:
        return self.scores[self._contexts(prompts), self._actions(responses)]

    def judge(self, prompts: Sequence[Text], responses_a: Sequence[Text], responses_b: Sequence[Text]) -> torch.Tensor:
        n = check_lengths(self.who, prompts, responses_a, responses_b)
        x, a, b = self._contexts(prompts), self._actions(responses_a), self._actions(responses_b)
        return checked_probabilities(self.problem.preferences[x, a, b], n, self.who)


# ---------------------------------------------------------------------------------------
# Bradley–Terry reward models


def padded(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Token-id ``sequences`` right-padded with ``pad_id``: ``input_ids`` and ``attention_mask``.

    ``pad_id`` must be the model's ``config.pad_token_id``: a sequence-classification model
    pools the rightmost token that is not the pad id, i.e. the last real token.
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        input_ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        attention_mask[i, : len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def sequence_scores(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (first) output of a sequence-classification ``model`` per row of ``batch`` [rows]."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits.reshape(batch["input_ids"].shape[0], -1)[:, 0]


def ensure_pad_token(model: Any, pad_id: int) -> int:
    """Give a model without ``config.pad_token_id`` one (transformers needs it to pool a
    padded batch); return the pad id in force."""
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_id
    return int(model.config.pad_token_id)


TOKENISATION_KEYS = {"max_length": int, "max_prompt_length": int, "append_eos": bool}
"""The keys of a ``psipo reward`` run that decide how it tokenised its pairs."""


def reward_run_limits(path: str | Path) -> dict[str, Any]:
    """``max_length``, ``max_prompt_length`` and ``append_eos`` of the ``psipo reward`` run whose
    ``final/`` folder is ``path`` (its config.yaml beside it, recognised by ``reward_l2``), so
    that a judge tokenises as that run trained; ``{}`` for any other folder."""
    from psipo.lm.run_folder import config_beside_final

    _, data = config_beside_final(path) or (None, {})
    if "reward_l2" not in data:
        return {}
    return {k: data[k] for k, kind in TOKENISATION_KEYS.items() if type(data.get(k)) is kind}


class RewardModel(RewardJudge):
    """A Bradley–Terry reward model: an ``AutoModelForSequenceClassification`` with one output.

    Prompts and responses are tokenised as ``psipo reward`` tokenised its pairs (the
    tokenizer's special tokens before a plain prompt, a chat template for message lists, EOS
    after the response, the prompt cut to its last ``max_prompt_length`` tokens and the whole
    to ``max_length``), scored ``batch_size`` at a time without gradients.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "reward_model",
        batch_size: int = 16,
        max_length: int = 512,
        max_prompt_length: int = 256,
        append_eos: bool = True,
        key: str = "judge",
    ) -> None:
        from psipo.lm.model import pad_id_of

        self.model, self.tokenizer, self.name, self.batch_size = model.eval(), tokenizer, name, batch_size
        self.key = key
        self.max_length, self.max_prompt_length, self.append_eos = max_length, max_prompt_length, append_eos
        self.pad_id = ensure_pad_token(model, pad_id_of(tokenizer))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, key: str = "reward_model", **options: Any) -> RewardModel:
        """Load a folder (e.g. a ``psipo reward`` run's ``final/``); one-line errors naming ``key``.

        A ``psipo reward`` run's ``final/`` tokenises with that run's ``max_length``,
        ``max_prompt_length`` and ``append_eos`` (:func:`reward_run_limits`) unless ``options``
        set them.

        A folder whose ``config.json`` names only other architectures (a causal LM, say), or a
        classifier with more than one output, is refused
        (:func:`psipo.lm.model.check_architecture`): transformers would load it with a fresh,
        random scoring head and no warning that reaches the user, and every judgement would be noise.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from psipo.lm.config import ModelConfig
        from psipo.lm.model import _from_pretrained, quiet_transformers

        quiet_transformers()
        config = ModelConfig(model=str(path))
        # num_labels=1 also for a LoRA adapter folder, whose base model is a causal LM.
        model = _from_pretrained(
            AutoModelForSequenceClassification, str(path), config, key=key, what="a reward model",
            want="reward model", num_labels=1,
        )  # fmt: skip
        tokenizer = _from_pretrained(AutoTokenizer, str(path), config, key=key, what="a tokenizer")
        options = {**reward_run_limits(path), **options}
        return cls(model, tokenizer, name=options.pop("name", str(path)), key=key, **options)

    def tokenize(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[list[int]]:
        """Token ids of prompt + response, as the trainer builds them."""
        from psipo.lm.data import ParsedRow, _render_conversation

        sequences = []
        eos = self.tokenizer.eos_token_id
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            if isinstance(response, list):
                row = ParsedRow(prompt if isinstance(prompt, list) else [], response, response)
                prompt_text, response_text, _ = _render_conversation(self.tokenizer, row, f"{self.who}: row {i}")
                special = False
            else:
                prompt_text, response_text, special = str(prompt), str(response), True
            p = self.tokenizer(prompt_text, add_special_tokens=special)["input_ids"]
            r = self.tokenizer(response_text, add_special_tokens=False)["input_ids"]
            if self.append_eos and eos is not None and (not r or r[-1] != eos):
                r = r + [eos]
            p = p[max(0, len(p) - self.max_prompt_length) :]
            sequence = (p + r)[: self.max_length]
            sequences.append(sequence or [self.pad_id])
        return sequences

    @torch.no_grad()
    def _rewards(self, prompts: Sequence[Text], responses: Sequence[Text]) -> Any:
        sequences = self.tokenize(prompts, responses)
        device = next(self.model.parameters()).device
        scores = []
        for i in range(0, len(sequences), self.batch_size):
            batch = padded(sequences[i : i + self.batch_size], self.pad_id)
            scores.append(sequence_scores(self.model, {k: v.to(device) for k, v in batch.items()}).float().cpu())
        return torch.cat(scores) if scores else torch.zeros(0)


# ---------------------------------------------------------------------------------------
# From a config value


EMPTY_SPEC = "empty; give a reward-model folder or package.module:function"
"""Why an empty judge or reward is refused (as a path it would name the current folder)."""


def _is_folder(spec: str, key: str) -> bool:
    """Whether a judge or reward ``spec`` names a local folder; an empty one is an error."""
    if not spec.strip():
        raise PsipoInputError(f"{key}: {EMPTY_SPEC}")
    return Path(spec).expanduser().is_dir()


def make_reward(spec: str, *, key: str = "reward", **options: Any) -> RewardJudge:
    """A config's ``reward:`` value: a local folder → :class:`RewardModel` (``options`` are
    its keyword arguments), ``package.module:function`` → :class:`CallableReward`."""
    if _is_folder(spec, key):
        return RewardModel.from_pretrained(Path(spec).expanduser(), key=key, **options)
    if ":" not in spec:
        raise PsipoInputError(f"{key}: {spec!r} is neither a local folder (a reward model) nor package.module:function")
    return CallableReward(spec, key=key)


def make_judge(spec: str, *, key: str = "judge", **options: Any) -> Judge:
    """A config's ``judge:`` value: a local folder → :class:`RewardModel` (σ(r_a − r_b));
    ``package.module:function`` → :class:`CallableJudge` when the function takes
    ``(prompts, responses_a, responses_b)`` (it returns P(a ≻ b)), or :class:`CallableReward`
    (σ(r_a − r_b), like a reward model) when it takes only ``(prompts, responses)``."""
    if _is_folder(spec, key):
        return make_reward(spec, key=key, **options)
    if ":" not in spec:
        raise PsipoInputError(f"{key}: {spec!r} is neither a local folder (a reward model) nor package.module:function")
    fn = load_callable(spec, key=key)
    if _accepts(fn, 3) or not _accepts(fn, 2):
        return CallableJudge(fn, name=spec, key=key)
    return CallableReward(fn, name=spec, key=key)


def _accepts(fn: Callable[..., Any], n: int) -> bool:
    """Whether ``fn`` can be called with ``n`` positional arguments (True when its signature
    cannot be read, as for some C callables)."""
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    except ValueError:
        return True
    return True
