"""How every experiment reports: claims with verdicts, REPORT.md, results.json.

An experiment measures each claim of the paper it can, decides a :data:`Verdict` with a named
rule (a small function of the numbers, stated in words in the claim), and writes

* ``results.json`` — every number, the claims included; numbers that are not finite are the
  strings "inf", "-inf" and "nan" (:mod:`psipo._json`), which :func:`read_results` decodes;
* ``REPORT.md`` — :func:`report_markdown`: title, introduction, ``## Setup``, ``## Claims``
  (a summary of the verdicts, the claims table, the verdict rules and the claims not measured),
  then the experiment's own sections. Numbers are written by :func:`format_number` and tables
  by :func:`markdown_table`.

A claim the configuration cannot test (its losses, datasets or sections were not run, or it is
about how something changes with τ and fewer than two τ were run) gets no verdict: it is left
out of the table and listed, with the reason, as :class:`NotMeasured` (``results.json``:
``claims_not_measured``). A claim that was measured but whose intervals are too wide to decide
either way gets the verdict "undecided" (for lack of seeds or precision), never "holds".
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from psipo._io import atomic_write_text
from psipo._json import from_json_data, to_json_data
from psipo.stats import Interval

Verdict = Literal["holds", "partly", "undecided", "does not hold"]
VERDICTS: tuple[Verdict, ...] = ("holds", "partly", "undecided", "does not hold")
""""undecided": measured, but the numbers cannot decide: the confidence intervals are too wide (more
seeds needed), or, for a claim on where training converges, the curves are still moving (more steps
needed); each experiment says which (``undecided_means`` of :func:`report_markdown`)."""

UNDECIDED_BY_INTERVALS = "intervals too wide to decide: more seeds needed"

RESULTS_FILE = "results.json"
REPORT_FILE = "REPORT.md"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper, what was measured and whether it holds."""

    id: str
    """Short label shared by the rows of one claim measured in several settings (e.g. "C1")."""
    section: str
    """Where the paper makes the claim (e.g. "§4.2, §5.3.1")."""
    statement: str
    """The claim, with the setting it was measured in."""
    rule: str
    """The verdict rule, in words."""
    measured: str
    """The numbers the verdict was decided from."""
    verdict: Verdict
    """What the rule says of the numbers."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclasses.dataclass(frozen=True)
class NotMeasured:
    """A claim the configuration could not test, and why: it gets no verdict."""

    id: str
    """The claim's label (as :attr:`Claim.id`)."""
    statement: str
    """The claim, with the setting it would be measured in."""
    reason: str
    """What the configuration lacks (e.g. "needs at least two τ; ran τ = 3")."""


def needs_several_taus(taus: Sequence[float]) -> str | None:
    """Why a claim about how something changes with τ cannot be measured on ``taus``, or None
    when at least two distinct τ were run."""
    distinct = sorted(set(taus))
    if len(distinct) >= 2:
        return None
    return "a claim across τ: needs at least two τ; ran τ = " + ", ".join(f"{t:g}" for t in distinct)


def largest(values: Iterable[float]) -> float:
    """The largest of ``values``, NaN if any is NaN: ``max`` skips a NaN that is not first, and
    a gap that could not be measured must not let a claim hold."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def holds_if(condition: bool) -> Verdict:
    """"holds" or "does not hold"."""
    return "holds" if condition else "does not hold"


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict from several comparisons, each "holds", "undecided" (means so ordered,
    intervals overlapping) or "does not hold": holds when every one holds, partly when some do;
    with none, undecided when every one is undecided (more seeds could decide each), else does
    not hold. Nothing measured holds nothing."""
    wins = sum(verdict == "holds" for verdict in verdicts)
    if wins:
        return "holds" if wins == len(verdicts) else "partly"
    return "undecided" if verdicts and all(verdict == "undecided" for verdict in verdicts) else "does not hold"


