"""Every read that is more than a `get`: keyword-only, typed, named <noun>_<verb>."""

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import date
from typing import Any, Self, cast

import numpy as np
import pandas as pd
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, F, FilteredRelation, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import Length

from evaluator.batching import batched
from evaluator.models import (
    JUDGE_CLOSE,
    OVERALL,
    Assignment,
    Campaign,
    CampaignMember,
    Candidate,
    Comparison,
    CriterionChoice,
    GenerationJob,
    Judgement,
    ModelVariant,
    Outcome,
    Participation,
    Prompt,
    StatisticsSnapshot,
    TrainingJob,
)
from evaluator.roles import ROLES
from evaluator.selectors.qualification import qualification_standing
from evaluator.selectors.rating import campaign_identical_pairs, campaign_percent_done, campaigns_servable
from evaluator.selectors.review import adjudicated_outcomes, votes_adjudicated
from evaluator.stats import statistics as statistics_stats
from evaluator.stats.quality import JUDGEMENT_COLUMNS, WARNING_LABELS, annotator_quality
from evaluator.stats.statistics import (
    STYLE_COLUMNS,
    STYLE_FEATURES,
    VOTE_COLUMNS,
    CampaignStatistics,
    markdown_style_counts,
    pairwise_table,
    prompt_majority,
)


@dataclass(frozen=True)
class VoteFilters:
    """Which judgements the statistics count."""

    annotator_group: str | None = None
    since: date | None = None
    until: date | None = None
    exclude_flagged: bool = False
    exclude_gold: bool = True
    # Judgements of a scripted annotator (bench/loop.py) are no human's: counted only on request.
    include_simulated: bool = False
    # Where a researcher adjudicated a comparison's criterion, its judgements count with the adjudicated outcome.
    adjudicated: bool = False
    # Only judgements made under this version (number) of the campaign's guidelines; None: any, unversioned too.
    guideline_version: int | None = None
    # Only judgements of prompts tagged with this category.
    category: str | None = None
    # Leave out the annotators the leave-one-out likelihood test flags (evaluator.stats.statistics.annotator_outliers).
    exclude_outliers: bool = False

    def to_json(self) -> dict[str, Any]:
        """The filters as plain JSON (dates as YYYY-MM-DD), as a statistics snapshot stores them."""
        return {key: value.isoformat() if isinstance(value, date) else value for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """The filters back from `to_json`'s form; ValueError naming the first bad key or value."""
        if not isinstance(data, dict):
            raise ValueError(f"filters must be an object, got {type(data).__name__}")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown filter {unknown[0]!r}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("since", "until"):
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{name} must be a YYYY-MM-DD date or null, got {value!r}")
                values[name] = date.fromisoformat(value) if value else None
            elif name == "annotator_group":
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"annotator_group must be a group name or null, got {value!r}")
                values[name] = value or None
            elif name == "category":
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"category must be a category name or null, got {value!r}")
                values[name] = value or None
            elif name == "guideline_version":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    raise ValueError(f"guideline_version must be a version number (1, 2, …) or null, got {value!r}")
                values[name] = value
            elif isinstance(value, bool):
                values[name] = value
            else:
                raise ValueError(f"{name} must be true or false, got {value!r}")
        filters = cls(**values)
        if filters.since and filters.until and filters.since > filters.until:
            raise ValueError("since is after until")
        return filters


# Column of the votes frame → the ORM path it is read from (one row per judgement × criterion).
_VOTE_FIELDS = {
    "judgement_id": "judgement_id",
    "comparison_id": "judgement__comparison_id",
    "prompt_id": "judgement__comparison__prompt_id",
    "annotator_id": "judgement__annotator_id",
    "criterion": "criterion",
    "variant_a": "judgement__comparison__variant_a_id",
    "variant_b": "judgement__comparison__variant_b_id",
    "outcome": "outcome",
    "left_is_a": "judgement__assignment__left_is_a",
    "length_a": "length_a",
    "length_b": "length_b",
    "time_on_task_ms": "judgement__time_on_task_ms",
    "created_at": "judgement__created_at",
    "category": "judgement__comparison__prompt__category",
    "candidate_a": "judgement__comparison__candidate_a_id",
    "candidate_b": "judgement__comparison__candidate_b_id",
}


