"""psipo.lm.model on a loaded model: the parameter dtype, dropout off (π = π_ref at init),
the length check, LoRA adapters that leave the output unchanged, and the padding id."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from psipo.errors import PsipoInputError
from psipo.lm.config import ModelConfig
from psipo.lm.fixtures import make_tiny_model
from psipo.lm.model import add_lora, check_max_length, disable_dropout, load_causal_lm, pad_id_of

IDS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])


@pytest.mark.parametrize(
    ("dtype", "parameter_dtype"),
    [
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float32),  # float32 master weights; float16 is autocast's compute dtype
    ],
)
def test_load_causal_lm_gives_the_files_weights_in_the_parameter_dtype(model_dir, dtype, parameter_dtype):
    model = load_causal_lm(str(model_dir), ModelConfig(model=str(model_dir), dtype=dtype))
    on_disk = load_file(str(model_dir / "model.safetensors"))
    parameters = dict(model.named_parameters())
    assert parameters.keys() == on_disk.keys()
    for name, tensor in on_disk.items():
        assert parameters[name].dtype == parameter_dtype, name
        assert torch.equal(parameters[name].detach(), tensor.to(parameter_dtype)), name


def assert_train_mode_is_deterministic(model: torch.nn.Module) -> None:
    """With every dropout off, training-mode outputs repeat and equal evaluation mode's."""
    model.train()
    first, second = model(input_ids=IDS).logits, model(input_ids=IDS).logits
    model.eval()
    assert torch.equal(first, second) and torch.equal(first, model(input_ids=IDS).logits)


def test_disable_dropout_zeroes_every_dropout_module_and_config_rate():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=16, n_positions=16, resid_pdrop=0.3,
                        embd_pdrop=0.3, attn_pdrop=0.3, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).train()
    assert not torch.equal(model(input_ids=IDS).logits, model(input_ids=IDS).logits)  # dropout is on
    disable_dropout(model)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 4 and all(m.p == 0.0 for m in dropouts)
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)
    assert_train_mode_is_deterministic(model)


def test_disable_dropout_turns_off_llamas_attention_dropout():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, attention_dropout=0.5, pad_token_id=0, eos_token_id=1, bos_token_id=None,
    ))
    disable_dropout(model)
    assert_train_mode_is_deterministic(model)


def test_check_max_length_names_both_numbers():
    model = make_tiny_model(layers=1, hidden=16, vocab=16, heads=2, max_position_embeddings=64)
    check_max_length(model, 64)
    with pytest.raises(PsipoInputError) as info:
        check_max_length(model, 65)
    assert str(info.value) == "max_length: 65 exceeds the model's max_position_embeddings 64; lower max_length"
    check_max_length(torch.nn.Linear(2, 2), 10**6)  # no config, no known limit: nothing to check


def lora_a_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}


def test_add_lora_leaves_the_output_unchanged_and_trains_only_the_adapters():
    base = make_tiny_model(layers=1, hidden=16, vocab=16, heads=2, seed=0)
    before = base(input_ids=IDS).logits
    rng = torch.get_rng_state()
    model = add_lora(base, ModelConfig(lora_r=4), seed=7)
    assert torch.equal(torch.get_rng_state(), rng)  # the adapters' seed, not the run's RNG
    assert torch.equal(model(input_ids=IDS).logits, before)  # B = 0
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert all(not p.any() for n, p in trainable.items() if "lora_B" in n)

    def adapters(seed: int) -> dict[str, torch.Tensor]:
        fresh = make_tiny_model(layers=1, hidden=16, vocab=16, heads=2, seed=0)
        return lora_a_weights(add_lora(fresh, ModelConfig(lora_r=4), seed=seed))

    same, other = adapters(7), adapters(8)
    assert all(torch.equal(same[n], p) for n, p in lora_a_weights(model).items())
    assert any(not torch.equal(same[n], p) for n, p in other.items())


