"""The training loop: initial losses, reference sources, accumulation, resume, learning."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from psipo.errors import PsipoInputError
from psipo.lm import TokenizedPair, load_train_config, train
from psipo.lm.data import collate
from psipo.lm.logprobs import pair_logps
from psipo.lm.reference import LiveReference, PairScorer, PrecomputedReference, model_fingerprint


def run(base_config, rows, **keys):
    return train(load_train_config(None, base_config | keys), train_pairs=rows)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize(
    ("loss", "tau", "expected"),
    [
        ("ipo", 0.1, 25.0), ("ipo", 0.5, 1.0), ("dpo", 0.1, math.log(2)), ("hinge", 0.3, 1.0),
        # GPO's f(τh) at h = 0: e^0, max(0, 1)², 1/(1 + e^0)²
        ("exponential", 0.3, 1.0), ("truncated_quadratic", 0.3, 1.0), ("savage", 0.3, 0.25),
    ],
)
def test_initial_loss_is_the_closed_form_at_pi_equals_pi_ref(base_config, rows, loss, tau, expected):
    # The first logged step's loss is computed before any update, with π = π_ref.
    first = run(base_config, rows, loss=loss, tau=tau, max_steps=1).history[0]
    assert first["loss"] == pytest.approx(expected, abs=1e-5)
    assert abs(first["h_mean"]) < 1e-6 and first["h_std"] < 1e-6
    assert first["ipo_target"] == pytest.approx(1 / (2 * tau))


def test_metrics_records_have_the_documented_keys(base_config, rows):
    history = run(base_config, rows, eval_fraction=0.25, max_steps=2).history
    keys = {
        "step", "epoch", "loss", "h_mean", "h_std", "ipo_target", "reward_chosen", "reward_rejected",
        "margin", "accuracy", "logps_chosen", "logps_rejected", "kl", "grad_norm", "lr",
        "tokens_per_second", "peak_memory_mb", "eval_loss", "eval_h_mean", "eval_accuracy",
    }
    assert keys <= history[-1].keys()
    assert [r["step"] for r in history] == [1, 2]


def test_precomputed_reference_equals_live_reference(base_config, rows, model_dir, tmp_path):
    config = load_train_config(None, base_config)
    result = train(config, train_pairs=rows, eval_pairs=rows[:8])  # fills the reference cache
    pairs = result.train_data.pairs
    initial = AutoModelForCausalLM.from_pretrained(model_dir)
    cached = PrecomputedReference.compute(
        torch.nn.Identity(),  # never run: the entry must come from the cache of the first run
        pairs,
        cache_dir=tmp_path / "cache",
        model_key=model_fingerprint(initial),
        # the settings of the first run (its default layout is the shared prompt)
        scorer=PairScorer(aggregation="mean", batch_size=4, chunk_size=64, pad_id=0, device=torch.device("cpu"), shared_prompt=True),
    )
    live = LiveReference(initial, aggregation="mean", chunk_size=64)
    indices = [5, 0, 17, 3]
    batch = collate([pairs[i] for i in indices], pad_id=0)  # the two-row layout
    for got, want in zip(cached(indices, batch), live(indices, batch)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    # And whole runs agree: live and precomputed reference give the same trained weights.
    live_run = run(base_config, rows, reference="live", output_dir=str(tmp_path / "live"))
    assert_same_weights(weights(live_run.model), weights(result.model), atol=1e-5)


def test_pairs_with_the_same_tokens_split_otherwise_have_other_fingerprints():
    # The reference cache and resume checks key on these: moving a token from the prompt to
    # the completions (another chat template, another implicit-prompt rule) changes the scores.
    from psipo.lm.data import TokenizedPair
    from psipo.lm.reference import pairs_fingerprint

    splits = [([1, 2], [3], [3, 4]), ([1], [2, 3], [2, 3, 4]), ([1, 2], [3, 3], [4]), ([], [1, 2, 3], [1, 2, 3, 3, 4])]
    fingerprints = {pairs_fingerprint([TokenizedPair(*split)]) for split in splits}
    assert len(fingerprints) == len(splits)
    assert pairs_fingerprint([TokenizedPair(*splits[0])]) == pairs_fingerprint([TokenizedPair([1, 2], [3], [3, 4])])


def test_model_fingerprints_see_parameter_names_and_bytes():
    # The same tensors under other names are another model (the cache's key of π_ref's weights).
    weight = torch.arange(6.0).reshape(2, 3)
    fingerprints = []
    for names in (("a", "b"), ("b", "a"), ("a", "c")):
        module = torch.nn.Module()
        for name, value in zip(names, (weight, weight + 1)):
            module.register_parameter(name, torch.nn.Parameter(value.clone()))
        fingerprints.append(model_fingerprint(module))
    assert len(set(fingerprints)) == 3


def test_a_reference_cached_under_autocast_or_another_aggregation_is_not_reused(model_dir, rows, tmp_path):
    # The cache key held the aggregation, device and layout but not the autocast precision: on a
    # GPU, a float32 run after a run under the accelerate config's bf16 mixed precision took its
    # bf16 reference log-probs (h ≠ 0 at π = π_ref), and the other way round.
    config = load_train_config(None, {"model": str(model_dir), "output_dir": None, "max_steps": 1, "progress": False})
    pairs = train(config, train_pairs=rows[:8]).train_data.pairs
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    options = dict(aggregation="sum", batch_size=4, chunk_size=64, pad_id=0, device=torch.device("cpu"))
    bf16 = PairScorer(**options, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    fp32 = PairScorer(**options)
    cached = {"cache_dir": tmp_path / "cache", "model_key": model_fingerprint(model)}
    under_autocast = PrecomputedReference.compute(model, pairs, scorer=bf16, **cached)
    without = PrecomputedReference.compute(model, pairs, scorer=fp32, **cached)
    want = fp32(model, pairs)
    assert not torch.allclose(under_autocast.chosen, want[0], atol=1e-4)  # the two precisions differ
    torch.testing.assert_close(without.chosen, want[0], atol=0, rtol=0)
    torch.testing.assert_close(without.rejected, want[1], atol=0, rtol=0)
    # a per-token mean run after a sum run over the same pairs and weights: its own log-probs
    mean = PairScorer(**(options | {"aggregation": "mean"}))
    torch.testing.assert_close(PrecomputedReference.compute(model, pairs, scorer=mean, **cached).chosen, mean(model, pairs)[0], atol=0, rtol=0)


def _fsdp2_accelerator(mixed_precision):
    """One process of an FSDP2 run as the scorer sees it: accelerate's plugin, its mixed precision
    set as accelerate sets it from the config's mixed_precision."""
    from types import SimpleNamespace

    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    return SimpleNamespace(is_fsdp2=True, num_processes=1, is_main_process=True, state=SimpleNamespace(fsdp_plugin=plugin))


