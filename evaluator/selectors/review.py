"""Reads for review and adjudication: the flagged answers and skipped pairs researchers review, the comparisons
whose judgements disagree, and the adjudicated outcomes the statistics and the DPO dataset can use instead."""

import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from django.core.paginator import Page, Paginator
from django.db.models import F, Q, QuerySet, Value

from evaluator.models import (
    OVERALL,
    Adjudication,
    AnswerFlag,
    Assignment,
    Campaign,
    Comparison,
    CriterionChoice,
    Judgement,
)

REVIEW_KINDS = ("flag", "skip")
REVIEW_STATES = ("open", "resolved", "dismissed", "all")
REVIEW_PER_PAGE = 25
# What a review row shows of a flag and of a skip: campaign, prompt, annotator, answer and decision, in one query.
_FLAG_RELATED = (
    "assignment__annotator",
    "assignment__comparison__campaign",
    "assignment__comparison__prompt",
    "candidate__variant",
    "resolution__resolved_by",
)
_SKIP_RELATED = ("annotator", "comparison__campaign", "comparison__prompt", "skip_resolution__resolved_by")


@dataclass(frozen=True)
class ReviewFilters:
    """Which review items the review page lists: `kind` flag or skip (None: both); `reason` a flag reason (only
    flags have one from a list; skips give free text); `state` open, resolved, dismissed or all."""

    campaign_id: int | None = None
    kind: str | None = None
    reason: str | None = None
    state: str = "open"


def _flags(filters: ReviewFilters) -> QuerySet[AnswerFlag]:
    flags = AnswerFlag.objects.all()
    if filters.campaign_id is not None:
        flags = flags.filter(assignment__comparison__campaign_id=filters.campaign_id)
    if filters.reason:
        flags = flags.filter(reason=filters.reason)
    return flags.filter(_state(filters.state, "resolution"))


def _skips(filters: ReviewFilters) -> QuerySet[Assignment]:
    skips = Assignment.objects.filter(skipped_at__isnull=False)
    if filters.campaign_id is not None:
        skips = skips.filter(comparison__campaign_id=filters.campaign_id)
    return skips.filter(_state(filters.state, "skip_resolution"))


def _state(state: str, relation: str) -> Q:
    if state == "open":
        return Q(**{f"{relation}__isnull": True})
    if state in ("resolved", "dismissed"):
        return Q(**{f"{relation}__status": state})
    return Q()


def review_items_page(*, filters: ReviewFilters, page_number: int | str | None) -> Page:
    """One page of flagged answers and skipped pairs, newest first, each a dict with `kind` ("flag"/"skip") and
    `item` (the AnswerFlag or the skipped Assignment with its campaign, prompt, annotator and resolution read).
    A count, one query for the page's keys, and at most one per kind for the rows: no query per row."""
    keyed: list[QuerySet[Any, Any]] = []
    if filters.kind in (None, "flag"):
        keyed.append(_flags(filters).annotate(kind=Value("flag"), at=F("created_at")).values_list("pk", "kind", "at"))
    # A flag reason asks for flags: skips have none.
    if filters.kind in (None, "skip") and not filters.reason:
        keyed.append(_skips(filters).annotate(kind=Value("skip"), at=F("skipped_at")).values_list("pk", "kind", "at"))
    if not keyed:
        return Paginator([], REVIEW_PER_PAGE).get_page(1)
    union = keyed[0].union(*keyed[1:], all=True) if len(keyed) > 1 else keyed[0]
    page = Paginator(union.order_by("-at", "-pk"), REVIEW_PER_PAGE).get_page(page_number)
    keys = list(page.object_list)
    flag_ids = [pk for pk, kind, _ in keys if kind == "flag"]
    skip_ids = [pk for pk, kind, _ in keys if kind == "skip"]
    flags = AnswerFlag.objects.filter(pk__in=flag_ids).select_related(*_FLAG_RELATED).in_bulk() if flag_ids else {}
    skips = Assignment.objects.filter(pk__in=skip_ids).select_related(*_SKIP_RELATED).in_bulk() if skip_ids else {}
    page.object_list = [{"kind": kind, "item": flags[pk] if kind == "flag" else skips[pk]} for pk, kind, _ in keys]
    return page