@pytest.mark.parametrize(
    ("tokenizer", "expected"),
    [
        (SimpleNamespace(pad_token_id=3, eos_token_id=5), 3),
        (SimpleNamespace(pad_token_id=0, eos_token_id=5), 0),  # id 0 is an id, not "missing"
        (SimpleNamespace(pad_token_id=None, eos_token_id=5), 5),
        (SimpleNamespace(pad_token_id=None, eos_token_id=None), 0),
        (object(), 0),
    ],
    ids=["pad", "pad-0", "eos", "neither", "no-attributes"],
)
def test_pad_id_falls_back_to_eos_then_0(tokenizer, expected):
    assert pad_id_of(tokenizer) == expected


def test_a_reward_model_folder_is_not_a_causal_lm(model_dir, tmp_path):
    """transformers would give it a fresh, random lm_head and train against noise."""
    from transformers import AutoModelForSequenceClassification

    path = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).save_pretrained(path)
    for key in ("model", "reference_model"):
        with pytest.raises(PsipoInputError, match=rf"^{key}: .*rm holds a LlamaForSequenceClassification, not a causal LM"):
            load_causal_lm(str(path), ModelConfig(model=str(path)), key=key)


def test_a_reference_with_another_vocabulary_is_refused():
    from psipo.lm.model import check_same_vocabulary

    policy, same, other = make_tiny_model(vocab=64), make_tiny_model(vocab=64), make_tiny_model(vocab=512)
    check_same_vocabulary(policy, same)
    with pytest.raises(PsipoInputError, match=r"^reference_model: its vocabulary has 512 tokens but the policy's \(model\) has 64"):
        check_same_vocabulary(policy, other)


def test_check_same_vocabulary_names_the_callers_key():
    from psipo.lm.model import check_same_vocabulary

    with pytest.raises(PsipoInputError, match=r"^baseline: its vocabulary has 512 tokens but the policy's \(model\) has 64; baseline must"):
        check_same_vocabulary(make_tiny_model(vocab=64), make_tiny_model(vocab=512), key="baseline")


@pytest.mark.parametrize(
    "targets, message",
    [
        (["nonexistent"], r"^lora_target_modules: no module named 'nonexistent' in the model; its linear layers: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj$"),
        (["q_proj", "nope", "mlp.zzz"], r"^lora_target_modules: no module named 'nope', 'mlp.zzz' in the model; its linear layers: down_proj"),
        (["self_attn"], r"^lora_target_modules: \['self_attn'\] names a module LoRA cannot adapt .*; the model's linear layers: down_proj"),
    ],
)
def test_lora_target_modules_the_model_lacks_are_one_line_errors(targets, message):
    with pytest.raises(PsipoInputError, match=message) as caught:
        add_lora(make_tiny_model(layers=1, hidden=16, heads=2, vocab=32), ModelConfig(lora_r=4, lora_target_modules=targets), seed=0)
    assert "\n" not in str(caught.value)


def test_lora_target_modules_match_short_names_and_dotted_tails():
    for targets in (["q_proj", "v_proj"], ["self_attn.q_proj"]):
        model = add_lora(make_tiny_model(layers=1, hidden=16, heads=2, vocab=32), ModelConfig(lora_r=4, lora_target_modules=targets), seed=0)
        adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}
        assert adapted == {t.rsplit(".", 1)[-1] for t in targets}


def test_an_attention_kernel_that_is_not_installed_is_one_line(model_dir, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else find_spec(name, *a))
    config = ModelConfig(model=str(model_dir), attn_implementation="flash_attention_2")
    with pytest.raises(PsipoInputError, match=r"^attn_implementation: flash_attention_2 needs the flash_attn package, which is not installed here; use one of sdpa, eager"):
        load_causal_lm(str(model_dir), config)
    assert load_causal_lm(str(model_dir), ModelConfig(model=str(model_dir), attn_implementation="eager")) is not None