def judgement_choices(*, campaign: Campaign, filters: VoteFilters | None = None) -> QuerySet[CriterionChoice]:
    """The campaign's criterion choices under `filters`; None means every judgement, gold items included."""
    choices = CriterionChoice.objects.filter(judgement__comparison__campaign=campaign)
    if filters is None:
        return choices
    if filters.annotator_group:
        choices = choices.filter(judgement__annotator__groups__name=filters.annotator_group)
    if filters.since:
        choices = choices.filter(judgement__created_at__date__gte=filters.since)
    if filters.until:
        choices = choices.filter(judgement__created_at__date__lte=filters.until)
    if filters.exclude_flagged:
        choices = choices.filter(judgement__annotator__flag__isnull=True)
    if filters.exclude_gold:
        choices = choices.filter(judgement__comparison__gold_outcome__isnull=True)
    if not filters.include_simulated:
        choices = choices.filter(judgement__simulated=False)
    if filters.guideline_version is not None:
        choices = choices.filter(judgement__guideline_version__number=filters.guideline_version)
    if filters.category:
        choices = choices.filter(judgement__comparison__prompt__category=filters.category)
    return choices


def votes_frame(*, campaign: Campaign, filters: VoteFilters | None = None) -> pd.DataFrame:
    """One row per judgement × criterion, the columns of VOTE_COLUMNS (see evaluator/stats/statistics.py)."""
    choices = judgement_choices(campaign=campaign, filters=filters or VoteFilters())
    rows = choices.annotate(
        length_a=Length("judgement__comparison__candidate_a__text"),
        length_b=Length("judgement__comparison__candidate_b__text"),
    ).values_list(*_VOTE_FIELDS.values())
    frame = pd.DataFrame.from_records(list(rows.iterator(chunk_size=20_000)), columns=list(_VOTE_FIELDS))
    if filters is not None and filters.adjudicated:
        frame = votes_adjudicated(frame, adjudicated_outcomes(campaign=campaign))
    frame = votes_with_markdown_counts(frame, campaign=campaign)
    return frame[[*VOTE_COLUMNS, "category", *STYLE_COLUMNS[2:]]]


def votes_with_markdown_counts(frame: pd.DataFrame, *, campaign: Campaign) -> pd.DataFrame:
    """Add the markdown style columns (headers_a, …, bold_b) from the texts of the frame's candidate_a/b answers."""
    counts = candidate_markdown_counts(campaign=campaign)
    for side in ("a", "b"):
        position = counts.index.get_indexer(pd.Index(frame[f"candidate_{side}"]))
        for feature in counts.columns:
            frame[f"{feature}_{side}"] = counts[feature].to_numpy()[position] if len(counts) else 0
    return frame


def candidate_markdown_counts(*, campaign: Campaign) -> pd.DataFrame:
    """Headers, list items and bold spans of every answer of the campaign, indexed by candidate id."""
    features = [feature for feature in STYLE_FEATURES if feature != "length"]
    texts = Candidate.objects.filter(prompt__campaign=campaign).values_list("pk", "text")
    counts = {pk: markdown_style_counts(text) for pk, text in texts.iterator(chunk_size=2_000)}
    return pd.DataFrame.from_dict(counts, orient="index", columns=features).astype(np.int64)


def campaign_pairwise_stats(*, campaign: Campaign) -> list[dict[str, Any]]:
    """The pairwise table with variant names and criterion labels, in rubric order with overall last."""
    table = pairwise_table(votes_frame(campaign=campaign))
    names = dict(ModelVariant.objects.values_list("pk", "name"))
    labels = {criterion["slug"]: criterion["label"] for criterion in campaign.criteria} | {OVERALL: "Overall"}
    order = {slug: index for index, slug in enumerate(campaign.criterion_slugs)}
    # The columns are named by strings; pandas' types say only that record keys are hashable.
    rows = cast(list[dict[str, Any]], table.to_dict("records"))
    for row in rows:
        row["variant_a_name"] = names.get(row["variant_a"], "?")
        row["variant_b_name"] = names.get(row["variant_b"], "?")
        row["criterion_label"] = labels.get(row["criterion"], row["criterion"])
    rows.sort(key=lambda row: (row["variant_a"], row["variant_b"], order.get(row["criterion"], 99)))
    return rows


