"""Row formats, validation errors, tokenisation, truncation, caching and batching."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
from psipo.lm.data import (
    CACHE_VERSION,
    COUNTS,
    ParsedRow,
    TokenizedPair,
    batch_order,
    collate,
    load_pairs,
    parse_row,
    tokenize_rows,
    tokenizer_fingerprint,
)
from psipo.lm.fixtures import (
    SPECIAL_TOKENS,
    make_synthetic_preferences,
    make_tokenizer,
    write_jsonl,
)

EOS = SPECIAL_TOKENS.index("<eos>")


def word(i: int) -> int:
    """Id of fixture word w<i>."""
    return len(SPECIAL_TOKENS) + i


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(40)


def tokenize(tokenizer, rows, **kwargs):
    options = {"max_length": 32, "max_prompt_length": 16, "append_eos": True} | kwargs
    return tokenize_rows([parse_row(r, f"row {i}") for i, r in enumerate(rows)], tokenizer, **options)


def test_standard_conversational_and_implicit_rows(tokenizer):
    standard = {"prompt": "w1 w2", "chosen": "w3", "rejected": "w4 w5", "score": 7}
    implicit = {"chosen": "w1 w2 w3", "rejected": "w1 w2 w4 w5"}
    data = tokenize(tokenizer, [standard, implicit])
    expected = TokenizedPair([word(1), word(2)], [word(3), EOS], [word(4), word(5), EOS])
    assert data.pairs == [expected, expected]

    conversational = {
        "prompt": [{"role": "user", "content": "w1"}],
        "chosen": [{"role": "assistant", "content": "w3"}],
        "rejected": [{"role": "assistant", "content": "w4"}],
    }
    user, assistant = SPECIAL_TOKENS.index("<user>"), SPECIAL_TOKENS.index("<assistant>")
    # The fixture template renders "<user> w1 <assistant> w3 <eos>": EOS is not doubled.
    pair = tokenize(tokenizer, [conversational]).pairs[0]
    assert pair == TokenizedPair([user, word(1), assistant], [word(3), EOS], [word(4), EOS])
    implicit_chat = {"chosen": conversational["prompt"] + conversational["chosen"],
                     "rejected": conversational["prompt"] + conversational["rejected"]}
    assert tokenize(tokenizer, [implicit_chat]).pairs[0] == pair


def test_truncation_keeps_prompt_end_and_completion_start(tokenizer):
    row = {"prompt": " ".join(f"w{i}" for i in range(10)), "chosen": "w20 w21 w22 w23", "rejected": "w30"}
    data = tokenize(tokenizer, [row], max_length=6, max_prompt_length=3)
    assert data.pairs[0] == TokenizedPair([word(7), word(8), word(9)], [word(20), word(21), word(22)], [word(30), EOS])
    assert data.n_truncated == 1


def test_empty_completion_is_dropped_and_counted(tokenizer):
    rows = [{"prompt": "w1", "chosen": "", "rejected": "w2"}, {"prompt": "w1", "chosen": "w3", "rejected": "w2"}]
    data = tokenize(tokenizer, rows, append_eos=False)
    assert len(data.pairs) == 1 and data.n_empty == 1
    assert tokenize(tokenizer, rows).n_empty == 0  # with EOS the completion is not empty


def test_a_plain_prompt_gets_the_special_tokens_and_evaluation_tokenises_prompts_as_training():
    # A tokenizer that adds BOS (here <system>) to what it encodes with special tokens: a plain
    # prompt starts with it, a chat prompt (whose template writes its own) and the completions
    # do not. psipo evaluate's and psipo online's prompts, also cut to their end, must be the
    # ids training gives the same prompts, or the policy is sampled after another context.
    from tokenizers.processors import TemplateProcessing

    from psipo.lm.evaluate import tokenize_prompts

    bos, user, assistant = (SPECIAL_TOKENS.index(t) for t in ("<system>", "<user>", "<assistant>"))
    tokenizer = make_tokenizer(40)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single="<system> $A", special_tokens=[("<system>", bos)])
    chat = [{"role": "user", "content": "w1"}]
    rows = [
        {"prompt": "w1 w2 w3", "chosen": "w4", "rejected": "w5"},
        {"prompt": chat, "chosen": [{"role": "assistant", "content": "w4"}], "rejected": [{"role": "assistant", "content": "w5"}]},
    ]
    pairs = tokenize(tokenizer, rows).pairs
    assert pairs[0] == TokenizedPair([bos, word(1), word(2), word(3)], [word(4), EOS], [word(5), EOS])
    assert pairs[1].prompt_ids == [user, word(1), assistant]
    for max_length in (16, 2):
        cut = tokenize(tokenizer, rows, max_prompt_length=max_length).pairs
        ids, n_cut = tokenize_prompts(tokenizer, [rows[0]["prompt"], chat], ["a", "b"], max_length)
        assert ids == [pair.prompt_ids for pair in cut] and n_cut == (2 if max_length == 2 else 0)
    assert ids[0] == [word(2), word(3)]  # the end of the prompt


def test_without_a_prompt_a_one_token_completion_is_empty(tokenizer):
    # With no prompt token nothing predicts the first completion token: a one-token completion
    # would be scored as log-prob 0 (a certain response) in every loss.
    rows = [{"chosen": "w3", "rejected": "w4"}, {"chosen": "w3 w5", "rejected": "w4 w6"}]  # implicit prompt: none shared
    data = tokenize(tokenizer, rows, append_eos=False)
    assert data.n_empty == 1 and data.pairs == [TokenizedPair([], [word(3), word(5)], [word(4), word(6)])]
    assert tokenize(tokenizer, rows).n_empty == 0  # EOS gives each a scored token


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"prompt": "w1", "rejected": "w2"}', "'chosen': missing"),
        ('{"prompt": "w1", "chosen": 3, "rejected": "w2"}', "'chosen': expected a string"),
        ('{"prompt": 5, "chosen": "w1", "rejected": "w2"}', "'prompt': expected a string"),
        ('{"chosen": [{"role": "assistant"}], "rejected": []}', "'chosen[0].content'"),
        ('["w1", "w2"]', "expected an object"),
        ('{"prompt": "w1", "chosen": "w2", "rejected": "w3"', "invalid JSON"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, tokenizer, line, field):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n' + line + "\n")
    with pytest.raises(PsipoInputError, match=rf"pairs.jsonl:2: .*{__import__('re').escape(field)}"):
        load(path, tokenizer, tmp_path)


def load(path, tokenizer, tmp_path, **kwargs):
    options = {
        "key": "train_data", "split": "train", "dataset_config": None, "max_length": 32,
        "max_prompt_length": 16, "append_eos": True, "skip_invalid": False, "cache_dir": tmp_path / "cache",
    } | kwargs
    return load_pairs(str(path), tokenizer, **options)


def test_skip_invalid_counts_and_cache_is_keyed_by_settings(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "w1", "chosen": "w2 w3", "rejected": "w4"}
    path.write_text("\n".join([json.dumps(good), '{"chosen": "w1"}', json.dumps(good)]) + "\n")
    data = load(path, tokenizer, tmp_path, skip_invalid=True)
    assert (len(data.pairs), data.n_rows, data.n_invalid) == (2, 3, 1)
    assert load(path, tokenizer, tmp_path, skip_invalid=True).pairs == data.pairs  # from the cache
    assert len(list((tmp_path / "cache" / "tokenized").iterdir())) == 1
    shorter = load(path, tokenizer, tmp_path, skip_invalid=True, max_length=2, max_prompt_length=1)
    assert shorter.pairs[0].chosen_ids == [word(2)]  # a new cache entry, not the stale one
    path.write_text(json.dumps(good | {"chosen": "w5"}) + "\n")  # new content → new entry
    assert load(path, tokenizer, tmp_path).pairs[0].chosen_ids == [word(5), EOS]


def test_json_and_parquet_files(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "w1", "chosen": "w2", "rejected": "w3"}] * 2
    (tmp_path / "p.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    for name in ("p.json", "p.parquet"):
        assert load(tmp_path / name, tokenizer, tmp_path).pairs == [TokenizedPair([word(1)], [word(2), EOS], [word(3), EOS])] * 2
    with pytest.raises(PsipoInputError, match="train_data: file not found"):
        load(tmp_path / "missing.jsonl", tokenizer, tmp_path)


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 50), min_size=1, max_size=60),
    batch_size=st.integers(1, 9),
    seed=st.integers(0, 3),
    group=st.booleans(),
)
def test_batch_order_is_a_seeded_partition(lengths, batch_size, seed, group):
    batches = batch_order(lengths, batch_size, seed=seed, epoch=1, group_by_length=group)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert batches == batch_order(lengths, batch_size, seed=seed, epoch=1, group_by_length=group)


def test_grouping_by_length_cuts_padding():
    lengths = torch.randint(1, 200, (512,), generator=torch.Generator().manual_seed(0)).tolist()

    def padding(group):
        batches = batch_order(lengths, 8, seed=0, epoch=0, group_by_length=group)
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(True) < 0.1 * padding(False)


def test_collate_masks_prompt_and_padding():
    pairs = [TokenizedPair([7, 8], [9], [10, 11]), TokenizedPair([7], [12, 13, 14], [15])]
    batch = collate(pairs, pad_id=99)
    assert batch["input_ids"].tolist() == [
        [7, 8, 9, 99], [7, 12, 13, 14], [7, 8, 10, 11], [7, 15, 99, 99],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["loss_mask"].int().tolist() == [[0, 0, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1], [0, 1, 0, 0]]


def test_dataset_name_goes_through_datasets_load_dataset(tmp_path, tokenizer, monkeypatch):
    # A local folder is loaded by datasets.load_dataset like a Hub name (offline); split by file name.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"prompt": "w1", "chosen": "w2", "rejected": "w3"}) + "\n")
    (folder / "test.jsonl").write_text(json.dumps({"prompt": "w4", "chosen": "w5", "rejected": "w6"}) + "\n")
    test = load(folder, tokenizer, tmp_path, split="test")
    assert test.pairs == [TokenizedPair([word(4)], [word(5), EOS], [word(6), EOS])]
    with pytest.raises(PsipoInputError, match=r"train_data: cannot load .* \(split 'nosplit'\)"):
        load(folder, tokenizer, tmp_path, split="nosplit")


def test_a_save_to_disk_folder_is_loaded_with_its_splits(tmp_path, tokenizer):
    """``Dataset.save_to_disk`` folders: datasets.load_dataset refuses a single dataset's
    ("use load_from_disk") and copies a DatasetDict's into its cache; both load in place."""
    import datasets

    def saved(rows, folder):
        return datasets.Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows]), folder

    train, single = saved([("w1", "w2", "w3")], tmp_path / "single")
    train.save_to_disk(str(single))
    assert load(single, tokenizer, tmp_path).pairs == [TokenizedPair([word(1)], [word(2), EOS], [word(3), EOS])]
    saved([("w1", "w4", "w3")], single)[0].save_to_disk(str(single))  # new content: a new cache entry
    assert load(single, tokenizer, tmp_path).pairs[0].chosen_ids == [word(4), EOS]

    test, splits = saved([("w4", "w5", "w6")], tmp_path / "splits")
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(splits))
    assert load(splits, tokenizer, tmp_path, split="test").pairs == [TokenizedPair([word(4)], [word(5), EOS], [word(6), EOS])]
    assert one_line_error(lambda: load(splits, tokenizer, tmp_path, split="validation")) == (
        f"train_data: {splits} has no split 'validation' (it has: test, train)"
    )
    # datasets' split syntax, as load_dataset reads it
    both = load(splits, tokenizer, tmp_path, split="test+train[:1]")
    assert [p.prompt_ids for p in both.pairs] == [[word(4)], [word(1)]]
    assert one_line_error(lambda: load(splits, tokenizer, tmp_path, split="train[x]")).startswith(
        f"train_data: {splits} has no split 'train[x]' (it has: test, train)"
    )