def test_a_model_beside_the_policy_with_another_tokenizer_of_the_same_size_is_refused(model_dir, tmp_path, copy_with_swapped_tokens):
    """The vocabulary-size check passes (64 and 64), yet w0 and w1 would be scored as each other."""
    from transformers import AutoTokenizer

    from psipo.lm.model import check_same_tokenizer

    ours = AutoTokenizer.from_pretrained(model_dir)
    config = ModelConfig(model=str(model_dir))
    check_same_tokenizer(ours, str(model_dir), config)  # the same tokenizer
    swapped = copy_with_swapped_tokens(model_dir, tmp_path / "swapped")
    message = rf"^baseline: its tokenizer \({swapped}\) differs from the policy's: 2 of the policy's 64 tokens have other ids there or are missing; baseline must share the policy's tokenizer$"
    with pytest.raises(PsipoInputError, match=message):
        check_same_tokenizer(ours, str(swapped), config, key="baseline")
    from psipo.lm.fixtures import make_tokenizer

    make_tokenizer(80).save_pretrained(tmp_path / "wider")  # the policy's 64 tokens, then 16 more
    with pytest.raises(PsipoInputError, match=r"differs from the policy's: it has 16 tokens the policy's lacks; reference_model must"):
        check_same_tokenizer(ours, str(tmp_path / "wider"), config)
    # weights without tokenizer files: nothing to compare, not an error
    (swapped / "tokenizer.json").unlink()
    (swapped / "tokenizer_config.json").unlink()
    check_same_tokenizer(ours, str(swapped), config)


def test_a_folder_whose_only_tokenizer_file_is_its_config_has_no_tokenizer(model_dir, tmp_path):
    """tokenizer_config.json alone builds no tokenizer: loading one from such a folder says so
    (not "not a local folder, or not on the Hub"), and beside the policy it is a folder of weights
    alone, with nothing to compare."""
    import shutil

    from transformers import AutoTokenizer

    from psipo.lm.model import check_same_tokenizer, load_tokenizer

    folder = tmp_path / "weights"
    shutil.copytree(model_dir, folder)
    (folder / "tokenizer.json").unlink()
    assert (folder / "tokenizer_config.json").is_file()
    with pytest.raises(PsipoInputError) as info:
        load_tokenizer(ModelConfig(model=str(folder)))
    assert str(info.value) == (
        f"model: {folder} has no tokenizer (none of tokenizer.json, tokenizer.model, vocab.json, vocab.txt, "
        "spiece.model); save the tokenizer into that folder (tokenizer.save_pretrained)"
    )
    check_same_tokenizer(AutoTokenizer.from_pretrained(model_dir), str(folder), ModelConfig(model=str(model_dir)))


# --------------------------------------------------------------------------- mutation audit of psipo.lm.model
# Each test below fails on a mutant of psipo/lm/model.py that the tests above let through.


def test_a_missing_home_folder_is_named_as_a_missing_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # "~/name" holds no second "/": only its "~" says local
    with pytest.raises(PsipoInputError) as missing:
        load_causal_lm("~/absent", ModelConfig(model="~/absent"))
    assert str(missing.value) == "model: cannot load '~/absent': no such local folder"