def decisive_vote_count(*, campaign: Campaign, criterion: str = OVERALL) -> int:
    """People's decisive votes on `criterion`: what a retrain learns from by default (no simulated ones)."""
    return (
        CriterionChoice.objects.filter(
            judgement__comparison__campaign=campaign, criterion=criterion, judgement__simulated=False
        )
        .exclude(outcome=Outcome.TIE)
        .count()
    )


def campaign_progress(*, campaign: Campaign) -> dict[str, int]:
    """The campaign page's header counts. Comparisons of two identical answers are never served, so they and
    their judgements stay out of `comparisons`, `judgements` and `wanted`; `identical` says how many there are.
    So do, in a judge-screened campaign, the pairs its judge did not find close (`screened_out`)."""
    counts = Comparison.objects.filter(campaign=campaign).aggregate(
        comparisons=Count("pk", distinct=True),
        judgements=Count("judgements", distinct=True),
    )
    identical = campaign_identical_pairs(campaign=campaign)
    counts["identical"] = identical.comparisons
    counts["comparisons"] -= identical.comparisons
    counts["judgements"] -= identical.judgements
    counts["screened_out"] = 0
    if campaign.judge_screening:
        # A judge-screened campaign serves only the pairs its judge found close (and gold items): the others,
        # and the pairs it has not judged yet, are not wanted until it does.
        screened = (
            Comparison.objects.filter(campaign=campaign, gold_outcome__isnull=True)
            .exclude(judge_outcome__in=JUDGE_CLOSE)
            .aggregate(comparisons=Count("pk", distinct=True), judgements=Count("judgements", distinct=True))
        )
        counts["screened_out"] = screened["comparisons"]
        counts["comparisons"] -= screened["comparisons"]
        counts["judgements"] -= screened["judgements"]
    counts["prompts"] = Prompt.objects.filter(campaign=campaign).count()
    counts["candidates"] = Candidate.objects.filter(prompt__campaign=campaign).count()
    counts["wanted"] = counts["comparisons"] * campaign.overlap
    counts["percent"] = min(100, round(100 * counts["judgements"] / counts["wanted"])) if counts["wanted"] else 0
    return counts


def campaign_list_with_counts() -> QuerySet[Campaign]:
    return Campaign.objects.annotate(
        prompt_count=Count("prompts", distinct=True), comparison_count=Count("comparisons", distinct=True)
    )


def annotator_progress(*, annotator: User) -> dict[str, int]:
    return Assignment.objects.filter(annotator=annotator).aggregate(
        done=Count("pk", filter=Q(completed_at__isnull=False)),
    )


def annotator_campaign_progress(*, annotator: User, campaign: Campaign, done: int | None = None) -> dict[str, Any]:
    """The annotator's rated pairs in one campaign, their quota there (None: no limit) and the campaign's share
    of wanted judgements already given (0–100). `done`: the rated pairs when already read (the claim reads them
    with the pair it returns, ``Assignment.rated_in_campaign``), else read here (models.Participation)."""
    if done is None:
        done = (
            Participation.objects.filter(annotator=annotator, campaign=campaign).values_list("rated", flat=True).first()
            or 0
        )
    return {
        "done": done,
        "quota": campaign.quota_per_annotator,
        # Cached: counting the campaign's rows on every pair page would cost more than the page (progress.py).
        "campaign_percent": campaign_percent_done(campaign=campaign),
    }


def annotator_campaigns(*, annotator: User) -> list[dict[str, Any]]:
    """The active campaigns `annotator` is assigned to, in the order the claim serves them, each with the
    annotator's rated pairs there, their quota (None: no limit) and the campaign's share done (0–100): the rating
    landing page, with where the annotator stands in each one's qualification (selectors.qualification: QUALIFIED,
    DUE or FAILED). Two queries and one cached count per campaign."""
    campaigns = list(
        campaigns_servable(annotator=annotator).annotate(qualification=qualification_standing(annotator=annotator))
    )
    done = dict(
        Participation.objects.filter(annotator=annotator, campaign__in=[c.pk for c in campaigns]).values_list(
            "campaign", "rated"
        )
    )
    return [
        {
            "campaign": campaign,
            "done": done.get(campaign.pk, 0),
            "quota": campaign.quota_per_annotator,
            "campaign_percent": campaign_percent_done(campaign=campaign),
            "qualification": campaign.qualification,
        }
        for campaign in campaigns
    ]