def test_a_reference_cached_by_an_fsdp2_mixed_precision_run_is_not_reused_by_autocast_alone(model_dir, rows, tmp_path):
    # Under accelerate's bf16 both an FSDP2 run and a DDP (or one-GPU) run score under bf16
    # autocast, so the key's matmul dtype was the same; but FSDP2's MixedPrecisionPolicy also
    # casts the weights to bf16 for the forward (embeddings, norms, residual stream in bf16), so
    # each run took the other's log-probs as its π_ref (h ≠ 0 at π = π_ref).
    import copy

    config = load_train_config(None, {"model": str(model_dir), "output_dir": None, "max_steps": 1, "progress": False})
    pairs = train(config, train_pairs=rows[:8]).train_data.pairs
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    options = dict(aggregation="sum", batch_size=4, chunk_size=64, pad_id=0, device=torch.device("cpu"),
                   autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    fsdp2 = PairScorer(**options, processes=_fsdp2_accelerator("bf16"))
    ddp = PairScorer(**options)
    cached = {"cache_dir": tmp_path / "cache", "model_key": model_fingerprint(model)}
    # what FSDP2 computes with: the same weights (the same fingerprint), cast to the policy's bf16
    sharded = PrecomputedReference.compute(copy.deepcopy(model).to(torch.bfloat16), pairs, scorer=fsdp2, **cached)
    alone = PrecomputedReference.compute(model, pairs, scorer=ddp, **cached)
    want = ddp(model, pairs)
    assert not torch.allclose(sharded.chosen.float(), want[0].float(), atol=1e-3)  # the two computations differ
    torch.testing.assert_close((alone.chosen, alone.rejected), want, atol=0, rtol=0)
    assert len(list((tmp_path / "cache" / "reference").iterdir())) == 2
    # FSDP2 without mixed precision computes as a plain run does: the keys of plain runs are unchanged
    assert PairScorer(**options, processes=_fsdp2_accelerator("no")).cache_key() == ddp.cache_key()


@pytest.mark.parametrize("mixed", ["bf16", "fp16"])
def test_a_deepspeed_mixed_precision_run_keys_its_reference_apart_from_a_float32_run(mixed):
    # Under DeepSpeed accelerate turns no autocast on, so the key's matmul dtype said float32, but
    # the engine casts the model itself to bf16/fp16 before the reference pass: a float32 run's
    # cached log-probs would have been taken for its π_ref, or the reverse.
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    options = dict(aggregation="sum", batch_size=4, chunk_size=64, pad_id=0, device=torch.device("cpu"))
    plain = PairScorer(**options).cache_key()
    deepspeed = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, mixed_precision=mixed, num_processes=1)
    assert PairScorer(**options, processes=deepspeed).cache_key() == plain + f"|deepspeed {mixed}"
    deepspeed_fp32 = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, mixed_precision="no", num_processes=1)
    assert PairScorer(**options, processes=deepspeed_fp32).cache_key() == plain  # as a plain run: keys unchanged