def review_open_counts() -> dict[str, int]:
    """Open flags and open skips over every campaign: the review page's header."""
    return {
        "flags": AnswerFlag.objects.filter(resolution__isnull=True).count(),
        "skips": Assignment.objects.filter(skipped_at__isnull=False, skip_resolution__isnull=True).count(),
    }


# Adjudication ------------------------------------------------------------------------------------------------

ADJUDICATION_RULES = {
    "any": "Any disagreement",
    "no_majority": "No strict majority",
}
ANY_CRITERION = "any"
ADJUDICATION_SHOWN = ("pending", "adjudicated", "all")


@dataclass(frozen=True)
class AdjudicationRule:
    """Which comparisons are disputed. `rule` "any": two or more different outcomes among the judgements of a
    criterion; "no_majority": no outcome holds more than half of them. `criterion`: a rubric slug, "overall",
    or "any" (a comparison is disputed when any criterion is). Only people's judgements of items that are not
    gold count, and only comparisons with at least two of them."""

    rule: str = "any"
    criterion: str = OVERALL

    def disputes(self, tally: Mapping[str, int]) -> bool:
        total = sum(tally.values())
        if total < 2:
            return False
        if self.rule == "no_majority":
            return max(tally.values()) * 2 <= total
        return sum(1 for count in tally.values() if count) > 1


@dataclass
class DisputedComparison:
    """A comparison in the adjudication queue: its tallies per criterion ({criterion: {outcome: count}}), the
    criteria the rule finds disputed, and the adjudications already recorded ({criterion: Adjudication})."""

    comparison: Comparison
    tallies: dict[str, dict[str, int]]
    disputed: list[str]
    adjudications: dict[str, Adjudication] = field(default_factory=dict)

    @property
    def pending(self) -> list[str]:
        return [criterion for criterion in self.disputed if criterion not in self.adjudications]