def test_a_slice_of_a_file_or_a_saved_dataset_is_taken_not_ignored(tmp_path, tokenizer):
    """A source with one split (a file, a saved ``Dataset``) took ``train[:2]`` as the whole
    source: the slice is now taken, and the cache tells slices apart; a plain split name still
    stands for the whole source."""
    import datasets

    rows = [{"prompt": f"w{i}", "chosen": "w1", "rejected": "w2"} for i in range(3, 8)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))

    def prompts(source, split):
        return [p.prompt_ids for p in load(source, tokenizer, tmp_path, split=split).pairs]

    for source in (path, folder):
        assert prompts(source, "train[:2]") == [[word(3)], [word(4)]]
        assert prompts(source, "test[60%:]") == [[word(6)], [word(7)]]
        assert prompts(source, "train[:1]+train[-1:]") == [[word(3)], [word(7)]]
        assert len(prompts(source, "test")) == len(prompts(source, "train")) == 5
        assert one_line_error(lambda: load(source, tokenizer, tmp_path, split="train[:1]+test[:1]")) == (  # noqa: B023
            f"train_data: {source} holds one split of 5 rows; cannot take 'train[:1]+test[:1]' from it "
            "(it names 2 splits); use a slice of one split such as 'train[:100]' or 'train[10%:]'"
        )