def test_lora_adapters_disabled_reference_is_the_base_model(base_config, rows, model_dir):
    result = run(base_config, rows, lora_r=4, reference="adapters_disabled", max_steps=4, learning_rate=5e-2)
    peft_model = result.model
    batch = collate(result.train_data.pairs[:6], pad_id=0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    want = pair_logps(base, batch, aggregation="mean", chunk_size=64)
    with torch.no_grad(), peft_model.disable_adapter():
        got = pair_logps(peft_model, batch, aggregation="mean", chunk_size=64)
    with torch.no_grad():
        trained = pair_logps(peft_model, batch, aggregation="mean", chunk_size=64)
    for g, w, t in zip(got, want, trained):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
        assert (t - w).abs().max() > 1e-3  # the adapters did learn something
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    card = (result.final_dir / "README.md").read_text()  # psipo's, not peft's blank template
    assert card.startswith("---\nlibrary_name: peft\n") and "AutoPeftModelForCausalLM" in card
    assert "Model Card for Model ID" not in card


def test_the_adapters_disabled_reference_scores_without_dropout_as_the_other_references_do():
    # With disable_dropout: false it scored the training micro-batches in train mode: a noisy
    # π_ref, unlike precompute and live (eval mode), and unlike its own evaluation scores.
    from transformers import LlamaConfig, LlamaForCausalLM

    from psipo.lm.config import ModelConfig
    from psipo.lm.model import add_lora
    from psipo.lm.reference import AdaptersDisabledReference

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(
        vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, attention_dropout=0.5, pad_token_id=0, eos_token_id=1, bos_token_id=None,
    ))
    policy = add_lora(base, ModelConfig(lora_r=4), seed=0).train()
    pairs = [TokenizedPair([2, 3, 4], [5, 6], [7, 8, 9]), TokenizedPair([3, 3], [10, 11, 12], [13])]
    scorer = PairScorer(aggregation="sum", batch_size=2, chunk_size=64, pad_id=0, device=torch.device("cpu"))
    reference = AdaptersDisabledReference(policy, aggregation="sum", chunk_size=64)
    want = reference.score(pairs, scorer)
    for _ in range(2):
        got = reference([0, 1], collate(pairs, pad_id=0))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    assert policy.training  # the policy trains on, with its dropout


def test_batch_8_equals_batch_4_with_2_accumulation_steps(base_config, rows, tmp_path):
    # Each step sees the same 8 pairs either way. The (pre-clipping) gradient norm checks the
    # gradient's scale, which Adam's update would hide; a small learning rate keeps Adam's
    # near-sign first steps from amplifying float noise in near-zero gradient entries.
    keys = {"learning_rate": 1e-4, "max_steps": 3}
    one = run(base_config, rows, batch_size=8, output_dir=str(tmp_path / "a"), **keys)
    two = run(base_config, rows, batch_size=4, gradient_accumulation_steps=2, output_dir=str(tmp_path / "b"), **keys)
    for a, b in zip(one.history, two.history):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert_same_weights(weights(one.model), weights(two.model), atol=1e-6)
    halves = run(base_config, rows, batch_size=4, output_dir=str(tmp_path / "c"), **keys)
    assert halves.history[0]["grad_norm"] != pytest.approx(one.history[0]["grad_norm"], rel=1e-3)


@pytest.mark.parametrize(
    ("schedule", "warmup_ratio", "factors"),
    [
        # 4 steps, 2 of warm-up from 0 to the peak, then linear to 0 (reached after the last step)
        ("linear", 0.5, [1 / 3, 2 / 3, 1.0, 0.5]),
        # 1 step of warm-up, then cosine over the 3 others: ½(1 + cos(π·k/3)), k = 0, 1, 2
        ("cosine", 0.25, [0.5, 1.0, 0.75, 0.25]),
        ("constant", 0.0, [1.0, 1.0, 1.0, 1.0]),
        # warm-up steps are int(0.3 × 4) = 1, not rounded up to 2
        ("linear", 0.3, [0.5, 1.0, 2 / 3, 1 / 3]),
    ],
)
def test_the_lr_of_a_record_is_the_one_its_step_used(base_config, rows, monkeypatch, schedule, warmup_ratio, factors):
    # The record of step N used to show the learning rate of step N + 1 (read after the
    # scheduler had moved on): the last record of a decaying schedule said lr 0.
    used = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    history = run(base_config, rows, max_steps=4, learning_rate=1e-3, lr_scheduler=schedule, warmup_ratio=warmup_ratio).history
    assert used == pytest.approx([1e-3 * f for f in factors], rel=1e-12)
    assert [r["lr"] for r in history] == pytest.approx(used, rel=1e-12)


