"""Preference datasets: validation, the paper's datasets, and the incidence matrix identity h = Bδ."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psipo.errors import PsipoInputError
from psipo.losses import log_ratio_gap
from psipo.tabular.datasets import PreferenceDataset, deterministic_pair_dataset, paper_datasets


def test_paper_datasets_are_as_printed_plus_d3_prime():
    datasets = paper_datasets()
    pairs = {name: [row[1:] for row in d.rows()] for name, d in datasets.items()}
    assert pairs == {
        "D1": [("a", "b"), ("b", "c"), ("a", "c")],
        "D2": [("a", "b"), ("b", "c"), ("c", "a")],
        "D3": [("a", "b"), ("b", "a")],
        "D3'": [("a", "b"), ("b", "a"), ("b", "c")],
    }
    assert deterministic_pair_dataset().rows() == [("", "y1", "y2")]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "empty"),
        ([("a", "z")], "unknown action 'z'"),
        ([("a", "a")], "compares action 'a' with itself"),
        ([("a",)], "row 0: expected"),
        ([("a", "b"), ("q", "a", "b")], "row 1: unknown context 'q'"),
    ],
)
def test_bad_rows_raise_one_line_errors(rows, message):
    with pytest.raises(PsipoInputError, match=message) as info:
        PreferenceDataset.from_rows(rows, actions=("a", "b"), name="mine")
    assert "\n" not in str(info.value) and str(info.value).startswith("mine: ")


def test_a_row_without_its_context_is_refused_when_there_are_several():
    """(y_w, y_l) is short for (x, y_w, y_l) only with one context; with two it must not be
    put silently in the first."""
    with pytest.raises(PsipoInputError, match=r"^mine: row 1: expected \(x, y_w, y_l\), got \('a', 'b'\)$"):
        PreferenceDataset.from_rows(
            [("u", "a", "b"), ("a", "b")], actions=("a", "b"), contexts=("u", "v"), name="mine"
        )


def test_bad_names_and_reference_policy_raise():
    with pytest.raises(PsipoInputError, match="actions: names must be distinct"):
        PreferenceDataset.from_rows([("a", "b")], actions=("a", "b", "a"))
    dataset = PreferenceDataset.from_rows([("a", "b")], actions=("a", "b"))
    with pytest.raises(PsipoInputError, match="pi_ref"):
        dataset.reference_policy([0.7, 0.7])
    assert dataset.reference_policy({"a": 1.0}).tolist() == [[1.0, 0.0]]


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from("xy"), st.sampled_from("abcd"), st.sampled_from("abcd")).filter(
            lambda r: r[1] != r[2]
        ),
        min_size=1,
        max_size=12,
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_incidence_gives_the_log_ratio_gap_of_every_row(rows, seed):
    """(Bδ)_i equals h_π(y_w, y_l) of row i for π = softmax(log π_ref + δ) per context."""
    dataset = PreferenceDataset.from_rows(rows, actions=tuple("abcd"), contexts=("x", "y"))
    generator = torch.Generator().manual_seed(seed)
    pi_ref = torch.softmax(torch.randn(2, 4, generator=generator, dtype=torch.float64), -1)
    delta = torch.randn(2, 4, generator=generator, dtype=torch.float64)
    log_pi, log_ref = torch.log_softmax(pi_ref.log() + delta, -1), pi_ref.log()
    x, w, l = dataset.context_index, dataset.chosen_index, dataset.rejected_index  # noqa: E741
    expected = log_ratio_gap(log_pi[x, w], log_pi[x, l], log_ref[x, w], log_ref[x, l])
    torch.testing.assert_close(dataset.incidence() @ delta.flatten(), expected, rtol=0, atol=1e-12)


def test_rows_may_be_a_generator_and_a_string_is_not_a_row():
    rows = [("a", "b"), ("b", "a"), ("a", "b")]
    from_generator = PreferenceDataset.from_rows((row for row in rows), actions=("a", "b"))
    from_list = PreferenceDataset.from_rows(rows, actions=("a", "b"))
    assert torch.equal(from_generator.chosen_index, from_list.chosen_index) and len(from_generator) == 3
    with pytest.raises(PsipoInputError, match=r"^dataset: row 0: expected a list of names, got 'ab'"):
        PreferenceDataset.from_rows(["ab"], actions=("a", "b"))
    with pytest.raises(PsipoInputError, match=r"^dataset: rows: expected a list of"):
        PreferenceDataset.from_rows(None, actions=("a", "b"))