FOLDER_WITHOUT_DATA = (
    "is a folder that holds no dataset: expected a .jsonl/.json/.parquet file, a datasets save_to_disk folder, "
    "a folder of such files (one per split) or a Hugging Face dataset name"
)


@pytest.mark.parametrize("folder", [".", "empty", "notes"])
def test_a_folder_that_holds_no_dataset_is_named_in_psipos_words(tmp_path, tokenizer, monkeypatch, capfd, folder):
    # datasets' own words: 'dataset_name should be specified but got None' for ".", "No
    # (supported) data files found", and huggingface_hub's warning of a README.md without metadata.
    (tmp_path / "README.md").write_text("# a project, not a dataset\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("notes\n")
    (tmp_path / "notes" / "run.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    assert one_line_error(lambda: load(folder, tokenizer, tmp_path)) == f"train_data: {folder} {FOLDER_WITHOUT_DATA}"
    assert capfd.readouterr().err == ""


MODEL_FILES = "chat_template.jinja, config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json"


@pytest.mark.parametrize(
    ("folder", "found"),
    [
        ("model", MODEL_FILES),
        (".", "config.json, generation_config.json, pairs.jsonl, tokenizer.json, tokenizer_config.json"),
    ],
    ids=["a model's folder", "data beside a model's json files"],
)
def test_a_folder_whose_files_are_not_one_dataset_says_what_it_found(tmp_path, tokenizer, monkeypatch, capfd, folder, found):
    # datasets said only "An error occurred while generating the dataset" (a CastError below it).
    from psipo.lm.fixtures import make_tiny_model_dir

    make_tiny_model_dir(tmp_path / "model", layers=1, hidden=16, heads=2, vocab=40)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tmp_path / "model" / name).read_bytes())
    write_jsonl(make_synthetic_preferences(4, vocab=40, seed=1), tmp_path / "pairs.jsonl")
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    holds_no_dataset, expected = FOLDER_WITHOUT_DATA.split(": ", 1)
    assert one_line_error(lambda: load(folder, tokenizer, tmp_path)) == (
        f"train_data: {folder} {holds_no_dataset}: found {found} (files whose columns differ, not one dataset); {expected}"
    )
    assert capfd.readouterr().err == ""


def test_a_slice_that_selects_no_rows_says_so_naming_the_split(tmp_path, tokenizer):
    """``train[100%:]`` or ``train[5:5]`` said 'no valid preference rows', as if the rows were bad."""
    import datasets

    rows = [{"prompt": f"w{i}", "chosen": "w1", "rejected": "w2"} for i in range(3, 8)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    single, splits = tmp_path / "single", tmp_path / "splits"
    datasets.Dataset.from_list(rows).save_to_disk(str(single))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(splits))
    for source in (path, single, splits):
        for split in ("train[100%:]", "train[5:5]"):
            assert one_line_error(lambda: load(source, tokenizer, tmp_path, split=split)) == (  # noqa: B023
                f"train_data: the split {split!r} selects no rows of {source}"
            )


# --------------------------------------------------------------------------- broken data
# One line naming file:line (or file: row) and field; what skip_invalid skips; pairs that
# cannot teach anything (identical chosen and rejected) dropped and counted.

GOOD_LINE = json.dumps({"prompt": "w1", "chosen": "w2 w3", "rejected": "w4"})


def one_line_error(call) -> str:
    with pytest.raises(PsipoInputError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b'{"prompt": "w1", "chosen": "caf\xe9", "rejected": "w4"}', "pairs.jsonl:2: not valid UTF-8 (byte 0xe9 at column 32)"),
        (b'{"prompt": "w1", "chosen": "w2", "rejected": "w3"', "pairs.jsonl:2: invalid JSON"),
        (b"[" * 100_000, "pairs.jsonl:2: JSON nested too deeply"),
    ],
    ids=["latin1", "truncated", "deep"],
)
def test_unreadable_jsonl_lines_are_errors_or_skipped(tmp_path, tokenizer, bad, message):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(GOOD_LINE.encode() + b"\n" + bad + b"\n" + GOOD_LINE.encode() + b"\n")
    assert message in one_line_error(lambda: load(path, tokenizer, tmp_path))
    data = load(path, tokenizer, tmp_path, skip_invalid=True)
    assert (len(data.pairs), data.n_rows, data.n_invalid) == (2, 3, 1)


def test_non_utf8_json_file_is_an_error_even_with_skip_invalid(tmp_path, tokenizer):
    path = tmp_path / "pairs.json"
    path.write_bytes(b'[{"prompt": "w1", "chosen": "w2", "rejected": "w3"},\n {"prompt": "\xff"}]')
    message = one_line_error(lambda: load(path, tokenizer, tmp_path, skip_invalid=True))
    assert message.startswith(f"{path}:2: not valid UTF-8")


def test_corrupt_parquet_names_the_file(tmp_path, tokenizer):
    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    assert one_line_error(lambda: load(path, tokenizer, tmp_path)).startswith(f"{path}: not a readable Parquet file")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": None, "chosen": "w1", "rejected": "w2"},
         "row 7: field 'prompt': null (leave the field out for an implicit prompt; in Parquet or a dataset, the column)"),
        ({"prompt": "w1", "chosen": None, "rejected": "w2"}, "row 7: field 'chosen': null"),
        ({"prompt": "w1", "chosen": "w2", "rejected": None}, "row 7: field 'rejected': null"),
        ({"prompt": "w1", "chosen": "w2"}, "row 7: field 'rejected': missing (the row has 'prompt', 'chosen')"),
    ],
)
def test_null_fields_are_errors_not_implicit_prompts(row, message):
    assert one_line_error(lambda: parse_row(row, "row 7")) == message


def test_null_prompt_names_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    path.write_text(GOOD_LINE + "\n" + json.dumps({"prompt": None, "chosen": "w1 w2", "rejected": "w1 w3"}) + "\n")
    assert one_line_error(lambda: load(path, tokenizer, tmp_path)).startswith(f"{path}:2: field 'prompt': null")


def test_identical_pairs_are_dropped_and_counted(tokenizer):
    rows = [
        {"prompt": "w1", "chosen": "w2 w3", "rejected": "w2 w3"},  # identical text
        {"chosen": "w1 w2", "rejected": "w1 w2"},  # identical, implicit prompt
        {"chosen": [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}],
         "rejected": [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}]},
        {"prompt": "w1", "chosen": "w2 w3 w4", "rejected": "w2 w3 w5"},  # identical once truncated
        {"prompt": "w1", "chosen": "w2", "rejected": "w3"},
    ]
    parsed = [parse_row(row, f"row {i}") for i, row in enumerate(rows)]
    data = tokenize_rows(parsed, tokenizer, max_length=3, max_prompt_length=1, append_eos=True)
    assert data.pairs == [TokenizedPair([word(1)], [word(2), EOS], [word(3), EOS])]
    assert (data.n_rows, data.n_identical, data.n_identical_when_cut) == (5, 3, 1)
    # Told apart: a larger max_length keeps the pairs that became identical only when cut.
    assert "3 with identical chosen and rejected dropped, 1 identical only once cut to max_length dropped" in data.summary()