def campaign_members(*, campaign: Campaign) -> QuerySet[CampaignMember]:
    """The campaign's assigned groups, then users, each with who assigned it (one query)."""
    return (
        CampaignMember.objects.filter(campaign=campaign)
        .select_related("user", "group", "added_by")
        .order_by("group__name", "user__username", "pk")
    )


def generation_jobs_recent(*, campaign: Campaign) -> QuerySet[GenerationJob]:
    return GenerationJob.objects.filter(campaign=campaign).prefetch_related("variants")[:20]


def training_jobs_recent(*, campaign: Campaign | None = None) -> QuerySet[TrainingJob]:
    jobs = TrainingJob.objects.select_related("parent_variant", "campaign", "result_variant")
    if campaign is not None:
        jobs = jobs.filter(campaign=campaign)
    return jobs[:50]


def statistics_snapshots_recent(*, campaign: Campaign) -> QuerySet[StatisticsSnapshot]:
    """The campaign's newest statistics snapshots with their authors, without their (possibly large) JSON."""
    return StatisticsSnapshot.objects.filter(campaign=campaign).select_related("created_by").defer("payload")[:20]


ANSWERS_PER_PAGE = 25


def campaign_answers_page(
    *, campaign: Campaign, page_number: int | str | None, per_page: int = ANSWERS_PER_PAGE
) -> Page:
    """One page of the campaign's answers by prompt, variant and sample, each with its prompt and variant (one
    query for the page, one for the count) and its retrieved passages as `passages` (see `retrieved_passages`)."""
    answers = (
        Candidate.objects.filter(prompt__campaign=campaign)
        .select_related("prompt", "variant")
        .order_by("prompt_id", "variant_id", "sample_index", "pk")
    )
    page = Paginator(answers, per_page).get_page(page_number)
    page.object_list = list(page.object_list)
    for answer in page.object_list:
        answer.passages = retrieved_passages(answer.retrieved)  # type: ignore[attr-defined]
    return page


def retrieved_passages(retrieved: Any) -> list[dict[str, Any]]:
    """A candidate's stored passages ({"document", "chunk", "text", "score"}) with every key present; entries that
    are not objects with a text are left out (the field is free JSON)."""
    rows = retrieved if isinstance(retrieved, list) else []
    return [
        {
            "document": str(row.get("document", "")),
            "chunk": row.get("chunk"),
            "text": str(row["text"]),
            "score": row.get("score") if isinstance(row.get("score"), int | float) else None,
        }
        for row in rows
        if isinstance(row, dict) and row.get("text")
    ]


def pair_passages(first: Candidate, second: Candidate) -> list[dict[str, str]]:
    """The passages shown with a pair, for both answers at once: those either answer's model retrieved, each once
    (document name and text only), sorted by document and text, so that neither their place nor their order tells
    which answer, if either, was given them."""
    seen = {
        (passage["document"], passage["text"])
        for candidate in (first, second)
        for passage in retrieved_passages(candidate.retrieved)
    }
    return [{"document": document, "text": text} for document, text in sorted(seen)]


def campaign_statistics(
    *, campaign: Campaign, filters: VoteFilters | None = None, prompt_level: bool = False, n_boot: int = 1000
) -> CampaignStatistics:
    """All statistics of the campaign's judgements (or their prompt-level majorities) under `filters`.

    The outlier test always runs on the individual judgements (a majority has no annotator); with
    `filters.exclude_outliers` the flagged annotators' judgements are left out before anything else.
    """
    votes = votes_frame(campaign=campaign, filters=filters)
    outliers = statistics_stats.annotator_outliers(votes)
    excluded = statistics_stats.outlier_annotator_ids(outliers) if filters and filters.exclude_outliers else []
    if excluded:
        votes = votes[~votes["annotator_id"].isin(excluded)]
    if prompt_level:
        votes = prompt_majority(votes)
    stats = statistics_stats.campaign_statistics(votes, n_boot=n_boot, seed=0, outliers=outliers)
    stats.excluded_annotators = excluded
    return stats


def campaign_statistics_json(
    *, campaign: Campaign, filters: VoteFilters | None = None, prompt_level: bool = False, n_boot: int = 1000
) -> dict[str, Any]:
    """The statistics as plain JSON (docs/formats.md), variants named rather than numbered."""
    report = campaign_statistics(campaign=campaign, filters=filters, prompt_level=prompt_level, n_boot=n_boot).to_json()
    names = dict(ModelVariant.objects.values_list("pk", "name"))
    style = report.get("style_control") or {}
    for rows in (
        report.get("pairs", []),
        report.get("leaderboard", []),
        report.get("category_leaderboards", []),
        style.get("leaderboard", []),
    ):
        for row in rows:
            for key in ("variant", "variant_a", "variant_b"):
                if key in row:
                    row[key] = names.get(row[key], row[key])
    return report


