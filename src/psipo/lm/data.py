"""Preference data: read rows, validate them, tokenise once (cached), batch with little padding.

Three row shapes are accepted (extra fields are ignored):

* standard — ``prompt``, ``chosen``, ``rejected`` strings;
* conversational — ``prompt`` (optional), ``chosen``, ``rejected`` as lists of
  ``{"role", "content"}`` messages, rendered with the tokenizer's chat template;
* implicit prompt — only ``chosen`` and ``rejected`` (strings or message lists); their shared
  prefix is the prompt (for strings, cut at the last word boundary of the common prefix, or
  between characters of scripts written without spaces such as Chinese or Japanese; for
  messages, the common leading messages, equal but for null keys; message lists that share no
  opening message are refused).

A conversational completion must be the assistant's: one that opens or ends with a turn of
another role after the prompt (user, system, tool, or a misspelt "bot"), is refused, naming
``field[i].role``.

Chosen and rejected that both start with the prompt (files made from full dialogues) have it
removed and are counted: message lists per row (a completion cannot start with the prompt's
turns), strings only when every string row with a prompt repeats it (a completion may echo a
short prompt). A string prompt next to message lists (HuggingFaceH4/ultrafeedback_binarized) must
be their shared user turn; the conversation's shared messages are then the prompt.

A pair becomes token ids ``prompt_ids``, ``chosen_ids``, ``rejected_ids``: the prompt keeps
its last ``max_prompt_length`` tokens (the end sits next to the completion), each completion
gets EOS appended (``append_eos``) and keeps its first ``max_length - len(prompt_ids)`` tokens.
A pair whose completion is empty after this is dropped and counted, never scored as NaN; so
is a pair whose two completions are the same tokens (it can only add a constant to the loss),
counted apart when they became the same only when cut (a larger max_length keeps those).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from psipo._config import decode_utf8, parse_json, read_text_file
from psipo.errors import PsipoInputError, first_line

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
CACHE_VERSION = 6
"""Bumped when the rows a file yields change (a rule that now refuses rows an older psipo took)."""
QUICKSTART_FOLDER = ".psipo-quickstart"
"""The folder name of the quickstart's data in configs/quickstart.yaml (see psipo.lm.fixtures)."""


@dataclasses.dataclass(frozen=True)
class TokenizedPair:
    """One preference pair as token ids: the shared prompt and the two completions (EOS included)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def length(self) -> int:
        """Tokens of the longer of the two full sequences (prompt + completion)."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))

    @property
    def shared_length(self) -> int:
        """Tokens of the shared-prompt row [prompt | chosen | rejected]."""
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


@dataclasses.dataclass
class TokenizedData:
    """Tokenised pairs and what happened to the rows on the way."""

    pairs: list[TokenizedPair]
    n_rows: int = 0
    """Rows read."""
    n_invalid: int = 0
    """Malformed rows skipped (only with skip_invalid)."""
    n_empty: int = 0
    """Pairs dropped because a completion was empty after truncation."""
    n_identical: int = 0
    """Pairs dropped because chosen and rejected were the same tokens."""
    n_identical_when_cut: int = 0
    """Pairs dropped because chosen and rejected became the same tokens when cut to max_length."""
    n_truncated: int = 0
    """Pairs whose prompt or a completion was truncated."""
    n_prompt_repeated: int = 0
    """Rows whose chosen and rejected both repeated the prompt (removed from them)."""

    def __len__(self) -> int:
        return len(self.pairs)

    def cut_note(self, limits: str) -> str:
        """`` (N cut to <limits>)`` where pairs were cut to the run's length ``limits``, else
        nothing: held-out figures are of the pairs as cut."""
        return f" ({self.n_truncated} cut to {limits})" if self.n_truncated else ""

    def held_out_summary(self) -> str:
        """What a run's progress line says of these pairs held out."""
        return f"{len(self.pairs)} held-out pairs{self.cut_note('max_length / max_prompt_length')}"

    def fingerprint(self) -> str:
        """A hash of the pairs' tokens (resume checks, caches)."""
        from psipo.lm.reference import pairs_fingerprint

        return pairs_fingerprint(self.pairs)

    def summary(self) -> str:
        return (
            f"{len(self.pairs)} pairs from {self.n_rows} rows "
            f"({self.n_invalid} invalid skipped, {self.n_empty} empty after truncation dropped, "
            f"{self.n_identical} with identical chosen and rejected dropped, "
            + (f"{self.n_identical_when_cut} identical only once cut to max_length dropped, " if self.n_identical_when_cut else "")
            + f"{self.n_truncated} truncated"
            + (f", {self.n_prompt_repeated} with the prompt repeated in chosen and rejected (removed from them)" if self.n_prompt_repeated else "")
            + ")"
        )


# ---------------------------------------------------------------------------------------
# Reading rows