def test_identical_count_survives_the_cache_and_no_pair_left_is_an_error(tmp_path, tokenizer):
    assert CACHE_VERSION >= 2  # entries written before pairs were checked for identity are stale
    path = tmp_path / "pairs.jsonl"
    same = json.dumps({"prompt": "w1", "chosen": "w2", "rejected": "w2"})
    path.write_text(f"{GOOD_LINE}\n{same}\n")
    first = load(path, tokenizer, tmp_path)
    cached = load(path, tokenizer, tmp_path)
    assert len(list((tmp_path / "cache" / "tokenized").iterdir())) == 1
    assert (len(cached.pairs), cached.n_identical) == (len(first.pairs), first.n_identical) == (1, 1)
    path.write_text(f"{same}\n")
    message = one_line_error(lambda: load(path, tokenizer, tmp_path))
    assert message.startswith(f"train_data: no pair of {path} is left to train on: 0 pairs from 1 rows")


def test_missing_quickstart_data_says_how_to_make_it(tmp_path, tokenizer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = one_line_error(lambda: load(".psipo-quickstart/train.jsonl", tokenizer, tmp_path))
    assert message == (
        "train_data: file not found: .psipo-quickstart/train.jsonl (its folder .psipo-quickstart does not "
        "exist either); make the quickstart's model and data with: "
        "python -m psipo.lm.fixtures quickstart .psipo-quickstart"
    )
    (tmp_path / "data").mkdir()
    assert one_line_error(lambda: load("data/pairs.jsonl", tokenizer, tmp_path)) == (
        "train_data: file not found: data/pairs.jsonl"
    )
    (tmp_path / "data" / "pairs.jsonl").mkdir()
    assert one_line_error(lambda: load("data/pairs.jsonl", tokenizer, tmp_path)) == (
        "train_data: data/pairs.jsonl is a folder, not a data file"
    )


MESSAGE = [{"role": "user", "content": "w1"}]
ANSWER = [{"role": "assistant", "content": "w2"}]


@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected"])
def test_an_empty_message_list_names_its_field(field):
    """Chat templates refuse [] with a traceback; an empty list is an error naming the field."""
    row = {"prompt": MESSAGE, "chosen": ANSWER, "rejected": [{"role": "assistant", "content": "w3"}]} | {field: []}
    assert one_line_error(lambda: parse_row(row, "f.jsonl:1")) == f"f.jsonl:1: field '{field}': empty message list"


def test_an_implicit_conversation_with_no_shared_turn_is_refused(tokenizer):
    """Two conversations with different user turns answer no common prompt: they used to become
    a pair with an empty prompt whose completions (the user turns too) were trained on."""
    row = {"chosen": MESSAGE + ANSWER, "rejected": [{"role": "user", "content": "w3"}] + ANSWER}
    assert one_line_error(lambda: parse_row(row, "d.jsonl:4")) == (
        "d.jsonl:4: fields 'chosen' and 'rejected' share no opening turn, so they answer no common prompt "
        "(a pair compares two answers to one prompt); give 'prompt' or fix the conversations"
    )
    assistant = SPECIAL_TOKENS.index("<assistant>")
    unprompted = {"chosen": ANSWER, "rejected": [{"role": "assistant", "content": "w3"}]}
    pair = tokenize(tokenizer, [unprompted]).pairs[0]  # answers to no prompt at all stay a pair
    assert pair.prompt_ids == [] and pair.chosen_ids[0] == pair.rejected_ids[0] == assistant


def _truncate(path):
    path.write_bytes(path.read_bytes()[:20])


def _wrong_tensors(path):
    from safetensors.torch import save_file

    save_file({"something": torch.zeros(3)}, str(path))


def _lengths_that_do_not_add_up(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    tensors["chosen_ids_lengths"] = tensors["chosen_ids_lengths"] + 1
    save_file(tensors, str(path), metadata={k: "3" if k == "n_rows" else "0" for k in COUNTS})


def _ids_past_the_vocabulary(path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["prompt_ids"] = tensors["prompt_ids"] + 10_000
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("damage", [_truncate, _wrong_tensors, _lengths_that_do_not_add_up, _ids_past_the_vocabulary])
def test_a_damaged_cache_entry_is_discarded_with_a_warning_and_rebuilt(tmp_path, tokenizer, capsys, damage):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"w{i}", "chosen": f"w{i + 1} w2", "rejected": "w4"} for i in range(1, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fresh = load(path, tokenizer, tmp_path)
    (entry,) = (tmp_path / "cache" / "tokenized").iterdir()
    damage(entry)
    capsys.readouterr()
    again = load(path, tokenizer, tmp_path)
    assert again == fresh
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and warning.startswith(f"psipo: warning: discarding the tokenized cache file {entry} (")
    assert warning.rstrip().endswith("rebuilding it")
    # the entry was rewritten: the next load reads it without a word
    assert load(path, tokenizer, tmp_path) == fresh and capsys.readouterr().err == ""
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # no temporaries left


REFUSING_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<assistant> {% endif %}"
)


def test_a_chat_template_that_refuses_the_messages_is_one_line_naming_the_row():
    """Gemma's and Mistral's templates raise on a system turn or roles that do not alternate:
    one line naming the row, as for any bad row, not jinja's traceback."""
    from psipo.lm.evaluate import tokenize_prompts

    refusing = make_tokenizer(40)
    refusing.chat_template = REFUSING_TEMPLATE
    prompt = [{"role": "system", "content": "w9"}, {"role": "user", "content": "w1"}]
    row = parse_row({"prompt": prompt, "chosen": ANSWER, "rejected": [{"role": "assistant", "content": "w3"}]}, "f.jsonl:3")
    expected = "f.jsonl:3: the tokenizer's chat template refused the messages: System role not supported"
    call = lambda: tokenize_rows([row], refusing, max_length=32, max_prompt_length=16, append_eos=True, locations=["f.jsonl:3"])  # noqa: E731
    assert one_line_error(call) == expected
    assert one_line_error(lambda: tokenize_prompts(refusing, [prompt], ["f.jsonl:3"], 16)) == expected
    plain = make_tokenizer(40, chat_template=False)
    assert one_line_error(lambda: tokenize_prompts(plain, [prompt], ["f.jsonl:3"], 16)) == (
        "f.jsonl:3: conversational rows need a tokenizer with a chat template"
    )


def test_messages_that_differ_only_in_null_keys_are_the_same_turn(tmp_path, tokenizer):
    """Parquet and datasets give every message of a column the keys of all (``"name": null``,
    ``"tool_calls": null``): the user turn both completions share is still the implicit prompt,
    not completion tokens."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {"chosen": MESSAGE + ANSWER, "rejected": MESSAGE + [{"role": "assistant", "content": "w3", "name": "x"}]}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "p.parquet")
    user, assistant = SPECIAL_TOKENS.index("<user>"), SPECIAL_TOKENS.index("<assistant>")
    pair = load(tmp_path / "p.parquet", tokenizer, tmp_path).pairs[0]
    assert pair == TokenizedPair([user, word(1), assistant], [word(2), EOS], [word(3), EOS])


def test_completions_that_repeat_the_prompt_have_it_removed_and_counted(tokenizer):
    """Files made from full dialogues (Anthropic HH style) often keep the prompt at the start of
    chosen and rejected: trained as they are, the prompt's tokens would count as completion."""
    expected = TokenizedPair([word(1), word(5)], [word(2), EOS], [word(3), EOS])
    rows = [{"prompt": "w1 w5", "chosen": "w1 w5 w2", "rejected": "w1 w5 w3"}] * 2
    data = tokenize(tokenizer, rows)
    assert data.pairs == [expected] * 2 and data.n_prompt_repeated == 2
    assert "2 with the prompt repeated in chosen and rejected (removed from them)" in data.summary()
    # Only when every row repeats its prompt: a completion may echo a short prompt ("Hi" → "Hi there").
    echo = {"prompt": "w1", "chosen": "w1 w2", "rejected": "w1 w3"}
    data = tokenize(tokenizer, [echo, {"prompt": "w1", "chosen": "w2", "rejected": "w3"}])
    assert data.pairs[0] == TokenizedPair([word(1)], [word(1), word(2), EOS], [word(1), word(3), EOS])
    assert data.n_prompt_repeated == 0 and "repeated" not in data.summary()
    # And only when both completions of each row repeat it: a rejected one that does not keeps all its words.
    one_sided = {"prompt": "w1 w5", "chosen": "w1 w5 w2", "rejected": "w2 w3 w4"}
    data = tokenize(tokenizer, [rows[0], one_sided])
    assert data.pairs[1] == TokenizedPair([word(1), word(5)], [word(1), word(5), word(2), EOS], [word(2), word(3), word(4), EOS])
    assert data.n_prompt_repeated == 0

    # Messages: the prompt's turns at the start of both completions (per row: a completion
    # cannot start with the user's turn); and a string prompt next to full conversations
    # (HuggingFaceH4/ultrafeedback_binarized), which is their shared user turn.
    user, assistant = SPECIAL_TOKENS.index("<user>"), SPECIAL_TOKENS.index("<assistant>")
    chat = TokenizedPair([user, word(1), assistant], [word(2), EOS], [word(3), EOS])
    other = [{"role": "assistant", "content": "w3"}]
    repeated = {"prompt": MESSAGE, "chosen": MESSAGE + ANSWER, "rejected": MESSAGE + other}
    h4 = {"prompt": "w1", "chosen": MESSAGE + ANSWER, "rejected": MESSAGE + other}
    data = tokenize(tokenizer, [repeated, h4])
    assert data.pairs == [chat, chat] and data.n_prompt_repeated == 2
    assert one_line_error(lambda: parse_row(h4 | {"prompt": "w7"}, "f.jsonl:2")) == (
        "f.jsonl:2: field 'prompt': a string, but 'chosen' and 'rejected' are messages that do not share it "
        "as a user turn: give it as a list of messages, or leave it out for an implicit prompt"
    )


def test_prompts_cut_to_max_prompt_length_are_counted(tokenizer):
    """psipo online and evaluate keep a long prompt's end, as psipo train does, and say how many
    they cut (a chat template's header or a system turn is what goes first)."""
    from psipo.lm.evaluate import tokenize_prompts
    from psipo.lm.online import _prompt_data

    prompts = ["w1 w2 w3", "w4", [{"role": "user", "content": "w5"}]]
    ids, n_truncated = tokenize_prompts(tokenizer, prompts, ["a", "b", "c"], 2)
    assert ids == [[word(2), word(3)], [word(4)], [word(5), SPECIAL_TOKENS.index("<assistant>")]] and n_truncated == 2
    data = _prompt_data(prompts, tokenizer, 2, "prompts", "p.jsonl")
    assert data.summary() == "3 prompts from p.jsonl (2 cut to max_prompt_length, keeping their end)"
    assert _prompt_data(prompts, tokenizer, 3, "prompts", "p.jsonl").summary() == "3 prompts from p.jsonl"


def test_a_missing_field_names_the_fields_the_row_has(tmp_path):
    """Other column names (``question``/``response_j``/``response_k``), a key with a stray space
    or a byte-order mark: the row's own keys show what is there instead."""
    from psipo.lm.evaluate import read_prompts

    row = {"question": "w1", "response_j": "w2", "response_k": "w3"}
    assert one_line_error(lambda: parse_row(row, "f.jsonl:1")) == (
        "f.jsonl:1: field 'chosen': missing (the row has 'question', 'response_j', 'response_k')"
    )
    many = {"x" * 10_000: "w0"} | {f"column_{i}": "w1" for i in range(30)} | {"chosen ": "w2"}
    message = one_line_error(lambda: parse_row(many, "f.jsonl:1"))
    assert message.endswith("'column_9', 'column_10', … 20 more)") and len(message) < 250
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "w1"}\n{"\\ufeffprompt": "w1"}\n')
    call = lambda: read_prompts(str(path), split="train", dataset_config=None, max_prompts=None)  # noqa: E731
    assert one_line_error(call) == f"{path}:2: field 'prompt': missing (the row has '\\ufeffprompt')"


@pytest.mark.parametrize(("value", "kind"), [("null", "NoneType"), ("5", "int")])
def test_a_prompt_of_the_wrong_type_says_a_string_is_fine_too(tmp_path, value, kind):
    from psipo.lm.evaluate import read_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "w1"}\n{"prompt": ' + value + "}\n")
    call = lambda: read_prompts(str(path), split="train", dataset_config=None, max_prompts=None)  # noqa: E731
    assert one_line_error(call) == f"{path}:2: field 'prompt': expected a string or a list of messages, got {kind}"


def test_a_completion_that_starts_with_the_user_s_turn_is_named():
    """After a prompt, chosen and rejected are the assistant's answers: one that opens with a
    user (or system) turn is named as such, not left to a template that may render it as an
    answer (the user's words trained on) or to a 'not a prefix' message that hides the cause."""
    row = {"prompt": MESSAGE, "chosen": [{"role": "user", "content": "w2"}], "rejected": ANSWER}
    assert one_line_error(lambda: parse_row(row, "f.jsonl:5")) == (
        "f.jsonl:5: field 'chosen[0].role': 'user' after the prompt; a completion starts with the assistant's turn"
    )
    ends_with_user = {"prompt": MESSAGE, "chosen": ANSWER, "rejected": ANSWER + [{"role": "user", "content": "w3"}]}
    assert one_line_error(lambda: parse_row(ends_with_user, "f.jsonl:5")) == (
        "f.jsonl:5: field 'rejected[1].role': 'user' ends the completion; a completion ends with the assistant's turn"
    )
    implicit = {"chosen": MESSAGE + ANSWER + [{"role": "user", "content": "w3"}] + ANSWER, "rejected": MESSAGE + ANSWER + MESSAGE + ANSWER}
    assert one_line_error(lambda: parse_row(implicit, "f.jsonl:6")) == (
        "f.jsonl:6: field 'chosen[2].role': 'user' after the prompt; a completion starts with the assistant's turn"
    )


def test_skip_invalid_skips_rows_the_chat_template_refuses(tmp_path):
    """skip_invalid skips every malformed row, also those only the chat template finds wrong
    (a system turn for Gemma's), and counts them."""
    refusing = make_tokenizer(40)
    refusing.chat_template = REFUSING_TEMPLATE
    good = {"prompt": MESSAGE, "chosen": ANSWER, "rejected": [{"role": "assistant", "content": "w3"}]}
    bad = good | {"prompt": [{"role": "system", "content": "w9"}] + MESSAGE}
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in (good, bad, good)))
    assert one_line_error(lambda: load(path, refusing, tmp_path)).startswith(f"{path}:2: the tokenizer's chat template refused")
    data = load(path, refusing, tmp_path, skip_invalid=True)
    assert (len(data.pairs), data.n_rows, data.n_invalid) == (2, 3, 1)


