"""psipo reward: the checks and code paths a mutation audit of lm/reward.py found untested."""

from __future__ import annotations

import math

import pytest
import torch

from psipo.errors import PsipoInputError
from psipo.lm.config import ModelConfig
from psipo.lm.reward import add_reward_lora, load_reward_config, load_reward_model


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_reward_l2_that_is_not_finite_is_refused(base_config, value):
    # inf passed "reward_l2 >= 0" alone: every loss would be inf (or NaN at r = 0).
    with pytest.raises(PsipoInputError, match=r"reward_l2: must be a finite number >= 0"):
        load_reward_config(None, base_config | {"reward_l2": value})


def test_a_model_that_has_adapters_already_gets_no_second_set(model_dir):
    config = ModelConfig(model=str(model_dir), lora_r=2)
    model = load_reward_model(str(model_dir), config)
    assert hasattr(model, "disable_adapter")
    assert add_reward_lora(model, config, seed=0) is model
    assert sum("lora_A" in name for name, _ in model.named_parameters()) > 0
    # Without adapters and lora_r 0 the model is left as it is too.
    plain = load_reward_model(str(model_dir), ModelConfig(model=str(model_dir)))
    assert (
        not hasattr(plain, "disable_adapter")
        and add_reward_lora(plain, ModelConfig(model=str(model_dir)), seed=0) is plain
    )


@pytest.mark.parametrize(
    "dtype, want",
    [("bfloat16", torch.bfloat16), ("float32", torch.float32), ("float16", torch.float32)],
)
def test_the_reward_model_loads_in_the_configured_dtype(model_dir, dtype, want):
    model = load_reward_model(str(model_dir), ModelConfig(model=str(model_dir), dtype=dtype))
    assert {p.dtype for p in model.parameters()} == {want}
    assert model.config.num_labels == 1


def test_summaries_by_hand():
    from psipo.lm.reward import RewardTask

    rows = torch.tensor(
        [[0.5, 2.0, 1.0], [1.5, -1.0, 0.0], [0.7, 3.0, 3.0]]
    )  # [loss, r_chosen, r_rejected]
    summary = RewardTask.summarize(None, rows)
    assert summary == pytest.approx(
        {
            "loss": 0.9,
            "accuracy": 1 / 3,
            "reward_chosen": 4 / 3,
            "reward_rejected": 4 / 3,
            "margin": 0.0,
        }
    )
    assert RewardTask.summarize(None, rows[:2])["margin"] == pytest.approx(0.0)
    assert RewardTask.summarize(None, rows[:1])["margin"] == pytest.approx(
        1.0
    )  # r_w − r_l, not r_w
    assert (
        RewardTask.summarize(None, torch.empty(0, 3)) == {}
    )  # nothing to summarise: no NaN figures


def test_a_step_counts_the_tokens_of_both_sequences_of_each_pair(base_config, rows, monkeypatch):
    from psipo.lm.reward import RewardTask, train_reward

    counted = []
    real = RewardTask.losses

    def spy(self, indices):
        losses, metric_rows, tokens = real(self, indices)
        pairs = [self.setup.train_data.pairs[i] for i in indices]
        counted.append(
            (
                tokens,
                sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs),
            )
        )
        return losses, metric_rows, tokens

    monkeypatch.setattr(RewardTask, "losses", spy)
    train_reward(load_reward_config(None, base_config | {"max_steps": 1}), train_pairs=rows)
    assert counted and all(got == want for got, want in counted)


def test_the_held_out_loss_is_bradley_terry_alone_and_the_model_trains_again_after_it(
    base_config, rows, model_dir
):
    from psipo.lm.reward import RewardTask, train_reward

    modes = []
    real = RewardTask.evaluate

    def spy(self, step, *, is_last):
        record = real(self, step, is_last=is_last)
        modes.append(self.setup.policy.training)
        return record

    held_out = rows[:6]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RewardTask, "evaluate", spy)
        config = load_reward_config(
            None,
            base_config | {"max_steps": 2, "eval_steps": 1, "learning_rate": 0.0, "reward_l2": 1.0},
        )
        result = train_reward(config, train_pairs=rows, eval_pairs=held_out)
    assert modes and all(modes)  # evaluation hands the model back in training mode
    model = result.model.eval()
    r = []
    with torch.no_grad():
        for p in result.eval_data.pairs:
            scores = [
                model(input_ids=torch.tensor([p.prompt_ids + ids])).logits.double().item()
                for ids in (p.chosen_ids, p.rejected_ids)
            ]
            r.append(scores)
    margins = torch.tensor([a - b for a, b in r])
    assert (
        float(margins.abs().max()) > 1e-3
    )  # the random head's rewards differ: an L2 term would show
    record = result.history[-1]
    assert record["eval_loss"] == pytest.approx(
        float(-torch.nn.functional.logsigmoid(margins).mean()), abs=1e-5
    )
    assert record["eval_margin"] == pytest.approx(float(margins.mean()), abs=1e-5)
