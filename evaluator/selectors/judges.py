"""Reads about judges: their verdicts as DataFrames for evaluator/stats/judges.py, the calibration page's figures,
job lists, a real pair to preview a template with, and the judge's outcomes for a DPO dataset that asks for them."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from django.db.models import Count, QuerySet
from django.db.models.functions import Length

from evaluator.models import (
    OVERALL,
    Campaign,
    Candidate,
    Comparison,
    Judge,
    JudgeJob,
    JudgeVerdict,
    ModelVariant,
)
from evaluator.selectors.campaigns import ANSWERS_PER_PAGE, VoteFilters, campaign_prompt_ids, votes_frame
from evaluator.stats import judges as judge_stats
from evaluator.stats.statistics import LEADERBOARD_COLUMNS, leaderboard

VERDICT_COLUMNS = ["comparison_id", "criterion", "order", "choice"]
PAIR_INFO_COLUMNS = ["comparison_id", "prompt_id", "variant_a", "variant_b", "length_a", "length_b"]


def judge_verdicts_frame(*, judge: Judge, campaign: Campaign) -> pd.DataFrame:
    """One row per stored verdict of `judge` on the campaign's pairs (VERDICT_COLUMNS)."""
    rows = JudgeVerdict.objects.filter(judge=judge, comparison__campaign=campaign).values_list(
        "comparison_id", "criterion", "order", "choice"
    )
    return pd.DataFrame.from_records(list(rows.iterator(chunk_size=20_000)), columns=VERDICT_COLUMNS)


def campaign_pairs_frame(*, campaign: Campaign) -> pd.DataFrame:
    """One row per pair of the campaign: its prompt, variants and answer lengths in characters."""
    rows = (
        Comparison.objects.filter(campaign=campaign)
        .annotate(length_a=Length("candidate_a__text"), length_b=Length("candidate_b__text"))
        .values_list("pk", "prompt_id", "variant_a_id", "variant_b_id", "length_a", "length_b")
    )
    return pd.DataFrame.from_records(list(rows.iterator(chunk_size=20_000)), columns=PAIR_INFO_COLUMNS)


@dataclass
class CalibrationPage:
    """The calibration page's content: per criterion a section, with the human leaderboard beside the judge's."""

    judge: Judge
    campaign: Campaign
    sections: list[dict[str, Any]]
    verdict_count: int
    human_judgement_count: int


def judge_calibration(*, judge: Judge, campaign: Campaign, n_boot: int = 1000) -> CalibrationPage:
    """The judge measured against the campaign's human judgements (the statistics page's default filters: gold
    items, simulated judgements left out), criterion by criterion."""
    verdicts = judge_verdicts_frame(judge=judge, campaign=campaign)
    pairs = campaign_pairs_frame(campaign=campaign)
    votes = votes_frame(campaign=campaign, filters=VoteFilters())
    criteria = [slug for slug in campaign.criterion_slugs if slug in set(verdicts["criterion"])]
    result = judge_stats.calibration(verdicts, pairs, votes, criteria=criteria, n_boot=n_boot)
    human_board = leaderboard(votes, n_boot=n_boot) if len(votes) else pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    variant_ids = set(pairs["variant_a"]) | set(pairs["variant_b"])
    names = dict(ModelVariant.objects.filter(pk__in=variant_ids).values_list("pk", "name"))
    labels = {item["slug"]: item["label"] for item in campaign.criteria} | {OVERALL: "Overall"}
    sections = []
    for row in result.summary.to_dict("records"):
        criterion = row["criterion"]
        sections.append(
            {
                "slug": criterion,
                "label": labels.get(criterion, criterion),
                "summary": _finite_or_none(row),
                "confusion": result.confusion[criterion].to_dict("index"),
                "disagreements": result.disagreements[criterion].to_dict("records"),
                "judge_board": _board(result.leaderboard, criterion, names),
                "human_board": _board(human_board, criterion, names),
            }
        )
    _add_pair_texts(campaign, [row for section in sections for row in section["disagreements"]])
    return CalibrationPage(judge, campaign, sections, len(verdicts), int(votes["judgement_id"].nunique()))