def format_number(value: float | Interval | None, digits: int = 3) -> str:
    """``1.23``, ``1.23 ± 0.04`` for a (mean, CI half-width), ``1.23 (one seed)`` when the
    half-width is NaN, ``—`` for a missing value; ``digits`` significant digits for the mean."""
    if value is None:
        return "—"
    if isinstance(value, tuple):
        mean, half = value
        if math.isnan(half):
            return f"{mean:.{digits}g} (one seed)"
        return f"{mean:.{digits}g} ± {half:.2g}"
    return f"{value:.{digits}g}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; a "|" inside a cell (as in |Y|) is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def claims_markdown(
    claims: Sequence[Claim], not_measured: Sequence[NotMeasured] = (), undecided_means: str = UNDECIDED_BY_INTERVALS
) -> list[str]:
    """The ``## Claims`` section: how many hold (``undecided_means``: why a claim is undecided),
    the table, each verdict rule once, and the claims not measured with the reason."""
    unmeasured = _not_measured_markdown(not_measured)
    if not claims:
        return ["No claim of the paper can be measured with this configuration.", *unmeasured]
    holds, partly, undecided, fails = (sum(claim.verdict == verdict for claim in claims) for verdict in VERDICTS)
    rules: dict[str, str] = {}
    for claim in claims:
        rules.setdefault(claim.id, claim.rule)
    return [
        f"Of {len(claims)} measured claims, {holds} {_verb('holds', holds)}, {partly} {_verb('holds', partly)} "
        f"partly, {undecided} {_verb('is', undecided)} undecided"
        + (f" ({undecided_means})" if undecided else "")
        + f" and {fails} {_verb('does', fails)} not"
        + (f"; {len(not_measured)} {_verb('is', len(not_measured))} not measured (below)." if not_measured else "."),
        "",
        markdown_table(
            ["#", "paper", "claim", "measured", "verdict"],
            [[c.id, c.section, c.statement, c.measured, f"**{c.verdict}**"] for c in claims],
        ),
        "",
        "Verdict rules:",
        "",
        *(f"- {claim_id}: {rule}" for claim_id, rule in rules.items()),
        *unmeasured,
    ]


def _not_measured_markdown(not_measured: Sequence[NotMeasured]) -> list[str]:
    if not not_measured:
        return []
    return [
        "",
        "Not measured with this configuration (no verdict):",
        "",
        *(f"- {item.id} {item.statement} — {item.reason}" for item in not_measured),
    ]


def _verb(singular: str, count: int) -> str:
    """The verb agreeing with ``count``: "holds"/"hold", "does"/"do", "is"/"are"."""
    return singular if count == 1 else {"holds": "hold", "does": "do", "is": "are"}[singular]


def report_markdown(
    *,
    title: str,
    introduction: Sequence[str],
    setup: Sequence[str],
    claims: Sequence[Claim],
    sections: Sequence[tuple[str, Sequence[str]]],
    not_measured: Sequence[NotMeasured] = (),
    undecided_means: str = UNDECIDED_BY_INTERVALS,
) -> str:
    """REPORT.md: ``# title``, the introduction, ``## Setup``, ``## Claims`` (with the claims
    ``not_measured``; ``undecided_means``: why a claim is undecided), then ``sections`` as
    (heading, lines) pairs."""
    lines = [f"# {title}", "", *introduction, "", "## Setup", "", *setup, "", "## Claims", "",
             *claims_markdown(claims, not_measured, undecided_means)]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", *body]
        while lines[-1] == "":  # a body may end with a blank line; one separates the sections
            lines.pop()
    return "\n".join(lines) + "\n"


def claims_as_data(claims: Sequence[Claim | NotMeasured]) -> list[dict[str, str]]:
    """The claims (or the claims not measured) as results.json holds them."""
    return [dataclasses.asdict(claim) for claim in claims]


def claims_from_data(rows: Sequence[dict[str, str]]) -> list[Claim]:
    """The claims of a results dictionary (as :func:`claims_as_data` wrote them)."""
    return [Claim(**row) for row in rows]


def not_measured_from_data(results: dict[str, Any]) -> list[NotMeasured]:
    """The claims a results dictionary did not measure (none in results written before they were recorded)."""
    return [NotMeasured(**row) for row in results.get("claims_not_measured", [])]


def write_results(out_dir: str | Path, results: dict[str, Any], report: str) -> None:
    """Write ``results.json`` (non-finite numbers as strings) and ``REPORT.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    text = json.dumps(to_json_data(results), indent=2, allow_nan=False)  # a NaN left raw is a bug
    atomic_write_text(out_dir / RESULTS_FILE, text + "\n")
    atomic_write_text(out_dir / REPORT_FILE, report)


def read_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` written by :func:`write_results`, with its non-finite numbers decoded."""
    return from_json_data(json.loads(Path(path).read_text(encoding="utf-8")))
