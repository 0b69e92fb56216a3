"""Every read that is more than a `get`: keyword-only, typed, named <noun>_<verb>."""

from collections.abc import Iterator
from typing import Any

import pandas as pd
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet

from evaluator.models import (
    OVERALL,
    Assignment,
    Campaign,
    Candidate,
    Comparison,
    CriterionChoice,
    GenerationJob,
    ModelVariant,
    Outcome,
    Prompt,
    TrainingJob,
)
from evaluator.statistics import VOTE_COLUMNS, pairwise_table


def votes_frame(*, campaign: Campaign) -> pd.DataFrame:
    """One row per judgement × criterion: criterion, variant_a, variant_b, outcome."""
    rows = CriterionChoice.objects.filter(judgement__comparison__campaign=campaign).values_list(
        "criterion", "judgement__comparison__variant_a_id", "judgement__comparison__variant_b_id", "outcome"
    )
    return pd.DataFrame.from_records(list(rows), columns=VOTE_COLUMNS)


def campaign_pairwise_stats(*, campaign: Campaign) -> list[dict[str, Any]]:
    """The pairwise table with variant names and criterion labels, in rubric order with overall last."""
    table = pairwise_table(votes_frame(campaign=campaign))
    names = dict(ModelVariant.objects.values_list("pk", "name"))
    labels = {criterion["slug"]: criterion["label"] for criterion in campaign.criteria} | {OVERALL: "Overall"}
    order = {slug: index for index, slug in enumerate(campaign.criterion_slugs)}
    rows = table.to_dict("records")
    for row in rows:
        row["variant_a_name"] = names.get(row["variant_a"], "?")
        row["variant_b_name"] = names.get(row["variant_b"], "?")
        row["criterion_label"] = labels.get(row["criterion"], row["criterion"])
    rows.sort(key=lambda row: (row["variant_a"], row["variant_b"], order.get(row["criterion"], 99)))
    return rows


def preference_votes_iter(*, campaign: Campaign, criterion: str = OVERALL) -> Iterator[dict[str, str]]:
    """Prompt, both answers (by variant side) and the outcome of every judgement on `criterion`."""
    choices = (
        CriterionChoice.objects.filter(judgement__comparison__campaign=campaign, criterion=criterion)
        .select_related(
            "judgement__comparison__prompt",
            "judgement__comparison__candidate_a",
            "judgement__comparison__candidate_b",
        )
        .order_by("pk")
    )
    for choice in choices.iterator(chunk_size=2000):
        comparison = choice.judgement.comparison
        yield {
            "prompt": comparison.prompt.text,
            "answer_a": comparison.candidate_a.text,
            "answer_b": comparison.candidate_b.text,
            "outcome": choice.outcome,
        }


def decisive_vote_count(*, campaign: Campaign, criterion: str = OVERALL) -> int:
    return (
        CriterionChoice.objects.filter(judgement__comparison__campaign=campaign, criterion=criterion)
        .exclude(outcome=Outcome.TIE)
        .count()
    )


def campaign_progress(*, campaign: Campaign) -> dict[str, int]:
    counts = Comparison.objects.filter(campaign=campaign).aggregate(
        comparisons=Count("pk", distinct=True),
        judgements=Count("judgements", distinct=True),
    )
    counts["prompts"] = Prompt.objects.filter(campaign=campaign).count()
    counts["candidates"] = Candidate.objects.filter(prompt__campaign=campaign).count()
    counts["wanted"] = counts["comparisons"] * campaign.overlap
    return counts


def campaign_list_with_counts() -> QuerySet[Campaign]:
    return Campaign.objects.annotate(
        prompt_count=Count("prompts", distinct=True), comparison_count=Count("comparisons", distinct=True)
    )


def annotator_progress(*, annotator: AbstractBaseUser) -> dict[str, int]:
    return Assignment.objects.filter(annotator=annotator).aggregate(
        done=Count("pk", filter=Q(completed_at__isnull=False)),
    )


def generation_jobs_recent(*, campaign: Campaign) -> QuerySet[GenerationJob]:
    return GenerationJob.objects.filter(campaign=campaign).prefetch_related("variants")[:20]


def training_jobs_recent(*, campaign: Campaign | None = None) -> QuerySet[TrainingJob]:
    jobs = TrainingJob.objects.select_related("parent_variant", "campaign", "result_variant")
    if campaign is not None:
        jobs = jobs.filter(campaign=campaign)
    return jobs[:50]