def is_local_file(source: str) -> bool:
    """A source naming a local data file (by suffix or existence) rather than a Hub dataset."""
    return source.lower().endswith(FILE_SUFFIXES) or os.path.isfile(os.path.expanduser(source))


def _local_file(source: str, key: str) -> Path:
    """The path of local data file ``source``; when it is missing, the error names it (and, for
    the quickstart's data, says how to make it). ``~`` is the home folder (a YAML config has no shell)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise PsipoInputError(f"{key}: {source} is a folder, not a data file")
    message = f"{key}: file not found: {source}"
    if not path.parent.is_dir():
        message += f" (its folder {path.parent} does not exist either)"
    if QUICKSTART_FOLDER in path.parts:
        folder = Path(*path.parts[: path.parts.index(QUICKSTART_FOLDER) + 1])
        message += f"; make the quickstart's model and data with: python -m psipo.lm.fixtures quickstart {folder}"
    raise PsipoInputError(message)


@dataclasses.dataclass(frozen=True)
class UnreadableRow:
    """A JSONL line that is not valid UTF-8 or JSON: a malformed row like any other (so
    ``skip_invalid`` skips it), found while reading."""

    error: PsipoInputError


def read_rows(
    source: str, *, key: str, split: str = "train", dataset_config: str | None = None
) -> Iterator[tuple[str, Any]]:
    """Yield ``(location, row)``: ``file:line`` for JSONL, ``file: row i`` otherwise.

    A JSONL line that cannot be read is yielded as an :class:`UnreadableRow`, for
    :func:`parse_row` to reject. ``key`` is the config key that named ``source``, for error
    messages.
    """
    if is_local_file(source):
        rows = _file_rows(_local_file(source, key), key)
        if is_slice(split):
            listed = list(rows)
            rows = (listed[i] for i in _single_split_rows(split, len(listed), source, key))
        yield from rows
        return
    dataset = load_hub_dataset(source, key=key, split=split, dataset_config=dataset_config)
    for i, row in enumerate(dataset, start=1):
        yield f"{source}[{split}] row {i}", row


def _file_rows(path: Path, key: str) -> Iterator[tuple[str, Any]]:
    """``(location, row)`` of a .jsonl, .json or .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl" and not _starts_a_list(path):
        yield from _json_lines(path)
    elif suffix in (".json", ".jsonl"):  # .jsonl: a JSON list saved under that name
        text = read_text_file(path)
        if _is_json_lines(text):
            yield from _json_lines(path)
            return
        rows = parse_json(text, path)
        if not isinstance(rows, list):
            raise PsipoInputError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
        for i, row in enumerate(rows, start=1):
            yield f"{path}: row {i}", row
    elif suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pyarrow.ArrowException, OSError) as exc:
            reason = first_line(exc)
            raise PsipoInputError(f"{path}: not a readable Parquet file: {reason}") from None
        for i, row in enumerate(table.to_pylist(), start=1):
            yield f"{path}: row {i}", row
    else:
        raise PsipoInputError(f"{key}: unsupported file type {suffix!r} (use {', '.join(FILE_SUFFIXES)})")


def is_slice(split: str) -> bool:
    """Whether a split spec selects rows (datasets' syntax, ``train[:100]``, ``test[50%:]``)
    rather than naming a split."""
    return "[" in split


def _single_split_rows(split: str, n_rows: int, source: str, key: str) -> list[int]:
    """The row indices a slice spec selects from a source that holds one split (a file, a saved
    ``Dataset``): its split name stands for the whole source, as a plain split name does."""
    import datasets

    names = {part.split("[")[0].strip() for part in split.split("+")}
    try:
        if len(names) != 1:
            raise ValueError(f"it names {len(names)} splits")
        (name,) = names
        parts = datasets.ReadInstruction.from_spec(split).to_absolute({name: n_rows})
    except (ValueError, KeyError, AssertionError) as exc:
        raise PsipoInputError(
            f"{key}: {source} holds one split of {n_rows} rows; cannot take {split!r} from it ({exc}); "
            "use a slice of one split such as 'train[:100]' or 'train[10%:]'"
        ) from None
    selected = [i for part in parts for i in range(part.from_, part.to)]
    if not selected:
        raise _selects_no_rows(key, source, split)
    return selected


def _selects_no_rows(key: str, source: str, split: str) -> PsipoInputError:
    """The error for a slice that selects nothing (``train[100%:]``, ``train[5:5]``): said so,
    rather than as a source without a valid row."""
    return PsipoInputError(f"{key}: the split {split!r} selects no rows of {source}")


def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """``(file:line, row)`` of a JSON Lines file; blank lines are skipped."""
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                text = decode_utf8(line.rstrip(b"\r\n"), path, line_no)
                row: Any = parse_json(text, path, line_no)
            except PsipoInputError as exc:
                row = UnreadableRow(exc)
            yield f"{path}:{line_no}", row