@pytest.mark.parametrize("on_nonfinite", ["stop", "skip"])
def test_a_float16_gradient_scaler_overflow_is_its_skipped_step_not_a_non_finite_one(base_config, rows, monkeypatch, on_nonfinite):
    # dtype float16 on a GPU trains under a gradient scaler, whose scaled gradient overflows now
    # and then by design (its first scale, and every raise of it). Such a step stopped the run
    # ("non-finite gradient norm … tau too small", exit 3); with on_nonfinite: skip the scaler
    # never lowered its scale and the next step crashed ("unscale_() has already been called").
    # A CPU accelerator with a scaler stands in for the GPU; 2**127 overflows float32 as 2**16
    # overflows float16, and the scaler halves it until the gradient fits.
    from accelerate import Accelerator

    import psipo.lm.trainer

    class Float16(Accelerator):
        @property
        def mixed_precision(self):
            return "fp16"

    scalers = []

    def accelerator(config):
        accelerator = Float16(cpu=True)
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
        scalers.append(accelerator.scaler)
        return accelerator

    monkeypatch.setattr(psipo.lm.trainer, "_accelerator", accelerator)
    result = run(base_config, rows, max_steps=10, learning_rate=1e-3, on_nonfinite=on_nonfinite)
    history = result.history
    overflows = sum(r.get("skipped_steps", 0) for r in history)
    assert overflows == math.log2(2.0**127 / scalers[0].get_scale()) >= 1  # one halving per overflow
    assert sum("grad_norm" in r for r in history) == 10 - overflows  # the others trained
    assert all(math.isfinite(r["loss"]) for r in history) and history[-1]["loss"] < 24.9


def test_resumed_run_equals_uninterrupted_run(base_config, rows, tmp_path):
    keys = {"max_steps": 6, "save_steps": 3, "save_total_limit": None, "lr_scheduler": "cosine", "warmup_ratio": 0.3}
    full = run(base_config, rows, output_dir=str(tmp_path / "full"), **keys)
    # An interrupted run: what is on disk after its checkpoint at step 3 (and a torn log line).
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-3", interrupted / "checkpoints" / "step-3")
    log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    (interrupted / "metrics.jsonl").write_text("\n".join(log[:4]) + '\n{"step": 5, "lo')
    resumed = run(base_config, rows, output_dir=str(interrupted), resume=True, **keys)
    assert_same_weights(weights(resumed.model), weights(full.model), atol=0)
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], abs=1e-6)
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]


def test_a_resumed_run_calls_back_at_its_own_steps_and_not_again_at_step_0(base_config, rows, tmp_path):
    calls = []

    def callback(step, model):
        calls.append(step)
        return {"probe": step}

    def train_in(folder, **keys):
        config = base_config | {"max_steps": 4, "save_steps": 2, "save_total_limit": None, "output_dir": str(folder)} | keys
        return train(load_train_config(None, config), train_pairs=rows, callback=callback)

    full = train_in(tmp_path / "full")
    assert calls == [0, 1, 2, 3, 4]
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-2", interrupted / "checkpoints" / "step-2")
    (interrupted / "metrics.jsonl").write_text("".join((tmp_path / "full" / "metrics.jsonl").read_text().splitlines(True)[:3]))
    calls.clear()
    resumed = train_in(interrupted, resume=True)
    assert calls == [3, 4]
    assert [r["step"] for r in resumed.history] == [r["step"] for r in full.history] == [0, 1, 2, 3, 4]
    assert [r["probe"] for r in resumed.history] == [0, 1, 2, 3, 4]


def test_ipo_drives_mean_h_to_its_target(base_config, rows):
    tau = 1.0  # target h = 1/(2τ) = 0.5
    history = run(
        base_config, rows, tau=tau, max_steps=20, learning_rate=3e-3, lr_scheduler="constant", logging_steps=5
    ).history
    assert history[0]["h_mean"] < 0.2
    assert history[-1]["h_mean"] == pytest.approx(0.5, abs=0.1)
    assert history[-1]["loss"] < 0.1 * history[0]["loss"]