def test_a_json_file_in_json_lines_is_read_as_such(tmp_path, tokenizer):
    """datasets' ``to_json("train.json")`` (and pandas' ``lines=True``) write JSON Lines under
    .json: read line by line, with line numbers, not refused as 'invalid JSON: Extra data'."""
    path = tmp_path / "train.json"
    path.write_text(GOOD_LINE + "\n" + GOOD_LINE + "\n")
    assert len(load(path, tokenizer, tmp_path).pairs) == 2
    path.write_text(GOOD_LINE + "\n" + GOOD_LINE + "\n" + '{"prompt": "w1", "chosen": 3, "rejected": "w2"}\n')
    assert one_line_error(lambda: load(path, tokenizer, tmp_path)).startswith(f"{path}:3: field 'chosen'")
    path.write_text(GOOD_LINE)  # one object is not a list of rows
    assert one_line_error(lambda: load(path, tokenizer, tmp_path)) == f"{path}: expected a JSON list of rows, got dict"


def test_a_path_from_the_home_folder_is_expanded(tmp_path, tokenizer, monkeypatch):
    """``train_data: ~/data/train.jsonl`` and ``model: ~/models/x`` in a YAML config (no shell to
    expand them) name the files in the home folder, not 'file not found: ~/…'."""
    from psipo.lm.hub import resolve_hub_name

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "train.jsonl").write_text(GOOD_LINE + "\n")
    assert len(load("~/train.jsonl", tokenizer, tmp_path).pairs) == 1
    (tmp_path / "model").mkdir()
    assert resolve_hub_name("~/model", key="model", what="a causal LM") == str(tmp_path / "model")


