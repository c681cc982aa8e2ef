"""The report machinery every experiment shares: claims, the number formatter, Markdown tables,
REPORT.md's sections and results.json."""

import json
import math

import pytest

from psipo.experiments.reporting import (
    Claim,
    NotMeasured,
    claims_as_data,
    claims_from_data,
    claims_markdown,
    combine,
    format_number,
    holds_if,
    largest,
    markdown_table,
    needs_several_taus,
    not_measured_from_data,
    read_results,
    report_markdown,
    write_results,
)


def claim(claim_id="C1", verdict="holds", rule="a rule"):
    return Claim(claim_id, "§4.2", "a statement", rule, "1.0 ± 0.1", verdict)


def test_a_claim_has_one_of_three_verdicts():
    with pytest.raises(ValueError, match="verdict"):
        claim(verdict="maybe")


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (None, 3, "—"),
        (0.123456, 3, "0.123"),
        (0.0, 4, "0"),
        (1.1e-22, 3, "1.1e-22"),
        (math.inf, 3, "inf"),
        ((2.1234, 0.04567), 3, "2.12 ± 0.046"),
        ((2.1234, math.nan), 3, "2.12 (one seed)"),
        ((0.993307, 0.0), 6, "0.993307 ± 0"),
    ],
)
def test_format_number(value, digits, text):
    assert format_number(value, digits) == text


def test_markdown_table_escapes_bars_inside_cells():
    assert markdown_table(["a", "b"], [["|Y|", "2"]]) == "| a | b |\n|---|---|\n| \\|Y\\| | 2 |"


def test_shared_verdicts():
    assert holds_if(True) == "holds" and holds_if(False) == "does not hold"
    assert combine(["holds", "holds"]) == "holds"
    assert combine(["holds", "undecided"]) == "partly" and combine(["does not hold", "holds"]) == "partly"
    assert combine(["undecided", "undecided"]) == "undecided"  # more seeds could decide each
    assert combine(["undecided", "does not hold"]) == "does not hold"
    assert combine([]) == "does not hold"  # nothing measured holds nothing


def test_claims_section_counts_verdicts_and_states_each_rule_once():
    claims = [claim("C1"), claim("C1", "partly"), claim("C2", "does not hold", "another rule")]
    lines = claims_markdown(claims)
    assert lines[0] == "Of 3 measured claims, 1 holds, 1 holds partly, 0 are undecided and 1 does not."
    assert lines.count("- C1: a rule") == 1 and "- C2: another rule" in lines
    assert claims_markdown([]) == ["No claim of the paper can be measured with this configuration."]


def test_undecided_claims_are_counted_apart_and_unmeasured_ones_listed_with_the_reason():
    missing = [NotMeasured("P6", "[D3'] π(c) falls with τ", "a claim across τ: needs at least two τ; ran τ = 3")]
    lines = claims_markdown([claim("C1"), claim("C2", "undecided")], missing)
    assert lines[0] == ("Of 2 measured claims, 1 holds, 0 hold partly, 1 is undecided (intervals too wide to decide: "
                        "more seeds needed) and 0 do not; 1 is not measured (below).")
    assert lines[-1] == "- P6 [D3'] π(c) falls with τ — a claim across τ: needs at least two τ; ran τ = 3"
    assert claims_markdown([], missing)[-1] == lines[-1]
    assert not_measured_from_data({"claims_not_measured": claims_as_data(missing)}) == missing
    assert not_measured_from_data({}) == []  # results written before unmeasured claims were recorded


def test_needs_several_taus():
    assert needs_several_taus([0.1, 1.0]) is None
    assert needs_several_taus([3.0, 3.0]) == "a claim across τ: needs at least two τ; ran τ = 3"


def test_report_sections_come_in_order():
    text = report_markdown(title="T", introduction=["intro"], setup=["setup"], claims=[claim()],
                           sections=[("First", ["one"]), ("Second", ["two"])])
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# T", "## Setup", "## Claims", "## First", "## Second"] and text.endswith("two\n")


def test_results_round_trip_with_their_claims_and_non_finite_numbers(tmp_path):
    results = {"kl": math.inf, "half_width": math.nan, "claims": claims_as_data([claim()])}
    write_results(tmp_path, results, "# report\n")
    assert json.loads((tmp_path / "results.json").read_text())["kl"] == "inf"
    back = read_results(tmp_path / "results.json")
    assert back["kl"] == math.inf and math.isnan(back["half_width"])
    assert claims_from_data(back["claims"]) == [claim()]
    assert (tmp_path / "REPORT.md").read_text() == "# report\n"


def test_largest_is_nan_when_any_value_is_so_a_claim_cannot_hold_on_a_missing_measurement():
    import math

    from psipo.experiments.paper.claims import same_optimum, within_tolerance

    assert largest([0.5, 0.0, 0.25]) == 0.5
    assert math.isnan(largest([0.0, math.nan])) and max([0.0, math.nan]) == 0.0  # what max would do
    assert within_tolerance(largest([0.0, math.nan])) == "does not hold"
    assert same_optimum([0.0, math.nan]) == "does not hold"


def test_an_experiment_says_why_its_claims_are_undecided():
    """The summary gave every undecided claim the lab's reason (intervals too wide, more seeds); the
    reproduction's are undecided because training was too short."""
    lines = claims_markdown([claim("C2", "undecided")], undecided_means="training too short to decide")
    assert lines[0] == "Of 1 measured claims, 0 hold, 0 hold partly, 1 is undecided (training too short to decide) and 0 do not."