def test_pretokenized_pairs_need_no_tokenizer_nor_eos(base_config, model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    pairs = [TokenizedPair([7, 8, 9], [10 + i % 5], [20 + i % 7, 21]) for i in range(16)]
    result = train(
        load_train_config(None, base_config | {"model": "a label", "append_eos": False}), model=model, train_pairs=pairs
    )
    assert result.tokenizer is None and len(result.history) == 3
    assert result.history[0]["loss"] == pytest.approx(25.0, abs=1e-5)
    assert (result.final_dir / "model.safetensors").is_file()


def test_clear_errors(base_config, rows, tmp_path):
    with pytest.raises(PsipoInputError, match="model: cannot load .*nowhere': no such local folder"):
        run(base_config, rows, model=str(tmp_path / "nowhere"))
    with pytest.raises(PsipoInputError, match="max_length: 5000 exceeds the model's max_position_embeddings 1024"):
        run(base_config, rows, max_length=5000)
    with pytest.raises(PsipoInputError, match="resume: no checkpoint"):
        run(base_config, rows, resume=True)
    with pytest.raises(PsipoInputError, match="reference'?: adapters_disabled needs LoRA"):
        run(base_config, rows, reference="adapters_disabled")
    with pytest.raises(PsipoInputError, match="train_data"):
        train(load_train_config(None, base_config))
    import psipo.lm.trainer

    missing = {"wandb": ("psipo_no_such_module",)}
    with pytest.MonkeyPatch.context() as patch, pytest.raises(PsipoInputError, match="report_to: wandb is not installed"):
        patch.setattr(psipo.lm.trainer, "TRACKER_MODULES", missing)
        run(base_config, rows, report_to=["wandb"])
    # "all" picks up every installed tracker, a folder tracker among them, without accelerate's check
    # that a folder was given: refused up front, not a traceback at the first log
    import accelerate.tracking
    from accelerate.utils import LoggerType

    with pytest.MonkeyPatch.context() as patch, pytest.raises(
        PsipoInputError, match="report_to: all includes tensorboard, which write their logs into output_dir, which is null"
    ):
        patch.setattr(accelerate.tracking, "get_available_trackers", lambda: [LoggerType.TENSORBOARD])
        run(base_config, rows, report_to=["all"], output_dir=None)


def test_in_memory_run_with_a_callback_writes_nothing(base_config, rows, tmp_path):
    seen = []

    def callback(step, model):
        seen.append((step, model.training))
        model.eval()  # the trainer puts it back in train mode
        return {"probe": float(step)}

    config = load_train_config(None, base_config | {"output_dir": None, "logging_steps": 2, "max_steps": 4})
    result = train(config, train_pairs=rows, callback=callback)
    assert [s for s, _ in seen] == [0, 2, 4] and all(training for _, training in seen)
    assert [(r["step"], r["probe"]) for r in result.history] == [(0, 0.0), (2, 2.0), (4, 4.0)]
    assert result.run_dir is None and not any(tmp_path.iterdir())  # no run folder, no cache


def _reference_damages():
    from safetensors.torch import save_file

    def truncate(path, n):
        path.write_bytes(path.read_bytes()[:20])

    def wrong_tensors(path, n):
        save_file({"chosen": torch.zeros(n)}, str(path))

    def too_short(path, n):
        save_file({"chosen": torch.zeros(n - 1), "rejected": torch.zeros(n - 1)}, str(path))

    def not_finite(path, n):
        save_file({"chosen": torch.full((n,), float("nan")), "rejected": torch.zeros(n)}, str(path))

    return [truncate, wrong_tensors, too_short, not_finite]


@pytest.mark.parametrize("damage", _reference_damages(), ids=lambda f: f.__name__)
def test_a_damaged_reference_cache_entry_is_discarded_with_a_warning_and_recomputed(model_dir, rows, tmp_path, capsys, damage):
    from psipo.lm.data import parse_row, tokenize_rows
    from psipo.lm.fixtures import make_tokenizer

    parsed = [parse_row(r, "row") for r in rows[:6]]
    pairs = tokenize_rows(parsed, make_tokenizer(64), max_length=64, max_prompt_length=32, append_eos=True).pairs
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    scorer = PairScorer(aggregation="sum", batch_size=4, chunk_size=64, pad_id=0, device=torch.device("cpu"))
    options = {"cache_dir": tmp_path / "cache", "model_key": model_fingerprint(model), "scorer": scorer}
    fresh = PrecomputedReference.compute(model, pairs, **options)
    (entry,) = (tmp_path / "cache" / "reference").iterdir()
    damage(entry, len(pairs))
    capsys.readouterr()
    again = PrecomputedReference.compute(model, pairs, **options)
    torch.testing.assert_close((again.chosen, again.rejected), (fresh.chosen, fresh.rejected))
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and f"discarding the reference log-prob cache file {entry} (" in warning
    # rewritten: the next compute reads the entry (the model is never run) and says nothing
    cached = PrecomputedReference.compute(torch.nn.Identity(), pairs, **options)
    torch.testing.assert_close((cached.chosen, cached.rejected), (fresh.chosen, fresh.rejected))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reference_model": "some/model"}, r"reference_model'?: is used only with reference: live"),
        ({"reference": "adapters_disabled", "lora_r": 4, "reference_model": "m"}, r"reference_model'?: is used only"),
        ({"lora_r": 4, "lora_alpha": 0}, r"lora_alpha'?: must be > 0 with LoRA"),
        ({"lora_r": 4, "lora_target_modules": []}, r"lora_target_modules'?: empty: name at least one module"),
        ({"eval_data": "held_out.jsonl", "eval_fraction": 0.1}, r"eval_fraction'?: is unused with eval_data"),
        ({"output_dir": "."}, r"output_dir'?: \. is the folder of model; write the run elsewhere"),
        ({"output_dir": "sub/..", "tokenizer": "."}, r"output_dir'?: sub/\.\. is the folder of model"),
        ({"output_dir": "ref", "reference": "live", "reference_model": "ref"}, r"output_dir'?: ref is the folder of reference_model"),
        # a loss hyperparameter of another loss, LoRA settings without LoRA: read by nothing
        ({"loss": "dpo", "label_smoothing": 0.2}, r"label_smoothing'?: is used only by loss cdpo \(loss is dpo\)"),
        ({"label_noise": 0.2}, r"label_noise'?: is used only by loss robust \(loss is ipo\)"),
        ({"lora_alpha": 32}, r"lora_alpha'?: is used only with LoRA \(lora_r > 0\); lora_r is 0"),
        ({"lora_dropout": 0.1}, r"lora_dropout'?: is used only with LoRA"),
        ({"lora_target_modules": ["q_proj"]}, r"lora_target_modules'?: is used only with LoRA"),
        # a split of nothing: no held-out pairs, though the key asks for them
        ({"eval_split": "validation"}, r"eval_split'?: is used only with eval_data .*; set eval_data \(the same name as train_data for another split of it\)"),
        # accelerate's tracker would raise a ValueError (a traceback) for the missing folder
        ({"output_dir": None, "report_to": ["tensorboard"]}, r"report_to'?: tensorboard writes its logs into output_dir, which is null"),
    ],
)
def test_settings_that_would_be_silently_ignored_or_void_are_refused(base_config, overrides, message, tmp_path, monkeypatch):
    from psipo.lm.config import validate

    (tmp_path / "ref").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)  # output_dir "." and "sub/.." name the model folder "."
    with pytest.raises(PsipoInputError, match=message):
        validate(load_train_config(None, {**base_config, "model": ".", **overrides}))