def test_a_message_field_of_the_wrong_type_is_named_not_printed():
    """Multimodal content (a list of parts) can be megabytes: the error names its type."""
    parts = [{"type": "text", "text": "w1 " * 100_000}]
    row = {"prompt": [{"role": "user", "content": parts}], "chosen": ANSWER, "rejected": ANSWER}
    assert one_line_error(lambda: parse_row(row, "f.jsonl:2")) == "f.jsonl:2: field 'prompt[0].content': expected a string, got list"
    row = {"prompt": [{"content": "w1"}], "chosen": ANSWER, "rejected": ANSWER}
    assert one_line_error(lambda: parse_row(row, "f.jsonl:2")) == "f.jsonl:2: field 'prompt[0].role': missing"


def test_a_jsonl_file_holding_a_json_list_is_read_as_such(tmp_path, tokenizer):
    """A JSON list of rows saved as .jsonl (a JSON Lines row is an object, never a list): its rows,
    not 'pairs.jsonl:1: invalid JSON' — nor, with skip_invalid, every row skipped as one bad line."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("\ufeff[\n  " + GOOD_LINE + ",\n  " + GOOD_LINE + "\n]\n")
    assert len(load(path, tokenizer, tmp_path).pairs) == 2
    path.write_text("[" + GOOD_LINE + ", " + GOOD_LINE + ", " + GOOD_LINE + "]")
    data = load(path, tokenizer, tmp_path, skip_invalid=True)
    assert (len(data.pairs), data.n_invalid) == (3, 0)
    path.write_text('["w1"]\n' + GOOD_LINE + "\n")  # JSON Lines whose first row is a list: that row is bad
    assert one_line_error(lambda: load(path, tokenizer, tmp_path)) == f"{path}:1: expected an object with 'chosen' and 'rejected', got list"


def test_a_model_or_tokenizer_file_instead_of_its_folder_is_named(tmp_path):
    """``tokenizer: model/tokenizer.json`` names a local file: not 'neither a local folder nor in
    the Hugging Face cache', but the folder to give instead."""
    from psipo.lm.hub import resolve_hub_name

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tokenizer.json").write_text("{}")
    name = str(tmp_path / "model" / "tokenizer.json")
    assert one_line_error(lambda: resolve_hub_name(name, key="tokenizer", what="a tokenizer")) == (
        f"tokenizer: {name} is a file; give the folder that holds it and its companions ({tmp_path / 'model'})"
    )


def test_an_implicit_prompt_in_a_script_without_spaces_is_cut_between_its_characters():
    """Chinese or Japanese text has no whitespace to cut the shared prefix at: the shared question
    is the prompt, not trained on as both completions (with an empty prompt)."""
    row = parse_row({"chosen": "问题：你好吗？我很好", "rejected": "问题：你好吗？不好"}, "row 1")
    assert (row.prompt, row.chosen, row.rejected) == ("问题：你好吗？", "我很好", "不好")
    mixed = parse_row({"chosen": "Answer: 好的", "rejected": "Answer: 不"}, "row 3")
    assert (mixed.prompt, mixed.chosen, mixed.rejected) == ("Answer:", " 好的", " 不")
    latin = parse_row({"chosen": "Yes, sure", "rejected": "Yeah"}, "row 2")  # never inside a word
    assert (latin.prompt, latin.chosen, latin.rejected) == ("", "Yes, sure", "Yeah")