def _starts_a_list(path: Path) -> bool:
    """Whether the first character of a file (past a byte-order mark and whitespace) is ``[``:
    a JSON list, as a JSON Lines row (an object) never begins."""
    with path.open("rb") as f:
        head = f.read(1 << 16).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


def _is_json_lines(text: str) -> bool:
    """Whether the text of a .json file is JSON Lines (as datasets' ``to_json`` writes it): its
    first line is a JSON value of its own, and more follows."""
    first, _, rest = text.lstrip().partition("\n")
    if not rest.strip():
        return False
    try:
        json.loads(first)
    except (json.JSONDecodeError, RecursionError):
        return False
    return True


def load_hub_dataset(source: str, *, key: str, split: str, dataset_config: str | None) -> Any:
    """``datasets.load_dataset(source, dataset_config, split=split)`` with a one-line error.

    Offline or with the Hub unreachable, a cached snapshot is loaded instead, and without one
    the error comes within seconds (:func:`psipo.lm.hub.resolve_hub_name`), not after retries.
    """
    import datasets

    from psipo.lm.hub import resolve_hub_name

    if _saved_dataset(source):
        return _load_saved_dataset(source, key=key, split=split)
    resolved = resolve_hub_name(source, key=key, what="a dataset", repo_type="dataset")
    local_folder = os.path.isdir(os.path.expanduser(source))
    if local_folder:  # datasets names a dataset after its folder: "." has no name and is refused
        resolved = os.path.abspath(resolved)
    # A local folder (or a cached snapshot) downloads nothing: datasets' bars would only be
    # noise beside psipo's own lines, and before a one-line error when it holds no dataset.
    quiet = os.path.isdir(resolved) and not datasets.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    # A folder's README.md without a metadata header (a project folder's) is no fault of the
    # data; huggingface_hub warns of it on a line of its own. datasets logs a JSON file it cannot
    # parse on a line of its own too, before the error that psipo's one line reports.
    quieted = {"huggingface_hub.repocard": logging.ERROR, "datasets.packaged_modules.json.json": logging.CRITICAL}
    levels = {name: logging.getLogger(name).level for name in quieted}
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)
    try:
        return datasets.load_dataset(resolved, dataset_config, split=split)
    except Exception as exc:  # noqa: BLE001 — datasets raises many types; report it in one line
        if local_folder and isinstance(exc, FileNotFoundError):  # EmptyDatasetError, DataFilesNotFoundError
            raise _folder_without_dataset(key, source) from None
        if local_folder and isinstance(exc, datasets.exceptions.DatasetGenerationError):
            # Files that are not one dataset (a model's config.json and tokenizer.json, or a .jsonl
            # beside them): datasets says only "An error occurred while generating the dataset".
            raise _folder_without_dataset(key, source, found=_unreadable_files(source, exc.__cause__)) from None
        first = first_line(exc)
        raise PsipoInputError(
            f"{key}: cannot load {source!r} (split {split!r}) as a local file or Hugging Face dataset: {first}"
        ) from None
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if quiet:
            datasets.enable_progress_bars()


def _folder_without_dataset(key: str, source: str, *, found: str | None = None) -> PsipoInputError:
    """The error for a local folder that datasets finds no dataset in; ``found`` says what it holds
    instead, when that helps."""
    holds = f"found {found}; " if found else ""
    return PsipoInputError(
        f"{key}: {source} is a folder that holds no dataset: {holds}expected a {'/'.join(FILE_SUFFIXES)} file, a "
        "datasets save_to_disk folder, a folder of such files (one per split) or a Hugging Face dataset name"
    )


def _unreadable_files(source: str, reason: BaseException | None) -> str:
    """The files of folder ``source`` (the first 8 by name) and why datasets could not read them
    as one dataset: files of different columns (its CastError says only "Couldn't cast"), or
    its reason."""
    import datasets

    names = sorted(path.name for path in Path(source).expanduser().iterdir() if path.is_file())
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    if isinstance(reason, datasets.table.CastError):
        why = "files whose columns differ, not one dataset"
    else:
        why = first_line(reason) if reason is not None else "not readable as one dataset"
    return f"{shown} ({why})"