def test_reference_model_with_a_live_reference_and_lora_settings_that_do_something_are_accepted(base_config):
    from psipo.lm.config import validate

    validate(load_train_config(None, {**base_config, "reference": "live", "reference_model": "m"}))
    validate(load_train_config(None, {**base_config, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj"]}))
    validate(load_train_config(None, {**base_config, "lora_r": 4, "lora_dropout": 0.1}))
    validate(load_train_config(None, {**base_config, "loss": "cdpo", "label_smoothing": 0.1}))
    validate(load_train_config(None, {**base_config, "loss": "robust", "label_noise": 0.2}))


def test_eval_steps_without_held_out_pairs_is_refused_before_anything_is_written(base_config, rows, tmp_path):
    with pytest.raises(PsipoInputError, match=r"^key 'eval_steps': there is nothing held out to evaluate on; set eval_data or eval_fraction, or unset eval_steps$"):
        run(base_config, rows, eval_steps=2)
    assert not (tmp_path / "run" / "config.yaml").exists()
    # held-out pairs from any source make it valid
    assert run(base_config, rows, eval_steps=2, max_steps=2, eval_fraction=0.25, overwrite=True).history[-1]["step"] == 2


def test_a_live_reference_with_another_tokenizer_is_refused(base_config, rows, tmp_path, model_dir, copy_with_swapped_tokens):
    swapped = copy_with_swapped_tokens(model_dir, tmp_path / "swapped")
    with pytest.raises(PsipoInputError, match=r"^reference_model: its tokenizer \(.*swapped\) differs from the policy's: 2 of the policy's 64 tokens"):
        run(base_config, rows, reference="live", reference_model=str(swapped))


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_weight_decay_shrinks_weight_matrices_not_biases_or_norm_gains(weight_decay):
    """With zero gradients one AdamW step is the decay alone: θ ← θ·(1 − lr·wd) on matrices
    (and embeddings); biases and norm gains stay as they are (transformers' Trainer's rule)."""
    import types

    from psipo.lm.trainer import _optimisation

    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    overrides = {"learning_rate": 0.1, "weight_decay": weight_decay, "lr_scheduler": "constant", "warmup_ratio": 0.0}
    config = load_train_config(None, {"model": "m", "train_data": "t.jsonl", **overrides})
    cpu = types.SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    optimizer = _optimisation(config, model, cpu, n_examples=8).optimizer
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        shrink = 1 - 0.1 * weight_decay if p.ndim >= 2 else 1.0
        torch.testing.assert_close(p.detach(), before[name] * shrink, rtol=1e-6, atol=0, msg=name)


def record_losses_calls(monkeypatch):
    """The pair indices of every micro-batch the training task scores, in order."""
    from psipo.lm.trainer import PreferenceTask

    seen = []
    losses = PreferenceTask.losses

    def recording(self, indices):
        seen.append(list(indices))
        return losses(self, indices)

    monkeypatch.setattr(PreferenceTask, "losses", recording)
    return seen


def test_each_epoch_sees_every_pair_once_in_its_own_order_and_records_count_epochs(base_config, rows, monkeypatch):
    # 30 pairs in steps of 8: 4 steps an epoch, one of them 6 pairs (none dropped, none seen
    # twice); the second epoch draws another order. A record's epoch is steps done / 4.
    seen = record_losses_calls(monkeypatch)
    history = run(base_config, rows, max_pairs=30, max_steps=None, epochs=2, learning_rate=1e-4).history
    assert [r["step"] for r in history] == list(range(1, 9))
    assert [r["epoch"] for r in history] == [k / 4 for k in range(1, 9)]
    first, second = [i for b in seen[:4] for i in b], [i for b in seen[4:] for i in b]
    assert sorted(len(b) for b in seen[:4]) == sorted(len(b) for b in seen[4:]) == [6, 8, 8, 8]
    assert sorted(first) == sorted(second) == list(range(30))
    assert first != second
    # A fraction of an epoch rounds up to whole steps: 0.3 × 4 = 1.2 → 2.
    assert len(run(base_config, rows, max_steps=None, epochs=0.3, output_dir=None).history) == 2


def test_clipping_bounds_the_gradient_the_optimizer_steps_with(base_config, rows, monkeypatch):
    # The record's grad_norm is the norm before clipping; AdamW must step with the clipped
    # gradient (norm max_grad_norm), or with the whole one when max_grad_norm is null.
    stepped = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad.double() for group in self.param_groups for p in group["params"] if p.grad is not None]
        stepped.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    clipped = run(base_config, rows, max_steps=2, max_grad_norm=1e-3, output_dir=None).history
    assert all(r["grad_norm"] > 1e-2 for r in clipped)
    assert stepped == pytest.approx([1e-3, 1e-3], rel=1e-4)
    stepped.clear()
    whole = run(base_config, rows, max_steps=2, max_grad_norm=None, output_dir=None).history
    assert stepped == pytest.approx([r["grad_norm"] for r in whole], rel=1e-4)


def test_a_record_of_several_steps_averages_them_and_the_last_step_is_always_recorded(base_config, rows, tmp_path):
    # logging_steps 2 over 5 steps: records at 2, 4 and 5 (the last, though 5 is not a
    # multiple of 2), each the mean over its own steps (every step has 8 pairs) — the
    # records of logging_steps 1, averaged by hand.
    each = run(base_config, rows, max_steps=5, logging_steps=1, output_dir=str(tmp_path / "a")).history
    pairs = run(base_config, rows, max_steps=5, logging_steps=2, output_dir=str(tmp_path / "b")).history
    assert [r["step"] for r in pairs] == [2, 4, 5]
    for record, steps in zip(pairs, [each[0:2], each[2:4], each[4:5]]):
        for key in ("loss", "h_mean", "accuracy", "kl", "grad_norm"):
            assert record[key] == pytest.approx(sum(r[key] for r in steps) / len(steps), rel=1e-9, abs=1e-12), key
        assert record["lr"] == steps[-1]["lr"]  # the lr of the step it ends with


def test_two_adamw_steps_equal_a_hand_written_adamw_with_the_configs_betas_epsilon_and_decay():
    """Two steps of two gradients against AdamW written out in float64: the bias-corrected
    moments (β₁, β₂ of the config: one step alone would hide them), ε of the config, decoupled
    decay on the matrix only."""
    import types

    from psipo.lm.trainer import _optimisation

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    lr, b1, b2, eps, wd = 0.1, 0.5, 0.7, 0.3, 0.2
    overrides = {
        "learning_rate": lr, "adam_beta1": b1, "adam_beta2": b2, "adam_epsilon": eps, "weight_decay": wd,
        "lr_scheduler": "constant", "warmup_ratio": 0.0,
    }
    config = load_train_config(None, {"model": "m", "train_data": "t.jsonl", **overrides})
    cpu = types.SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    optimizer = _optimisation(config, model, cpu, n_examples=8).optimizer
    params = dict(model.named_parameters())
    want = {name: p.detach().clone() for name, p in params.items()}
    m = {name: torch.zeros_like(p) for name, p in want.items()}
    v = {name: torch.zeros_like(p) for name, p in want.items()}
    for t, scale in ((1, 1.0), (2, -3.0)):
        grads = {name: scale * torch.arange(1.0, p.numel() + 1, dtype=torch.float64).view_as(p) ** t for name, p in params.items()}
        for name, p in params.items():
            p.grad = grads[name].clone()
            decay = wd if p.ndim >= 2 else 0.0
            m[name] = b1 * m[name] + (1 - b1) * grads[name]
            v[name] = b2 * v[name] + (1 - b2) * grads[name] ** 2
            m_hat, v_hat = m[name] / (1 - b1**t), v[name] / (1 - b2**t)
            want[name] = want[name] * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + eps)
        optimizer.step()
    for name, p in params.items():
        torch.testing.assert_close(p.detach(), want[name], rtol=1e-12, atol=1e-12, msg=name)


def test_tokens_per_second_counts_the_unpadded_tokens_of_the_steps_pairs(base_config, rows, monkeypatch):
    # A clock that advances one second per reading makes each step last exactly 1 s, so a
    # record's tokens_per_second is its step's tokens: prompt + chosen and prompt + rejected
    # of each pair, without padding.
    import itertools
    import types

    import psipo.lm.loop

    clock = itertools.count()
    monkeypatch.setattr(psipo.lm.loop, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    seen = record_losses_calls(monkeypatch)
    result = run(base_config, rows, max_steps=3, batch_size=4, gradient_accumulation_steps=2, output_dir=None)
    pairs = result.train_data.pairs
    per_step = [seen[2 * k] + seen[2 * k + 1] for k in range(3)]
    want = [sum(2 * len(pairs[i].prompt_ids) + len(pairs[i].chosen_ids) + len(pairs[i].rejected_ids) for i in step) for step in per_step]
    assert [r["tokens_per_second"] for r in result.history] == want


def test_a_resume_that_moves_the_schedule_says_what_it_does_to_the_learning_rate(base_config, rows, tmp_path, capsys):
    from types import SimpleNamespace

    from psipo.lm.trainer import moved_schedule_note

    config = load_train_config(None, base_config | {"max_steps": 20, "warmup_ratio": 0.1, "learning_rate": 1e-3})
    opt = SimpleNamespace(total_steps=20, steps_per_epoch=4)
    # cosine, by hand: 10 steps with 1 of warm-up end at step 10 at 0; 20 with 2 are at
    # 0.5·(1 + cos(π·8/18)) = 0.58682 there
    assert moved_schedule_note(config, {"max_steps": 10}, opt, 10) == (
        "resume: the run now lasts 20 steps instead of 10, and its cosine schedule (warm-up 0.1 of the run) with "
        "it: the learning rate of step 11 is 0.000587 where the first run would have used 0"
    )
    assert moved_schedule_note(config, {"max_steps": None, "epochs": 5.0}, opt, 10) is None  # 5 epochs × 4 = 20
    constant = load_train_config(None, base_config | {"max_steps": 20, "lr_scheduler": "constant"})
    assert moved_schedule_note(constant, {"max_steps": 10}, opt, 10) is None  # the same rate either way

    # through a real resume, said once on stderr even without progress lines
    run(base_config, rows, max_steps=2, save_steps=1, lr_scheduler="linear")
    capsys.readouterr()
    run(base_config, rows, max_steps=4, save_steps=1, lr_scheduler="linear", resume=True)
    err = capsys.readouterr().err
    # linear, no warm-up: step 3 of 2 is at 0, of 4 at 1 − 2/4 = 0.5 → 0.005 at lr 0.01
    assert err.count("note: resume: the run now lasts 4 steps instead of 2, and its linear schedule") == 1, err
    assert "the learning rate of step 3 is 0.005 where the first run would have used 0" in err


def test_no_pair_left_says_what_was_dropped(base_config):
    # e.g. a tokenizer that maps every word to nothing: each pair is empty after truncation
    same = [{"prompt": "a b", "chosen": "c d", "rejected": "c d"}] * 3
    with pytest.raises(PsipoInputError, match=r"train_data: no training pairs: 0 pairs from 3 rows \(.*3 with identical "
                       r"chosen and rejected dropped"):
        train(load_train_config(None, base_config), train_pairs=same)


def test_the_progress_line_and_the_card_say_how_many_held_out_pairs_were_cut(base_config, train_file, rows, capsys):
    from pair_oracle import cut_by_limits

    from psipo.lm.fixtures import make_synthetic_preferences
    from psipo.lm.model import load_tokenizer

    held_out = make_synthetic_preferences(8, vocab=64, seed=21)  # the fixture tokenizer's vocabulary
    config = load_train_config(
        None, base_config | {"train_data": str(train_file), "max_steps": 1, "progress": True, "max_length": 9, "max_prompt_length": 5}
    )
    result = train(config, eval_pairs=held_out)
    cut = cut_by_limits(held_out, load_tokenizer(config.model_config), max_prompt_length=5, max_length=9)
    assert cut > 0
    said = f"8 held-out pairs ({cut} cut to max_length / max_prompt_length)"
    assert f", {said}" in capsys.readouterr().err
    card = (result.run_dir / "final" / "README.md").read_text()
    assert "| held-out (step 1) |" in card and f"\n\nThe held-out column is of {said}.\n" in card