# What a mutation audit found untested: implicit prompts at their edges, prompts repeated in one
# conversation only, a prompt of exactly max_prompt_length, the length-grouped batch order, the
# tokenisation cache's key and validation, the pair lengths the batcher sorts by.


def implicit(chosen, rejected) -> tuple:
    row = parse_row({"chosen": chosen, "rejected": rejected}, "row 1")
    return row.prompt, row.chosen, row.rejected


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        # one completion is a prefix of the other: its last word stays a completion
        ("w1 w2 w3", "w1 w2", ("w1", " w2 w3", " w2")),
        ("w1 w2", "w1 w2 w3", ("w1", " w2", " w2 w3")),
        # a word boundary after a character of a script without spaces, before a Latin one
        ("你好abc", "你好abd", ("你好", "abc", "abd")),
        # Hangul is written with spaces: no boundary inside a Korean word
        ("안녕하세요", "안녕히가세요", ("", "안녕하세요", "안녕히가세요")),
        # fullwidth letters ("F" width) count as a script without spaces, as wide ones do
        ("ＡＢＣ", "ＡＢＤ", ("ＡＢ", "Ｃ", "Ｄ")),
        # an empty completion shares nothing
        ("", "w1 w2", ("", "", "w1 w2")),
    ],
)
def test_implicit_prompts_at_their_edges(chosen, rejected, expected):
    assert implicit(chosen, rejected) == expected


def test_a_prompt_repeated_in_one_conversation_only_is_not_removed_from_the_other():
    user = [{"role": "user", "content": "w1"}]
    row = {
        "prompt": user,
        "chosen": user + [{"role": "assistant", "content": "w3"}],
        "rejected": [{"role": "user", "content": "w2"}, {"role": "assistant", "content": "w4"}],
    }
    with pytest.raises(PsipoInputError, match=r"field 'chosen\[0\]\.role': 'user' after the prompt"):
        parse_row(row, "row 1")


def test_a_string_prompt_beside_messages_must_be_a_user_turn_not_any_shared_one():
    shared = [{"role": "system", "content": "w1"}, {"role": "user", "content": "w2"}]
    row = {
        "prompt": "w1",  # the system turn's text, not the user's
        "chosen": shared + [{"role": "assistant", "content": "w3"}],
        "rejected": shared + [{"role": "assistant", "content": "w4"}],
    }
    with pytest.raises(PsipoInputError, match="do not share it as a user turn"):
        parse_row(row, "row 1")
    assert parse_row(row | {"prompt": " w2 "}, "row 1") == ParsedRow(shared, row["chosen"][2:], row["rejected"][2:], True)


def test_append_eos_without_an_eos_token_is_one_clear_error():
    class NoEos:
        eos_token_id = None

    with pytest.raises(PsipoInputError, match="append_eos: the tokenizer has no eos_token; set append_eos: false"):
        tokenize_rows([ParsedRow("w1", "w2", "w3")], NoEos(), max_length=8, max_prompt_length=4, append_eos=True)


def test_a_prompt_of_exactly_max_prompt_length_is_not_truncated(tokenizer):
    rows = [ParsedRow("w1 w2 w3", "w4", "w5")]
    data = tokenize_rows(rows, tokenizer, max_length=16, max_prompt_length=3, append_eos=True)
    assert data.pairs == [TokenizedPair([word(1), word(2), word(3)], [word(4), EOS], [word(5), EOS])]
    assert data.n_truncated == 0
    assert tokenize_rows(rows, tokenizer, max_length=16, max_prompt_length=2, append_eos=True).n_truncated == 1


def test_pair_lengths():
    pair = TokenizedPair([1, 2], [3, 4, 5], [6])
    assert (pair.length, pair.shared_length) == (5, 6)
    assert TokenizedPair([1], [3], [6, 7, 8, 9]).length == 5


def test_length_grouped_batches_are_runs_sorted_longest_first_then_shuffled():
    # Distinct lengths, fewer pairs than one run (64 batches): whatever the permutation, the
    # batches are the pairs sorted by length, longest first, cut every batch_size: the short
    # batch holds the shortest pairs.
    lengths = [10, 70, 30, 20, 60, 40, 50]
    by_length = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    expected = sorted(by_length[i:i + 2] for i in range(0, len(lengths), 2))
    orders = [batch_order(lengths, 2, seed=seed, epoch=0, group_by_length=True) for seed in range(8)]
    assert all(sorted(batches) == expected for batches in orders)
    assert len({tuple(map(tuple, batches)) for batches in orders}) > 1  # the batches are shuffled
    assert any(batches[0] != by_length[:2] for batches in orders)  # not always longest first


@pytest.mark.parametrize("group", [False, True])
def test_each_epoch_has_its_own_order(group):
    lengths = list(range(1, 41))
    orders = {tuple(map(tuple, batch_order(lengths, 4, seed=3, epoch=e, group_by_length=group))) for e in range(3)}
    assert len(orders) == 3


def test_the_cache_is_keyed_by_append_eos(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "w1", "chosen": "w2", "rejected": "w3"}) + "\n")
    assert load(path, tokenizer, tmp_path).pairs[0].chosen_ids == [word(2), EOS]
    assert load(path, tokenizer, tmp_path, append_eos=False).pairs[0].chosen_ids == [word(2)]


def _rewrite(entry, edit) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(entry), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    edit(tensors, meta)
    save_file(tensors, str(entry), metadata=meta)


def _last_id_is_the_vocabulary_size(tensors, meta):
    tensors["chosen_ids"][-1] = len(make_tokenizer(40))


def _an_empty_completion(tensors, meta):
    # pair 1's chosen gives its tokens to pair 2's: the lengths still add up
    lengths = tensors["chosen_ids_lengths"]
    lengths[1] += lengths[0]
    lengths[0] = 0


def _a_negative_count(tensors, meta):
    meta["n_empty"] = "-1"


@pytest.mark.parametrize("damage", [_last_id_is_the_vocabulary_size, _an_empty_completion, _a_negative_count])
def test_a_cache_entry_past_its_limits_is_rebuilt(tmp_path, tokenizer, capsys, damage):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "w1", "chosen": f"w{i} w2", "rejected": "w4"} for i in (5, 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fresh = load(path, tokenizer, tmp_path)
    (entry,) = (tmp_path / "cache" / "tokenized").iterdir()
    _rewrite(entry, damage)
    capsys.readouterr()
    assert load(path, tokenizer, tmp_path) == fresh
    assert "discarding the tokenized cache file" in capsys.readouterr().err
    assert set(COUNTS) <= vars(fresh).keys()


def test_a_jsonl_file_holding_a_json_list_after_a_byte_order_mark_is_read(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "w1", "chosen": "w2", "rejected": "w3"}, {"prompt": "w1", "chosen": "w4", "rejected": "w3"}]
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows, indent=1).encode())
    assert [p.chosen_ids for p in load(path, tokenizer, tmp_path, cache_dir=None).pairs] == [[word(2), EOS], [word(4), EOS]]