def write_config(folder, config) -> str:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_check_architecture_reads_only_what_config_json_says(tmp_path):
    from psipo.lm.model import check_architecture

    def check(config, want):
        check_architecture(write_config(tmp_path / "m", config), key="model", name="m", want=want)

    for want in ("causal LM", "reward model", "reward start"):
        check([], want)  # not a JSON object: transformers decides
        check({"model_type": "llama"}, want)  # no architectures named: nothing to refuse
    check({"architectures": ["LlamaForCausalLM", "LlamaForSequenceClassification"]}, "causal LM")  # not only heads
    # transformers' default is two labels: a classifier that names neither id2label nor num_labels has 2 outputs
    with pytest.raises(PsipoInputError, match=r"^model: m has 2 outputs; a reward model needs 1 \(num_labels 1\)$"):
        check({"architectures": ["LlamaForSequenceClassification"]}, "reward model")
    with pytest.raises(PsipoInputError, match=r"^model: m has 3 outputs"):
        check({"architectures": ["LlamaForSequenceClassification"], "num_labels": 3}, "reward start")
    check({"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "LABEL_0"}}, "reward start")
    check({"architectures": ["LlamaForSequenceClassification"], "id2label": {}, "num_labels": 1}, "reward model")  # no labels named: num_labels
    check({"architectures": ["LlamaForCausalLM"]}, "reward start")  # a causal LM gets a fresh scalar head


class RecordingLoader:
    """An auto class whose from_pretrained records its arguments, or raises ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error, self.calls = error, []

    def from_pretrained(self, source, **kwargs):
        self.calls.append((source, kwargs))
        if self.error is not None:
            raise self.error
        return "loaded"


def test_from_pretrained_passes_the_configs_revision_and_remote_code_choice(model_dir):
    from psipo.lm.model import _from_pretrained

    for trust in (False, True):
        loader = RecordingLoader()
        config = ModelConfig(model=str(model_dir), trust_remote_code=trust, revision="v1")
        assert _from_pretrained(loader, str(model_dir), config, key="model", what="a causal LM") == "loaded"
        assert loader.calls == [(str(model_dir), {"revision": "v1", "trust_remote_code": trust})]


def test_from_pretrained_turns_load_errors_into_one_line_and_lets_other_import_errors_through(model_dir):
    from psipo.lm.model import _from_pretrained

    config = ModelConfig(model=str(model_dir))

    def load(error, **kwargs):
        return _from_pretrained(RecordingLoader(error), str(model_dir), config, key="model", what="a causal LM", **kwargs)

    with pytest.raises(PsipoInputError, match=rf"^model: cannot load '{model_dir}' as a causal LM \(not a local folder.*\): bad value$"):
        load(ValueError("bad value\nmore"))
    with pytest.raises(PsipoInputError, match=r"^attn_implementation: 'sdpa' cannot be used here: the attention kernel is broken \(available: sdpa, eager\)$"):
        load(ImportError("the attention kernel is broken"), attn_implementation="sdpa")
    with pytest.raises(ImportError, match="^no module named tokenizers$"):  # not about attention: not psipo's to explain
        load(ImportError("no module named tokenizers"), attn_implementation="sdpa")


def test_a_separate_tokenizer_is_loaded_and_named_by_its_own_key(model_dir, tmp_path):
    from psipo.lm.model import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(model=str(tmp_path / "weights-elsewhere"), tokenizer=str(model_dir)))
    assert tokenizer.convert_tokens_to_ids("w0") == 6
    missing = tmp_path / "no-tokenizer"
    with pytest.raises(PsipoInputError, match=rf"^tokenizer: cannot load '{missing}': no such local folder$"):
        load_tokenizer(ModelConfig(model=str(model_dir), tokenizer=str(missing)))


class Wrapper(torch.nn.Module):
    """Like DDP: the model inside as ``module``, nothing of its own."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def test_vocabulary_size_looks_through_wrappers_and_falls_back_to_the_config():
    from transformers import LlamaModel

    from psipo.lm.model import check_same_vocabulary, vocabulary_size

    policy = make_tiny_model(layers=1, hidden=16, heads=2, vocab=64)
    assert vocabulary_size(Wrapper(policy)) == 64
    with pytest.raises(PsipoInputError, match="its vocabulary has 64 tokens but the policy's \\(model\\) has 32"):
        check_same_vocabulary(make_tiny_model(layers=1, hidden=16, heads=2, vocab=32), Wrapper(policy))
    headless = LlamaModel(policy.config)  # no output embedding: the config's vocab_size
    assert headless.get_output_embeddings() is None and vocabulary_size(headless) == 64
    assert vocabulary_size(torch.nn.Linear(2, 2)) is None
    check_same_vocabulary(policy, torch.nn.Linear(2, 2))  # an unknown size is not a different one


def test_check_same_tokenizer_without_a_tokenizer_to_compare_or_with_a_damaged_one(model_dir, tmp_path):
    import shutil

    from psipo.lm.model import check_same_tokenizer

    config = ModelConfig(model=str(model_dir))
    check_same_tokenizer(None, str(model_dir), config)  # no policy tokenizer: nothing to compare
    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    (damaged / "tokenizer.json").write_text("not json")
    ours = load_tokenizer_of(model_dir)
    with pytest.raises(PsipoInputError, match=r"^reference_model: cannot load .*damaged.* as a tokenizer"):
        check_same_tokenizer(ours, str(damaged), config)


def load_tokenizer_of(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def adapted_layers(model: torch.nn.Module) -> set[str]:
    return {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}


def test_add_lora_follows_the_config_and_peft_seeded_by_hand():
    from peft import LoraConfig, get_peft_model

    config = ModelConfig(lora_r=4, lora_alpha=12, lora_dropout=0.25)
    model = add_lora(make_tiny_model(layers=1, hidden=16, heads=2, vocab=32), config, seed=5)
    # no targets: every linear layer but the output head ("all-linear")
    assert adapted_layers(model) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == 12 / 4  # LoRA's alpha / r
    assert q_proj.lora_dropout["default"].p == 0.25
    torch.manual_seed(5)
    by_hand = get_peft_model(
        make_tiny_model(layers=1, hidden=16, heads=2, vocab=32),
        LoraConfig(r=4, lora_alpha=12, lora_dropout=0.25, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    assert lora_a_weights(model).keys() == lora_a_weights(by_hand).keys()
    assert all(torch.equal(w, lora_a_weights(by_hand)[n]) for n, w in lora_a_weights(model).items())


def test_lora_targets_are_whole_names_or_dotted_tails():
    model = add_lora(make_tiny_model(layers=1, hidden=16, heads=2, vocab=32), ModelConfig(lora_r=4, lora_target_modules=["lm_head"]), seed=0)
    assert adapted_layers(model) == {"lm_head"}  # a top-level module: its whole name
    with pytest.raises(PsipoInputError, match=r"^lora_target_modules: no module named 'proj' in the model; its linear layers: "):
        add_lora(make_tiny_model(layers=1, hidden=16, heads=2, vocab=32), ModelConfig(lora_r=4, lora_target_modules=["proj"]), seed=0)


def test_a_seq_cls_reward_model_trains_its_scalar_head_in_full(model_dir):
    from transformers import AutoModelForSequenceClassification

    reward = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    model = add_lora(reward, ModelConfig(lora_r=4), seed=0, task_type="SEQ_CLS")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("score.modules_to_save.default.weight") for n in trainable), sorted(trainable)


def test_prepare_policy_turns_dropout_off_only_when_asked_and_wraps_once():
    from transformers import GPT2Config, GPT2LMHeadModel

    from psipo.lm.model import prepare_policy

    def gpt2():
        config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=16, n_positions=16, resid_pdrop=0.3, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(config)

    rates = lambda model: {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}  # noqa: E731
    assert rates(prepare_policy(gpt2(), ModelConfig(disable_dropout=True), seed=0)) == {0.0}
    assert rates(prepare_policy(gpt2(), ModelConfig(disable_dropout=False), seed=0)) == {0.1, 0.3}
    adapted = add_lora(make_tiny_model(layers=1, hidden=16, heads=2, vocab=32), ModelConfig(lora_r=4), seed=0)
    assert prepare_policy(adapted, ModelConfig(lora_r=4), seed=0) is adapted  # resumed adapters are not wrapped again


def test_a_companion_with_the_policys_tokenizer_but_other_weights_vocabulary_is_refused(model_dir, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM

    from psipo.lm.fixtures import make_tiny_model_dir
    from psipo.lm.model import load_companion_lm

    wider = make_tiny_model_dir(tmp_path / "wider", layers=1, hidden=16, heads=2, vocab=80)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, wider / name)  # the policy's tokenizer: only the weights tell
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    config = ModelConfig(model=str(model_dir))
    with pytest.raises(PsipoInputError, match=r"^baseline: its vocabulary has 80 tokens but the policy's \(model\) has 64"):
        load_companion_lm(str(wider), config, tokenizer=load_tokenizer_of(model_dir), policy=policy, key="baseline")
    assert vocabulary_of(load_companion_lm(str(model_dir), config, tokenizer=load_tokenizer_of(model_dir), policy=policy, key="baseline")) == 64


def vocabulary_of(model):
    return model.get_output_embeddings().weight.shape[0]


def test_the_linear_layer_list_is_cut_only_beyond_its_length():
    from psipo.lm.model import _linear_names

    model = make_tiny_model(layers=1, hidden=16, heads=2, vocab=32)  # 8 distinct linear names
    every = "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"
    assert _linear_names(model, most=8) == every
    assert _linear_names(model, most=7) == "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, … (8 in all)"
    assert _linear_names(torch.nn.ReLU()) == "none"