def annotator_gold_accuracy(*, campaign: Campaign, annotator: User) -> float | None:
    """Share of the annotator's overall choices on the campaign's gold items that match the gold outcome.

    None when the annotator has judged no gold item of the campaign.
    """
    result = CriterionChoice.objects.filter(
        criterion=OVERALL,
        judgement__annotator=annotator,
        judgement__comparison__campaign=campaign,
        judgement__comparison__gold_outcome__isnull=False,
    ).aggregate(
        total=Count("pk"),
        correct=Count("pk", filter=Q(outcome=F("judgement__comparison__gold_outcome"))),
    )
    return result["correct"] / result["total"] if result["total"] else None


def annotator_quality_rows(*, campaign: Campaign) -> list[dict[str, Any]]:
    """One row per annotator of the campaign (anyone with an assignment there): evaluator/stats/quality.py's numbers and
    warnings, skips, answer flags raised and the annotator's flag. Two queries, whatever the number of annotators.

    The numbers are people's: simulated judgements (bench/loop.py's scripted annotators) are left out of every
    figure, agreement with the others' majority included. A row is `scripted` when its account has given simulated
    judgements (here or elsewhere) and no other judgement in this campaign; `simulated` counts its simulated
    judgements here.
    """
    people = (
        Assignment.objects.filter(comparison__campaign=campaign)
        .values("annotator_id", "annotator__username", "annotator__flag__reason")
        .annotate(
            skips=Count("pk", filter=Q(skipped_at__isnull=False), distinct=True),
            flags_raised=Count("answer_flags", distinct=True),
            simulated=Count("judgement", filter=Q(judgement__simulated=True), distinct=True),
            scripted_account=Exists(Judgement.objects.filter(annotator=OuterRef("annotator_id"), simulated=True)),
        )
        .order_by("annotator__username")
    )
    rows = (
        Judgement.objects.filter(comparison__campaign=campaign, simulated=False)
        .annotate(overall=FilteredRelation("choices", condition=Q(choices__criterion=OVERALL)))
        .values_list(
            "annotator_id",
            "comparison_id",
            "time_on_task_ms",
            "overall__outcome",
            "assignment__left_is_a",
            "comparison__gold_outcome",
        )
    )
    frame = pd.DataFrame.from_records(list(rows), columns=JUDGEMENT_COLUMNS)
    quality_rows = cast(list[dict[str, Any]], annotator_quality(frame).to_dict("records"))  # string column names
    numbers = {row["annotator_id"]: row for row in quality_rows}
    result = []
    for person in people:
        found = numbers.get(person["annotator_id"], {})
        judgements = found.get("judgements", 0)
        result.append(
            {
                key: None if isinstance(value, float) and value != value else value  # NaN: no data
                for key, value in found.items()
            }
            | {
                "annotator_id": person["annotator_id"],
                "username": person["annotator__username"],
                "judgements": judgements,
                "simulated": person["simulated"],
                "scripted": person["scripted_account"] and not judgements,
                "skips": person["skips"],
                "answer_flags": person["flags_raised"],
                "flag_reason": person["annotator__flag__reason"],
                "warnings": [WARNING_LABELS[key] for key in found.get("warnings", [])],
            }
        )
    return result


def user_list_with_roles() -> QuerySet[Any]:
    """Every account, by username, with its role groups prefetched: two queries for the whole list."""
    role_groups = Prefetch("groups", queryset=Group.objects.filter(name__in=ROLES).order_by("name"), to_attr="roles")
    return get_user_model().objects.order_by("username").prefetch_related(role_groups)


def campaign_prompt_ids(*, campaign: Campaign, external_ids: Iterable[str]) -> set[int]:
    """The ids of the campaign's prompts with these external ids, looked up a batch at a time (one `IN` list of
    every id would pass PostgreSQL's 65,535 bound parameters on a large held-out set)."""
    return {
        pk
        for batch in batched(sorted(external_ids))
        for pk in Prompt.objects.filter(campaign=campaign, external_id__in=batch).values_list("pk", flat=True)
    }