def _add_pair_texts(campaign: Campaign, rows: list[dict[str, Any]]) -> None:
    """Give each disagreement row its prompt and answers, and the page of the campaign's answers page showing
    them (answers are listed by prompt there, ANSWERS_PER_PAGE a page): two queries for all rows."""
    ids = {int(row["comparison_id"]) for row in rows}
    texts = {
        pk: (prompt_id, prompt, a, b)
        for pk, prompt_id, prompt, a, b in Comparison.objects.filter(pk__in=ids).values_list(
            "pk", "prompt_id", "prompt__text", "candidate_a__text", "candidate_b__text"
        )
    }
    before: dict[int, int] = {}
    seen = 0
    counts = Candidate.objects.filter(prompt__campaign=campaign).values("prompt_id").annotate(n=Count("id"))
    for prompt_id, count in counts.order_by("prompt_id").values_list("prompt_id", "n"):
        before[prompt_id] = seen
        seen += count
    for row in rows:
        prompt_id, prompt, text_a, text_b = texts[int(row["comparison_id"])]
        row.update(prompt=prompt, text_a=text_a, text_b=text_b)
        row["answers_page"] = before.get(prompt_id, 0) // ANSWERS_PER_PAGE + 1


def _board(board: pd.DataFrame, criterion: str, names: dict[int, str]) -> list[dict[str, Any]]:
    if board.empty:
        return []
    rows = board[board["criterion"] == criterion].to_dict("records")
    return [
        {**_finite_or_none(row), "name": names.get(int(row["variant"]), f"variant {row['variant']}")} for row in rows
    ]


def _finite_or_none(row: Mapping[Any, Any]) -> dict[str, Any]:
    """NaN (a figure with nothing to measure) as None, which the page's filters show as a dash."""
    return {str(key): None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}


def judges_with_counts() -> QuerySet[Judge]:
    """Every judge, newest job first on each, for the judges page."""
    return Judge.objects.all().order_by("name")


def judge_jobs_recent(*, judge: Judge | None = None, limit: int = 20) -> QuerySet[JudgeJob]:
    jobs = JudgeJob.objects.select_related("judge", "campaign", "created_by")
    if judge is not None:
        jobs = jobs.filter(judge=judge)
    return jobs.order_by("-created_at", "-id")[:limit]


def judges_of_campaign(*, campaign: Campaign) -> QuerySet[Judge]:
    """The judges with verdicts on the campaign's pairs (what the campaign's calibration pages are about)."""
    return Judge.objects.filter(jobs__campaign=campaign).distinct().order_by("name")


def preview_pair(*, campaign: Campaign | None = None) -> Comparison | None:
    """A real pair to preview a template with: the campaign's first, else the newest pair of any campaign."""
    pairs = Comparison.objects.select_related("prompt", "candidate_a", "candidate_b", "campaign")
    if campaign is not None:
        return pairs.filter(campaign=campaign).order_by("pk").first()
    return pairs.order_by("-pk").first()


def judge_outcomes_select(
    *,
    campaign: Campaign,
    judge_id: int,
    criterion: str,
    held_out_prompts: frozenset[str] = frozenset(),
    include_gold: bool = False,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> list[tuple[int, str]]:
    """(comparison id, winning side) for every pair of the campaign that the judge found decisive in both orders
    alike on `criterion`, except the pairs in `exclude` (those the humans already decide), held-out prompts (by
    external id), and gold items unless `include_gold`: what a DPO dataset that asks for the judge adds."""
    rows = JudgeVerdict.objects.filter(judge_id=judge_id, comparison__campaign=campaign, criterion=criterion)
    if not include_gold:
        rows = rows.filter(comparison__gold_outcome__isnull=True)
    held_out = campaign_prompt_ids(campaign=campaign, external_ids=held_out_prompts)
    frame = pd.DataFrame.from_records(
        [
            (pk, criterion_, order, choice)
            for pk, criterion_, order, choice, prompt_id in rows.values_list(
                "comparison_id", "criterion", "order", "choice", "comparison__prompt_id"
            ).iterator(chunk_size=20_000)
            if prompt_id not in held_out
        ],
        columns=VERDICT_COLUMNS,
    )
    pairs = judge_stats.judge_pairs(frame)
    decisive = pairs[pairs["consistent"] & pairs["judge"].isin(["a", "b"])]
    return [
        (int(pk), str(side))
        for pk, side in zip(decisive["comparison_id"], decisive["judge"], strict=True)
        if int(pk) not in exclude
    ]


def preference_dataset_metadata(*, judge_id: int | None) -> dict[str, Any]:
    """What a DPO dataset's metadata says of its sources: the human judgements, and the judge when one was asked
    for (by id and name)."""
    sources: dict[str, Any] = {"human_judgements": True, "judge": None}
    if judge_id is not None:
        judge = Judge.objects.filter(pk=judge_id).values("pk", "name", "kind", "model_name", "base_model").first()
        sources["judge"] = judge
    return sources