def _saved_dataset(source: str) -> bool:
    """Whether ``source`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    folder = Path(source).expanduser()
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _load_saved_dataset(source: str, *, key: str, split: str) -> Any:
    """The dataset (or the ``split`` of the dataset dict) that ``save_to_disk`` wrote to ``source``,
    memory-mapped in place (``datasets.load_dataset`` refuses a single dataset's folder and copies
    a dict's into its cache); a split that the dict lacks is named with those it has."""
    import datasets

    try:
        saved = datasets.load_from_disk(str(Path(source).expanduser()))
    except Exception as exc:  # noqa: BLE001 — datasets raises many types; report it in one line
        first = first_line(exc)
        raise PsipoInputError(f"{key}: cannot load the save_to_disk folder {source}: {first}") from None
    if isinstance(saved, datasets.DatasetDict):
        if split in saved:
            return saved[split]
        try:  # datasets' split syntax, as load_dataset reads it: "train[:10%]+test"
            parts = datasets.ReadInstruction.from_spec(split).to_absolute({name: len(d) for name, d in saved.items()})
        except (ValueError, KeyError, AssertionError):
            raise PsipoInputError(f"{key}: {source} has no split {split!r} (it has: {', '.join(sorted(saved))})") from None
        # An empty part is left out: select(range(n, n)) of n rows raises an IndexError.
        selected = [saved[p.splitname].select(range(p.from_, p.to)) for p in parts if p.to > p.from_]
        if not selected:
            raise _selects_no_rows(key, source, split)
        return datasets.concatenate_datasets(selected)
    return saved.select(_single_split_rows(split, len(saved), source, key)) if is_slice(split) else saved


def source_fingerprint(source: str, *, key: str, split: str, dataset_config: str | None) -> str:
    """Content hash of a local file or save_to_disk folder, or the datasets fingerprint of a Hub
    dataset split."""
    digest = hashlib.sha256()
    if is_local_file(source):
        files = [(_local_file(source, key), "")]
        if is_slice(split):
            digest.update(split.encode())  # "train[:100]" of the file is other data than the whole
    elif _saved_dataset(source):
        folder = Path(source).expanduser()
        if (folder / "dataset_dict.json").is_file() and (folder / split).is_dir():
            folder = folder / split  # a dataset dict's split is a saved dataset of its own
        else:
            digest.update(split.encode())  # the whole folder: "train[:10%]" and "test" differ
        files = [(path, str(path.relative_to(folder))) for path in sorted(folder.rglob("*")) if path.is_file()]
    else:
        files = []
    for path, name in files:
        digest.update(name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    if files:
        return digest.hexdigest()
    dataset = load_hub_dataset(source, key=key, split=split, dataset_config=dataset_config)
    return f"{source}:{dataset_config}:{split}:{dataset._fingerprint}"


# ---------------------------------------------------------------------------------------
# Validating rows


@dataclasses.dataclass
class ParsedRow:
    prompt: str | list[dict[str, str]]
    chosen: str | list[dict[str, str]]
    rejected: str | list[dict[str, str]]
    prompt_repeated: bool = False
    """The prompt was removed from the start of chosen and rejected (conversational rows)."""

    @property
    def conversational(self) -> bool:
        return isinstance(self.chosen, list)


def missing_field(where: str, field: str, row: dict[str, Any]) -> PsipoInputError:
    """The error for a row without ``field``, naming the keys it has (another column name, a
    stray space or byte-order mark in a key), at most 12 of them, each cut at 40 characters."""
    keys = [repr(key[:40]) + "…" if isinstance(key, str) and len(key) > 40 else repr(key) for key in row]
    shown = ", ".join(keys[:12]) + (f", … {len(keys) - 12} more" if len(keys) > 12 else "")
    return PsipoInputError(f"{where}: field '{field}': missing (the row has {shown or 'no fields'})")


def _check_messages(value: Any, where: str, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise PsipoInputError(f"{where}: field '{field}': expected a list of messages, got {type(value).__name__}")
    if not value:
        raise PsipoInputError(f"{where}: field '{field}': empty message list")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise PsipoInputError(f"{where}: field '{field}[{i}]': expected a message object, got {type(message).__name__}")
        for part in ("role", "content"):
            if part not in message:
                raise PsipoInputError(f"{where}: field '{field}[{i}].{part}': missing")
            if not isinstance(message[part], str):  # its type, not its value: content parts can be megabytes
                raise PsipoInputError(f"{where}: field '{field}[{i}].{part}': expected a string, got {type(message[part]).__name__}")
    return value


def _same_message(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two messages are the same turn: equal but for keys that are null in one and absent
    from the other (Parquet and datasets give every message of a column the keys of all)."""
    return {k: v for k, v in a.items() if v is not None} == {k: v for k, v in b.items() if v is not None}


def _shared_messages(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    """How many leading messages ``a`` and ``b`` have in common."""
    n = 0
    while n < min(len(a), len(b)) and _same_message(a[n], b[n]):
        n += 1
    return n


def _unspaced(char: str) -> bool:
    """A character of a script written without spaces between words (Chinese, Japanese: wide
    characters but Hangul, whose words are spaced): a word boundary on either side of it."""
    import unicodedata

    return unicodedata.east_asian_width(char) in ("W", "F") and not unicodedata.name(char, "").startswith("HANGUL")


def _common_text_prefix(a: str, b: str) -> int:
    """Length of the shared prompt of two strings: their common prefix cut at its last word
    boundary (whitespace, or either side of a character of a script without spaces)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    if n == min(len(a), len(b)):
        n -= 1  # one string is a prefix of the other: keep at least its last word as completion
    while n > 0 and not (a[n].isspace() or _unspaced(a[n]) or _unspaced(a[n - 1])):
        n -= 1
    if n > 0 and a[n - 1].isspace() and not a[n].isspace():
        n -= 1  # "Answer: 好" → "Answer:" + " 好", as a whitespace cut leaves it
    return max(n, 0)


def parse_row(row: Any, where: str) -> ParsedRow:
    """Validate one row and bring it to (prompt, chosen, rejected); errors name where and field.

    Only a row without a ``prompt`` field has an implicit prompt: ``"prompt": null`` is an error.
    """
    if isinstance(row, UnreadableRow):
        raise row.error
    if not isinstance(row, dict):
        raise PsipoInputError(f"{where}: expected an object with 'chosen' and 'rejected', got {type(row).__name__}")
    for field in ("chosen", "rejected"):
        if field not in row:
            raise missing_field(where, field, row)
    for field in ("prompt", "chosen", "rejected"):
        if field in row and row[field] is None:
            implicit = " (leave the field out for an implicit prompt; in Parquet or a dataset, the column)" if field == "prompt" else ""
            raise PsipoInputError(f"{where}: field '{field}': null{implicit}")
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if isinstance(chosen, list) or isinstance(rejected, list):
        chosen = _check_messages(chosen, where, "chosen")
        rejected = _check_messages(rejected, where, "rejected")
        repeated = False
        if isinstance(prompt, str):  # HuggingFaceH4/ultrafeedback_binarized: the conversation's user turn
            turns = chosen[: _shared_messages(chosen, rejected)]
            if not any(m["role"] == "user" and m["content"].strip() == prompt.strip() for m in turns):
                raise PsipoInputError(
                    f"{where}: field 'prompt': a string, but 'chosen' and 'rejected' are messages that do not share it "
                    "as a user turn: give it as a list of messages, or leave it out for an implicit prompt"
                )
            prompt, repeated = None, True
        if prompt is None:
            start = _shared_messages(chosen, rejected)
            if start == len(chosen) == len(rejected):
                start -= 1  # keep the last message as both completions: dropped as identical later
            prompt = chosen[:start]
        else:
            prompt = _check_messages(prompt, where, "prompt")
            n = len(prompt)
            repeated = all(_shared_messages(prompt, messages) == n for messages in (chosen, rejected))
            start = n if repeated else 0
        chosen, rejected = chosen[start:], rejected[start:]
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not value:
                raise PsipoInputError(f"{where}: field '{field}': no completion messages after the prompt")
            if value[0]["role"] != "assistant":
                if not prompt and value[0]["role"] in ("user", "system"):  # else the user turns of two conversations are trained on
                    raise PsipoInputError(
                        f"{where}: fields 'chosen' and 'rejected' share no opening turn, so they answer no common "
                        "prompt (a pair compares two answers to one prompt); give 'prompt' or fix the conversations"
                    )
                raise PsipoInputError(
                    f"{where}: field '{field}[{start}].role': {value[0]['role']!r} after the prompt; "
                    "a completion starts with the assistant's turn"
                )
            if value[-1]["role"] != "assistant":  # else the model learns to write the user's (or a tool's) turn
                raise PsipoInputError(
                    f"{where}: field '{field}[{start + len(value) - 1}].role': {value[-1]['role']!r} ends the completion; "
                    "a completion ends with the assistant's turn"
                )
        return ParsedRow(prompt, chosen, rejected, repeated)
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise PsipoInputError(f"{where}: field '{field}': expected a string or a list of messages, got {type(value).__name__}")
    if prompt is None:
        shared = _common_text_prefix(chosen, rejected)
        return ParsedRow(chosen[:shared], chosen[shared:], rejected[shared:])
    if not isinstance(prompt, str):
        raise PsipoInputError(f"{where}: field 'prompt': expected a string, got {type(prompt).__name__}")
    return ParsedRow(prompt, chosen, rejected)


# ---------------------------------------------------------------------------------------
# Tokenising


def render_chat(tokenizer: Any, messages: list[dict[str, str]], where: str, *, add_generation_prompt: bool = False) -> str:
    """``messages`` through the tokenizer's chat template, as text; a tokenizer without one, or a
    template that refuses the messages (Gemma's and Mistral's raise on a system turn or roles that
    do not alternate), is a :class:`PsipoInputError` naming ``where``."""
    import jinja2

    if getattr(tokenizer, "chat_template", None) is None:
        raise PsipoInputError(f"{where}: conversational rows need a tokenizer with a chat template")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
        reason = first_line(exc)
        raise PsipoInputError(f"{where}: the tokenizer's chat template refused the messages: {reason}") from None


def _render_conversation(tokenizer: Any, row: ParsedRow, where: str) -> tuple[str, str, str]:
    # An implicit prompt with no messages in common is empty: chat templates refuse to render [].
    prompt = render_chat(tokenizer, row.prompt, where, add_generation_prompt=True) if row.prompt else ""
    completions = []
    for messages in (row.chosen, row.rejected):
        full = render_chat(tokenizer, row.prompt + messages, where)
        if not full.startswith(prompt):
            raise PsipoInputError(f"{where}: the chat template does not render the prompt as a prefix of the conversation")
        completions.append(full[len(prompt):])
    return prompt, completions[0], completions[1]


def _without_repeated_text_prompts(rows: Sequence[ParsedRow]) -> Sequence[ParsedRow]:
    """``rows`` with the prompt removed from the start of chosen and rejected when every string
    row with a prompt repeats it there (a file made from full dialogues); else as they are."""

    def repeats(row: ParsedRow) -> bool:
        p, c, r = row.prompt, row.chosen, row.rejected
        return isinstance(p, str) and isinstance(c, str) and isinstance(r, str) and c.startswith(p) and r.startswith(p)

    with_prompt = [isinstance(row.prompt, str) and bool(row.prompt) for row in rows]
    if not any(with_prompt) or not all(repeats(row) for row, has in zip(rows, with_prompt) if has):
        return rows
    return [
        ParsedRow(row.prompt, row.chosen[len(row.prompt):], row.rejected[len(row.prompt):], True) if has else row
        for row, has in zip(rows, with_prompt)
    ]


def tokenize_rows(
    rows: Sequence[ParsedRow],
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int,
    append_eos: bool,
    locations: Sequence[str] | None = None,
    skip_invalid: bool = False,
) -> TokenizedData:
    """Tokenise validated rows (batched tokenizer calls), append EOS, truncate, drop empty and
    identical completions. With ``skip_invalid``, a conversation that the chat template cannot
    render is skipped and counted as invalid instead of stopping everything."""
    eos = tokenizer.eos_token_id
    if append_eos and eos is None:
        raise PsipoInputError("append_eos: the tokenizer has no eos_token; set append_eos: false")
    rows = _without_repeated_text_prompts(rows)
    prompts, chosens, rejecteds, templated = [], [], [], []
    data = TokenizedData(pairs=[], n_rows=len(rows))
    for i, row in enumerate(rows):
        if row.conversational:
            where = locations[i] if locations is not None else f"row {i + 1}"
            try:
                prompt, chosen, rejected = _render_conversation(tokenizer, row, where)
            except PsipoInputError:
                if not skip_invalid:
                    raise
                data.n_invalid += 1
                continue
        else:
            prompt, chosen, rejected = row.prompt, row.chosen, row.rejected  # type: ignore[assignment]
        prompts.append(prompt)
        chosens.append(chosen)
        rejecteds.append(rejected)
        templated.append(row.conversational)
        data.n_prompt_repeated += row.prompt_repeated

    def ids(texts: list[str], special: bool) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=special)["input_ids"] if texts else []

    # Plain prompts get the tokenizer's special tokens (e.g. BOS); a chat template writes its own.
    plain = [i for i, t in enumerate(templated) if not t]
    chat = [i for i, t in enumerate(templated) if t]
    prompt_ids: list[list[int]] = [[] for _ in prompts]
    for idx, special in ((plain, True), (chat, False)):
        for i, token_ids in zip(idx, ids([prompts[i] for i in idx], special)):
            prompt_ids[i] = token_ids
    chosen_ids, rejected_ids = ids(chosens, False), ids(rejecteds, False)

    for p, c, r in zip(prompt_ids, chosen_ids, rejected_ids):
        if append_eos:
            c = c if c and c[-1] == eos else c + [eos]
            r = r if r and r[-1] == eos else r + [eos]
        truncated = False
        if len(p) > max_prompt_length:
            p, truncated = p[len(p) - max_prompt_length:], True
        budget = max_length - len(p)
        different = c != r
        if len(c) > budget or len(r) > budget:
            c, r, truncated = c[:budget], r[:budget], True
        # Without a prompt token the first completion token has nothing to be predicted from.
        n_unscored = 0 if p else 1
        if len(c) <= n_unscored or len(r) <= n_unscored:
            data.n_empty += 1
            continue
        if c == r:
            if different:
                data.n_identical_when_cut += 1
            else:
                data.n_identical += 1
            continue
        data.n_truncated += truncated
        data.pairs.append(TokenizedPair(list(p), list(c), list(r)))
    return data


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything about the tokenizer that changes token ids."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        digest.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    digest.update(str(tokenizer.eos_token_id).encode())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("PSIPO_CACHE", Path.home() / ".cache" / "psipo"))


def _save_pairs(path: Path, data: TokenizedData) -> None:
    from safetensors.torch import save

    from psipo._io import atomic_write_bytes

    tensors: dict[str, torch.Tensor] = {}
    for name in ("prompt_ids", "chosen_ids", "rejected_ids"):
        seqs = [getattr(p, name) for p in data.pairs]
        tensors[name] = torch.tensor([t for s in seqs for t in s], dtype=torch.int64)
        tensors[name + "_lengths"] = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    counts = {k: str(getattr(data, k)) for k in COUNTS}
    atomic_write_bytes(path, save(tensors, metadata=counts))


COUNTS = ("n_rows", "n_invalid", "n_empty", "n_identical", "n_identical_when_cut", "n_truncated", "n_prompt_repeated")
"""The row counts a tokenized cache entry keeps in its metadata."""


def _load_pairs(path: Path, vocab_size: int | None = None) -> TokenizedData:
    """The pairs of a tokenized cache entry; ``ValueError`` (or what safetensors raises) for one
    that is unreadable or does not hold well-formed pairs (token ids in ``[0, vocab_size)``)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        names = set(f.keys())
        columns = []
        for name in ("prompt_ids", "chosen_ids", "rejected_ids"):
            for tensor_name in (name, name + "_lengths"):
                if tensor_name not in names:
                    raise ValueError(f"no tensor {tensor_name}")
            flat, lengths = f.get_tensor(name), f.get_tensor(name + "_lengths")
            for tensor in (flat, lengths):
                if tensor.dim() != 1 or tensor.dtype != torch.int64:
                    raise ValueError(f"{name}: expected 1-D int64 tensors")
            if bool((lengths < 0).any()) or int(lengths.sum()) != len(flat):
                raise ValueError(f"{name}: lengths do not add up to its {len(flat)} tokens")
            if len(flat) and (int(flat.min()) < 0 or (vocab_size is not None and int(flat.max()) >= vocab_size)):
                raise ValueError(f"{name}: token ids outside the tokenizer's vocabulary")
            columns.append([seq.tolist() for seq in torch.split(flat, lengths.tolist())])
    if len({len(column) for column in columns}) != 1 or not columns[0]:
        raise ValueError("the columns hold different numbers of pairs, or none")
    if not all(str(meta.get(k, "")).isdigit() for k in COUNTS):
        raise ValueError("metadata lacks the row counts")
    if any(not c or not r for _, c, r in zip(*columns)):
        raise ValueError("a pair has an empty completion")
    pairs = [TokenizedPair(p, c, r) for p, c, r in zip(*columns)]
    return TokenizedData(pairs, **{k: int(meta[k]) for k in COUNTS})


def load_cache_entry(path: Path, load: Any, what: str) -> Any:
    """``load(path)``, or None (with one warning line on stderr naming ``path``) when the cache
    entry cannot be read or fails ``load``'s validation: a cache is derived data, so the caller
    rebuilds it (overwriting the entry atomically) instead of failing or using it."""
    import sys

    try:
        return load(path)
    except Exception as exc:  # noqa: BLE001 — safetensors, torch and validation raise many types
        reason = first_line(exc)
        print(f"psipo: warning: discarding the {what} cache file {path} ({reason}); rebuilding it", file=sys.stderr, flush=True)
        return None


def load_pairs(
    source: str,
    tokenizer: Any,
    *,
    key: str,
    split: str,
    dataset_config: str | None,
    max_length: int,
    max_prompt_length: int,
    append_eos: bool,
    skip_invalid: bool,
    cache_dir: Path | None,
) -> TokenizedData:
    """Read, validate and tokenise the pairs of ``source``, through an on-disk cache.

    The cache entry in ``cache_dir`` (None: no cache) is keyed by the data's content (or Hub
    fingerprint), the tokenizer and every tokenisation setting, so a change to any of them
    re-tokenises.
    """
    settings = {
        "version": CACHE_VERSION,
        "data": source_fingerprint(source, key=key, split=split, dataset_config=dataset_config),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "max_prompt_length": max_prompt_length,
        "append_eos": append_eos,
        "skip_invalid": skip_invalid,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir) / "tokenized" / f"{digest}.safetensors" if cache_dir is not None else None
    if path is not None and path.is_file():
        vocab_size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
        cached = load_cache_entry(path, lambda p: _load_pairs(p, vocab_size), "tokenized")
        if cached is not None:
            return cached

    rows, locations, n_invalid = [], [], 0
    for where, raw in read_rows(source, key=key, split=split, dataset_config=dataset_config):
        try:
            rows.append(parse_row(raw, where))
            locations.append(where)
        except PsipoInputError:
            if not skip_invalid:
                raise
            n_invalid += 1
    if not rows:
        raise PsipoInputError(f"{key}: no valid preference rows in {source}")
    data = tokenize_rows(
        rows,
        tokenizer,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        append_eos=append_eos,
        locations=locations,
        skip_invalid=skip_invalid,
    )
    data.n_rows += n_invalid
    data.n_invalid += n_invalid
    if not data.pairs:
        use = "train on" if key == "train_data" else "evaluate on"
        raise PsipoInputError(f"{key}: no pair of {source} is left to {use}: {data.summary()}")
    if path is not None:
        _save_pairs(path, data)
    return data


# ---------------------------------------------------------------------------------------
# Batching


def batch_order(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The batches of one epoch as lists of pair indices, a pure function of (seed, epoch).

    With ``group_by_length``, a random permutation is cut into runs of 64 batches, each run
    sorted by length and cut into batches, and the batches shuffled: pairs of similar
    length share a batch (little padding) while the order stays random.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    run = 64 * batch_size
    batches = []
    for start in range(0, len(order), run):
        chunk = sorted(order[start:start + run], key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def collate(pairs: Sequence[TokenizedPair], pad_id: int, *, shared_prompt: bool = False) -> dict[str, torch.Tensor]:
    """Batch pairs for one forward pass that scores both completions of every pair.

    :func:`collate_groups` with two completions per prompt, chosen then rejected: sequence
    ``b`` is the chosen completion of pair ``b`` and ``B + b`` its rejected one.
    """
    return collate_groups([(p.prompt_ids, [p.chosen_ids, p.rejected_ids]) for p in pairs], pad_id, shared_prompt=shared_prompt)


def collate_groups(
    groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_id: int, *, shared_prompt: bool = False
) -> dict[str, torch.Tensor]:
    """Batch G prompts with K completions each for one forward pass that scores every completion.

    ``groups`` are ``(prompt_ids, [completion_ids × K])`` with the same K for every prompt.
    Default layout: completion k of prompt g in row ``k·G + g`` as ``[prompt | completion]``,
    right-padded; ``loss_mask`` is 1 on completion tokens. ``shared_prompt=True``: one row per
    prompt, ``[prompt | completion 1 | … | completion K]``, with ``position_ids`` restarting
    after the prompt for every completion and ``segment_ids`` (0 prompt, k for completion k,
    -1 pad) from which :func:`psipo.lm.logprobs.shared_prompt_mask` hides the completions from
    each other: the prompt is computed once instead of K times.

    Both layouts carry the scoring map: token ``input_ids[score_row, score_target]`` of
    sequence ``score_sequence`` (``k·G + g``: completion k of prompt g) is predicted by the
    hidden state at ``[score_row, score_predictor]``. Padding is masked everywhere, so the
    value of ``pad_id`` never matters.
    """
    n, k = len(groups), len(groups[0][1])
    if any(len(completions) != k for _, completions in groups):
        raise ValueError("collate_groups: every prompt needs the same number of completions")
    rows, predictors, targets, sequences = [], [], [], []

    def score(row: int, sequence: int, prompt_end: int, start: int, length: int) -> None:
        for j in range(length):
            if j == 0 and prompt_end == 0:
                continue  # no prompt: the first completion token has no predictor
            rows.append(row)
            targets.append(start + j)
            # The first completion token is predicted by the last prompt token.
            predictors.append(prompt_end - 1 if j == 0 else start + j - 1)
            sequences.append(sequence)

    if shared_prompt:
        width = max(len(prompt) + sum(len(c) for c in completions) for prompt, completions in groups)
        input_ids = torch.full((n, width), pad_id, dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        segment_ids = torch.full((n, width), -1, dtype=torch.long)
        for g, (prompt, completions) in enumerate(groups):
            p = len(prompt)
            input_ids[g, :p] = torch.tensor(list(prompt), dtype=torch.long)
            position_ids[g, :p] = torch.arange(p)
            segment_ids[g, :p] = 0
            start = p
            for c, completion in enumerate(completions):
                end = start + len(completion)
                input_ids[g, start:end] = torch.tensor(list(completion), dtype=torch.long)
                position_ids[g, start:end] = torch.arange(p, p + len(completion))
                segment_ids[g, start:end] = c + 1
                score(g, c * n + g, p, start, len(completion))
                start = end
        batch = {
            "input_ids": input_ids,
            "attention_mask": (segment_ids >= 0).long(),
            "position_ids": position_ids,
            "segment_ids": segment_ids,
        }
    else:
        sequences_of = [(prompt, completions[c]) for c in range(k) for prompt, completions in groups]
        width = max(len(prompt) + len(completion) for prompt, completion in sequences_of)
        input_ids = torch.full((k * n, width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((k * n, width), dtype=torch.long)
        loss_mask = torch.zeros((k * n, width), dtype=torch.bool)
        for row, (prompt, completion) in enumerate(sequences_of):
            p, end = len(prompt), len(prompt) + len(completion)
            input_ids[row, :end] = torch.tensor(list(prompt) + list(completion), dtype=torch.long)
            attention_mask[row, :end] = 1
            loss_mask[row, p:end] = True
            score(row, row, p, p, len(completion))
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}
    batch["score_row"] = torch.tensor(rows, dtype=torch.long)
    batch["score_predictor"] = torch.tensor(predictors, dtype=torch.long)
    batch["score_target"] = torch.tensor(targets, dtype=torch.long)
    batch["score_sequence"] = torch.tensor(sequences, dtype=torch.long)
    return batch