def test_the_chat_template_is_part_of_the_tokenizer_fingerprint():
    tokenizer = make_tokenizer(40)
    before = tokenizer_fingerprint(tokenizer)
    tokenizer.chat_template = tokenizer.chat_template + " "
    assert tokenizer_fingerprint(tokenizer) != before


def test_a_chat_template_whose_prompt_is_no_prefix_of_the_conversation_is_refused():
    tokenizer = make_tokenizer(40)
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<system> {% endif %}"
    )
    row = {
        "prompt": [{"role": "user", "content": "w1"}],
        "chosen": [{"role": "assistant", "content": "w2"}],
        "rejected": [{"role": "assistant", "content": "w3"}],
    }
    with pytest.raises(PsipoInputError, match="row 1: the chat template does not render the prompt as a prefix"):
        tokenize_rows([parse_row(row, "row 1")], tokenizer, max_length=16, max_prompt_length=8, append_eos=True)


def test_conversations_that_open_with_different_system_turns_share_no_prompt():
    row = {
        "chosen": [{"role": "system", "content": "w1"}, {"role": "assistant", "content": "w3"}],
        "rejected": [{"role": "system", "content": "w2"}, {"role": "assistant", "content": "w4"}],
    }
    with pytest.raises(PsipoInputError, match="fields 'chosen' and 'rejected' share no opening turn"):
        parse_row(row, "row 1")


@pytest.mark.parametrize("null_in", ["chosen", "rejected"])
def test_a_null_key_on_either_side_leaves_the_turn_shared(null_in):
    user, named = {"role": "user", "content": "w1"}, {"role": "user", "content": "w1", "name": None}
    row = {
        "chosen": [named if null_in == "chosen" else user, {"role": "assistant", "content": "w2"}],
        "rejected": [named if null_in == "rejected" else user, {"role": "assistant", "content": "w3"}],
    }
    parsed = parse_row(row, "row 1")
    assert (len(parsed.prompt), parsed.chosen, parsed.rejected) == (1, row["chosen"][1:], row["rejected"][1:])


def test_an_empty_prompt_is_never_counted_as_repeated(tokenizer):
    # implicit rows that share nothing have the prompt "": no completion repeats it
    data = tokenize(tokenizer, [{"chosen": "w3 w5", "rejected": "w4 w6"}, {"prompt": "", "chosen": "w1", "rejected": "w2"}])
    assert data.n_prompt_repeated == 0 and "repeated" not in data.summary()


def test_blank_and_whitespace_lines_of_a_jsonl_file_are_skipped(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    row = json.dumps({"prompt": "w1", "chosen": "w2", "rejected": "w3"})
    path.write_text(f"\n{row}\n  \t\n\r\n{row}\n\n")
    data = load(path, tokenizer, tmp_path, cache_dir=None)
    assert (len(data.pairs), data.n_rows, data.n_invalid) == (2, 2, 0)


def test_a_message_list_beside_a_string_completion_names_the_string():
    row = {"prompt": "w1", "chosen": [{"role": "assistant", "content": "w2"}], "rejected": "w3"}
    assert one_line_error(lambda: parse_row(row, "f.jsonl:3")) == (
        "f.jsonl:3: field 'rejected': expected a list of messages, got str"
    )


def test_the_shared_prompt_layout_by_hand():
    from psipo.lm.data import collate_groups

    batch = collate_groups([([7, 8], [[9], [10, 11]]), ([7], [[12, 13], [14]])], 99, shared_prompt=True)
    expected = {
        "input_ids": [[7, 8, 9, 10, 11], [7, 12, 13, 14, 99]],
        "position_ids": [[0, 1, 2, 2, 3], [0, 1, 2, 1, 0]],
        "segment_ids": [[0, 0, 1, 2, 2], [0, 1, 1, 2, -1]],
        "attention_mask": [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]],
        # completion k of prompt g is sequence k·G + g; its first token is predicted by the prompt's last
        "score_row": [0, 0, 0, 1, 1, 1],
        "score_target": [2, 3, 4, 1, 2, 3],
        "score_predictor": [1, 1, 3, 0, 1, 0],
        "score_sequence": [0, 2, 2, 1, 1, 3],
    }
    assert {name: batch[name].tolist() for name in expected} == expected
    assert batch.keys() == expected.keys()


def test_a_saved_folder_s_fingerprint_covers_its_file_names_not_only_their_bytes(tmp_path):
    from psipo.lm.data import source_fingerprint

    def fingerprint(files: dict[str, str]) -> str:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        for name, text in ({"state.json": "{}"} | files).items():
            (folder / name).write_text(text)
        return source_fingerprint(str(folder), key="train_data", split="train", dataset_config=None)

    assert fingerprint({"a.arrow": "xy", "b.arrow": ""}) != fingerprint({"a.arrow": "x", "b.arrow": "y"})


def test_a_local_data_folder_loads_without_datasets_progress_bars(tmp_path, capfd):
    # A folder of data files downloads nothing: datasets' "Generating train split" bars were
    # noise beside psipo's lines (and before its one-line error for a folder holding no
    # dataset); the bars are on again afterwards, for downloads.
    import datasets

    from psipo.lm.data import load_hub_dataset

    (tmp_path / "pairs").mkdir()
    write_jsonl(make_synthetic_preferences(3, vocab=64, seed=1), tmp_path / "pairs" / "test.jsonl")
    (tmp_path / "not_data").mkdir()
    (tmp_path / "not_data" / "notes.jsonl").write_text('{"a": 1}\n{"b": [}\n')
    assert not datasets.are_progress_bars_disabled()
    capfd.readouterr()
    assert len(load_hub_dataset(str(tmp_path / "pairs"), key="pairs", split="test", dataset_config=None)) == 3
    with pytest.raises(PsipoInputError, match=r"^pairs: .*not_data is a folder that holds no dataset: found notes.jsonl \(JSON parse error"):
        load_hub_dataset(str(tmp_path / "not_data"), key="pairs", split="train", dataset_config=None)
    err = capfd.readouterr().err
    assert err == "", err  # no bars, nor datasets' log line of the JSON it could not parse
    assert not datasets.are_progress_bars_disabled()
