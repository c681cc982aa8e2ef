"""psipo.lm.reference: the checks and code paths a mutation audit of lm/reference.py found untested."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from psipo.lm.config import ModelConfig
from psipo.lm.data import TokenizedPair, collate
from psipo.lm.fixtures import make_tiny_model
from psipo.lm.logprobs import pair_logps
from psipo.lm.model import add_lora
from psipo.lm.reference import (
    AdaptersDisabledReference,
    LiveReference,
    PairScorer,
    PrecomputedReference,
    _load_scores,
    make_reference,
    model_fingerprint,
)

CPU = torch.device("cpu")
PAIRS = [
    TokenizedPair([2, 3, 4], [5, 6], [7, 8, 9]),
    TokenizedPair([3], [10, 11, 12], [13]),
    TokenizedPair([4, 5, 6, 7], [8], [9, 10]),
]


def _scorer(**keys):
    return PairScorer(**({"aggregation": "sum", "batch_size": 2, "chunk_size": 64, "pad_id": 0, "device": CPU} | keys))


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _model(seed=0):
    return make_tiny_model(layers=1, hidden=16, heads=2, vocab=20, seed=seed)


def test_cache_keys_by_hand():
    assert _scorer().cache_key() == "sum|cpu|False|torch.float32"
    assert _scorer(aggregation="mean", shared_prompt=True).cache_key() == "mean|cpu|True|torch.float32"
    assert _scorer(autocast=_bf16).cache_key() == "sum|cpu|False|torch.bfloat16"
    assert _scorer(device=torch.device("meta")).cache_key() == "sum|meta|False|torch.float32"


def test_model_fingerprints_see_dtypes_and_shapes():
    # The same bytes as float32 or int32, as [2, 3] or [3, 2]: other weights, other fingerprints.
    values = torch.arange(6.0)
    tensors = [values.reshape(2, 3), values.reshape(3, 2), values.view(torch.int32).reshape(2, 3)]
    fingerprints = set()
    for tensor in tensors:
        module = torch.nn.Module()
        module.register_buffer("w", tensor.clone())
        fingerprints.add(model_fingerprint(module))
    assert len(fingerprints) == 3


def test_cache_entries_are_keyed_by_the_weights_the_pairs_and_the_scorer(tmp_path):
    # Each compute below differs from the first in one part of the key only: each must score
    # its own model and pairs, not load the first one's entry.
    model, other = _model(0), _model(1)
    others_pairs = [TokenizedPair(p.prompt_ids, p.rejected_ids, p.chosen_ids) for p in PAIRS]  # same lengths
    scorer, shared = _scorer(), _scorer(shared_prompt=True)
    first = PrecomputedReference.compute(model, PAIRS, cache_dir=tmp_path, model_key="a", scorer=scorer)
    torch.testing.assert_close((first.chosen, first.rejected), scorer(model, PAIRS), atol=0, rtol=0)
    runs = [
        (other, PAIRS, "b", scorer),
        (model, others_pairs, "a", scorer),
        (model, PAIRS, "a", shared),
    ]
    for n, (m, pairs, key, s) in enumerate(runs, start=2):
        got = PrecomputedReference.compute(m, pairs, cache_dir=tmp_path, model_key=key, scorer=s)
        torch.testing.assert_close((got.chosen, got.rejected), s(m, pairs), atol=0, rtol=0)
        assert len(list((tmp_path / "reference").iterdir())) == n
    # the shared layout gives the two-row layout's numbers (up to rounding): a separate entry all the same
    torch.testing.assert_close(got.chosen, first.chosen, atol=1e-5, rtol=1e-5)


def test_scoring_leaves_the_model_in_the_mode_it_was_in():
    model = _model()
    for training in (False, True):
        model.train(training)
        _scorer()(model, PAIRS)
        assert model.training is training


def test_a_precomputed_reference_refuses_other_pairs():
    reference = PrecomputedReference(torch.zeros(3), torch.zeros(3))
    assert reference.score(PAIRS, _scorer())[0] is reference.chosen
    with pytest.raises(ValueError, match=r"^precomputed for 3 pairs, asked for 2$"):
        reference.score(PAIRS[:2], _scorer())


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"chosen": torch.zeros(3), "rejected": torch.zeros(3), "extra": torch.zeros(3)}, r"holds \['chosen', 'extra', 'rejected'\]"),
        ({"chosen": torch.zeros(3, 1), "rejected": torch.zeros(3)}, r"chosen: expected 3 log-probs, got a torch.float32 tensor of shape \(3, 1\)"),
        ({"chosen": torch.zeros(3), "rejected": torch.zeros(3, dtype=torch.int64)}, r"rejected: expected 3 log-probs, got a torch.int64"),
        ({"chosen": torch.zeros(3), "rejected": torch.tensor([0.0, float("-inf"), 0.0])}, r"rejected: holds non-finite"),
    ],
)
def test_a_cache_entry_that_is_not_two_finite_float_vectors_is_refused(tmp_path, tensors, message):
    path = tmp_path / "entry.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=message):
        _load_scores(path, 3)
    save_file({"chosen": torch.zeros(3, dtype=torch.float64), "rejected": torch.ones(3, dtype=torch.bfloat16)}, str(path))
    chosen, rejected = _load_scores(path, 3)  # any float dtype: a float64 or bf16 run's own
    assert chosen.dtype == torch.float64 and rejected.dtype == torch.bfloat16


def test_a_live_reference_is_a_frozen_model_in_eval_mode():
    model = _model().train()
    reference = LiveReference(model, aggregation="sum", chunk_size=8)
    assert reference.model is model and not model.training
    assert not any(p.requires_grad for p in model.parameters())


def _lora_policy():
    policy = add_lora(_model(), ModelConfig(lora_r=4), seed=0)
    with torch.no_grad():  # adapters that change the outputs, as after training
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    return policy


@pytest.mark.parametrize("kind", ["live", "adapters_disabled"])
def test_live_and_adapters_disabled_references_score_under_the_scorers_autocast(kind):
    policy = _lora_policy()
    base = _model()
    batch = collate(PAIRS, pad_id=0)
    with torch.no_grad(), _bf16():
        want = pair_logps(base, batch, aggregation="sum")
    with torch.no_grad():
        full = pair_logps(base, batch, aggregation="sum")
    assert not torch.allclose(want[0], full[0], atol=1e-4)  # bf16 matmuls do change the numbers
    reference = make_reference(
        kind, policy=policy, pairs=PAIRS, scorer=_scorer(autocast=_bf16), cache_dir=None, model_key="", live_model=base
    )
    torch.testing.assert_close(reference([0, 1, 2], batch), want, atol=1e-6, rtol=1e-6)


def test_the_adapters_disabled_reference_scores_a_set_of_pairs_with_the_base_model():
    policy, base = _lora_policy(), _model()
    reference = AdaptersDisabledReference(policy, aggregation="sum", chunk_size=64)
    scorer = _scorer()
    want = scorer(base, PAIRS)
    assert not torch.allclose(scorer(policy, PAIRS)[0], want[0], atol=1e-3)  # the adapters count
    torch.testing.assert_close(reference.score(PAIRS, scorer), want, atol=1e-5, rtol=1e-5)


def test_a_live_reference_of_another_vocabulary_is_refused():
    # The trainer's loader checks its own reference model; make_reference checks any it is given.
    from psipo.errors import PsipoInputError

    other = make_tiny_model(layers=1, hidden=16, heads=2, vocab=24)
    with pytest.raises(PsipoInputError, match=r"^reference_model: its vocabulary has 24 tokens but the policy's \(model\) has 20"):
        make_reference("live", policy=_model(), pairs=PAIRS, scorer=_scorer(), cache_dir=None, model_key="", live_model=other)