def _tallies(campaign: Campaign) -> dict[int, dict[str, Counter[str]]]:
    rows = (
        CriterionChoice.objects.filter(
            judgement__comparison__campaign=campaign,
            judgement__simulated=False,
            judgement__comparison__gold_outcome__isnull=True,
        )
        .values_list("judgement__comparison_id", "criterion", "outcome")
        .order_by()
    )
    tallies: dict[int, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for comparison_id, criterion, outcome in rows.iterator(chunk_size=20_000):
        tallies[comparison_id][criterion][outcome] += 1
    return tallies


def disputed_comparison_ids(*, campaign: Campaign, rule: AdjudicationRule) -> dict[int, list[str]]:
    """{comparison id: its disputed criteria in rubric order} under `rule`, in comparison id order."""
    order = campaign.criterion_slugs
    disputed: dict[int, list[str]] = {}
    for comparison_id, by_criterion in sorted(_tallies(campaign).items()):
        wanted = order if rule.criterion == ANY_CRITERION else [rule.criterion]
        found = [slug for slug in wanted if slug in by_criterion and rule.disputes(by_criterion[slug])]
        if found:
            disputed[comparison_id] = found
    return disputed


def adjudication_queue_page(
    *, campaign: Campaign, rule: AdjudicationRule, shown: str = "pending", page_number: int | str | None = None
) -> Page:
    """One page of the campaign's disputed comparisons (DisputedComparison) under `rule`: `shown` "pending" (a
    disputed criterion is not adjudicated yet), "adjudicated" (every disputed criterion is) or "all". The tallies
    in one pass over the campaign's choices, then one query for the adjudications and one for the page's rows."""
    disputed = disputed_comparison_ids(campaign=campaign, rule=rule)
    decided: dict[int, set[str]] = defaultdict(set)
    for comparison_id, criterion in Adjudication.objects.filter(comparison__campaign=campaign).values_list(
        "comparison_id", "criterion"
    ):
        decided[comparison_id].add(criterion)
    # Any: the page's ids become its rows below.
    ids: list[Any]
    if shown == "pending":
        ids = [pk for pk, found in disputed.items() if set(found) - decided[pk]]
    elif shown == "adjudicated":
        ids = [pk for pk, found in disputed.items() if not set(found) - decided[pk]]
    else:
        ids = list(disputed)
    page = Paginator(ids, REVIEW_PER_PAGE).get_page(page_number)
    page_ids = list(page.object_list)
    comparisons = (
        Comparison.objects.filter(pk__in=page_ids).select_related("prompt", "variant_a", "variant_b").in_bulk()
    )
    adjudications: dict[int, dict[str, Adjudication]] = defaultdict(dict)
    for adjudication in Adjudication.objects.filter(comparison_id__in=page_ids).select_related("decided_by"):
        adjudications[adjudication.comparison_id][adjudication.criterion] = adjudication
    tallies = _page_tallies(page_ids)
    page.object_list = [
        DisputedComparison(
            comparison=comparisons[pk], tallies=tallies[pk], disputed=disputed[pk], adjudications=adjudications[pk]
        )
        for pk in page_ids
    ]
    return page


def _page_tallies(comparison_ids: Iterable[int]) -> dict[int, dict[str, dict[str, int]]]:
    """{comparison id: {criterion: {"a": n, "tie": n, "b": n}}} of people's judgements."""
    rows = CriterionChoice.objects.filter(
        judgement__comparison_id__in=list(comparison_ids), judgement__simulated=False
    ).values_list("judgement__comparison_id", "criterion", "outcome")
    tallies: dict[int, dict[str, dict[str, int]]] = defaultdict(dict)
    for comparison_id, criterion, outcome in rows:
        counts = tallies[comparison_id].setdefault(criterion, {"a": 0, "tie": 0, "b": 0})
        counts[outcome] += 1
    return tallies


def comparison_for_review(*, campaign: Campaign, comparison_id: int) -> Comparison | None:
    """The comparison with its prompt, answers and variants, or None when it is not the campaign's."""
    return (
        Comparison.objects.filter(campaign=campaign, pk=comparison_id)
        .select_related("prompt", "variant_a", "variant_b", "candidate_a", "candidate_b")
        .first()
    )


def comparison_judgements(*, comparison: Comparison) -> list[Judgement]:
    """The comparison's judgements (people's and simulated, marked), oldest first, each with its annotator, its
    choices by criterion as `by_criterion` ({slug: CriterionChoice}) and the flags its annotator raised on the
    pair as `flags` (AnswerFlag with `side` "a"/"b" set). Three queries."""
    judgements = list(
        Judgement.objects.filter(comparison=comparison)
        .select_related("annotator", "assignment")
        .prefetch_related("choices")
        .order_by("created_at", "pk")
    )
    flags: dict[int, list[AnswerFlag]] = defaultdict(list)
    for flag in AnswerFlag.objects.filter(assignment__comparison=comparison).order_by("pk"):
        flag.side = "a" if flag.candidate_id == comparison.candidate_a_id else "b"  # type: ignore[attr-defined]
        flags[flag.assignment_id].append(flag)
    for judgement in judgements:
        judgement.by_criterion = {choice.criterion: choice for choice in judgement.choices.all()}  # type: ignore[attr-defined]
        judgement.flags = flags[judgement.assignment_id]  # type: ignore[attr-defined]
    return judgements


def comparison_adjudications(*, comparison: Comparison) -> dict[str, Adjudication]:
    return {
        adjudication.criterion: adjudication
        for adjudication in Adjudication.objects.filter(comparison=comparison).select_related("decided_by")
    }


def adjudicated_outcomes(*, campaign: Campaign, criteria: Iterable[str] | None = None) -> dict[tuple[int, str], str]:
    """{(comparison id, criterion): adjudicated outcome} of the campaign, optionally only for `criteria`."""
    rows = Adjudication.objects.filter(comparison__campaign=campaign)
    if criteria is not None:
        rows = rows.filter(criterion__in=list(criteria))
    return {
        (pk, criterion): outcome for pk, criterion, outcome in rows.values_list("comparison_id", "criterion", "outcome")
    }


def votes_adjudicated(votes: pd.DataFrame, decided: Mapping[tuple[int, str], str]) -> pd.DataFrame:
    """The votes with each adjudicated (comparison, criterion)'s rows carrying the adjudicated outcome.

    Every judgement of such a comparison keeps its row (so a comparison weighs what it weighed before, as if its
    annotators had agreed with the adjudicator); only the outcome changes. Pure: no database."""
    if not decided or votes.empty:
        return votes
    keys = pd.Series(list(zip(votes["comparison_id"], votes["criterion"], strict=True)), index=votes.index)
    replaced = keys.map(decided)
    out = votes.copy()
    out["outcome"] = replaced.where(replaced.notna(), out["outcome"])
    return out


def campaign_adjudication_count(*, campaign: Campaign) -> int:
    return Adjudication.objects.filter(comparison__campaign=campaign).count()


def review_item_flag(*, flag_id: int) -> AnswerFlag:
    """One flagged answer with what its review row shows."""
    return AnswerFlag.objects.select_related(*_FLAG_RELATED).get(pk=flag_id)


def review_item_skip(*, assignment_id: int) -> Assignment:
    """One skipped pair with what its review row shows."""
    return Assignment.objects.select_related(*_SKIP_RELATED).get(pk=assignment_id)


# The review export -------------------------------------------------------------------------------------------

REVIEW_FORMATS = ("csv", "jsonl", "parquet")
REVIEW_COLUMNS = [
    "kind",
    "campaign",
    "comparison_id",
    "prompt_id",
    "prompt",
    "annotator",
    "annotator_id",
    "created_at",
    "side",
    "variant",
    "reason",
    "note",
    "status",
    "resolved_by",
    "resolved_at",
    "resolution_note",
]
_REVIEW_SCHEMA = pa.schema(
    [(name, pa.int64() if name in ("comparison_id", "annotator_id") else pa.string()) for name in REVIEW_COLUMNS]
)


def review_items_rows(*, campaign: Campaign) -> list[dict[str, Any]]:
    """The campaign's flagged answers and skipped pairs, oldest first, as rows of REVIEW_COLUMNS (docs/formats.md).
    Two queries."""
    rows = []
    flags = (
        AnswerFlag.objects.filter(assignment__comparison__campaign=campaign)
        .select_related(*_FLAG_RELATED)
        .order_by("created_at", "pk")
    )
    for flag in flags:
        comparison = flag.assignment.comparison
        side = "a" if flag.candidate_id == comparison.candidate_a_id else "b"
        rows.append(
            _review_row(
                "flag",
                campaign,
                comparison,
                flag.assignment.annotator,
                flag.created_at,
                getattr(flag, "resolution", None),
            )
            | {"side": side, "variant": flag.candidate.variant.name, "reason": flag.reason, "note": flag.note}
        )
    skips = (
        Assignment.objects.filter(comparison__campaign=campaign, skipped_at__isnull=False)
        .select_related(*_SKIP_RELATED)
        .order_by("skipped_at", "pk")
    )
    for skip in skips:
        assert skip.skipped_at is not None  # filtered above
        rows.append(
            _review_row(
                "skip",
                campaign,
                skip.comparison,
                skip.annotator,
                skip.skipped_at,
                getattr(skip, "skip_resolution", None),
            )
            | {"side": "", "variant": "", "reason": skip.skip_reason, "note": ""}
        )
    return sorted(rows, key=lambda row: row["created_at"])


def _review_row(
    kind: str, campaign: Campaign, comparison: Comparison, annotator: Any, at: datetime, decision: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "campaign": campaign.name,
        "comparison_id": comparison.pk,
        "prompt_id": comparison.prompt.external_id,
        "prompt": comparison.prompt.text,
        "annotator": annotator.get_username(),
        "annotator_id": annotator.pk,
        "created_at": at.astimezone(UTC).isoformat(),
        "status": decision.status if decision else "open",
        "resolved_by": decision.resolved_by.get_username() if decision else "",
        "resolved_at": decision.resolved_at.astimezone(UTC).isoformat() if decision else "",
        "resolution_note": decision.note if decision else "",
    }


def review_items_export(*, campaign: Campaign, file_format: str) -> Iterator[bytes]:
    """The review rows as CSV (header line, RFC 4180), JSON Lines or Parquet; ValueError for another format."""
    if file_format not in REVIEW_FORMATS:
        raise ValueError(f"unknown format {file_format!r}; use one of {', '.join(REVIEW_FORMATS)}")
    rows = review_items_rows(campaign=campaign)
    if file_format == "jsonl":
        yield "".join(
            json.dumps({k: row[k] for k in REVIEW_COLUMNS}, ensure_ascii=False) + "\n" for row in rows
        ).encode()
        return
    table = pa.Table.from_pylist([{k: row[k] for k in REVIEW_COLUMNS} for row in rows], schema=_REVIEW_SCHEMA)
    buffer = io.BytesIO()
    if file_format == "csv":
        pa_csv.write_csv(table, buffer)
    else:
        pq.write_table(table, buffer, compression="zstd")
    yield buffer.getvalue()
