"""The statistics page's content: the campaign's statistics with names, labels and charts attached."""

import math
from dataclasses import dataclass, field
from typing import Any, cast

import pandas as pd
from django.contrib.auth import get_user_model
from django.utils.safestring import SafeString

from evaluator.models import OVERALL, Campaign, ModelVariant
from evaluator.selectors.arena import ArenaReport, arena_report
from evaluator.selectors.campaigns import VoteFilters, campaign_statistics
from evaluator.stats.plots import Interval, bar_chart, interval_chart

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Difference:
    """A pair whose difference is significant after Holm's correction, said from the winner's side."""

    winner: str
    loser: str
    win_rate: float
    p_holm: float


@dataclass
class CriterionSection:
    slug: str
    label: str
    pairs: list[dict[str, Any]]
    leaderboard: list[dict[str, Any]]
    forest: SafeString
    ratings: SafeString
    # The summary's line: the variants ranked first (more than one when their intervals overlap), the judgements
    # counted, and the differences that are significant after Holm's correction.
    leaders: list[dict[str, Any]] = field(default_factory=list)
    votes: int = 0
    significant: list[Difference] = field(default_factory=list)


@dataclass
class StatisticsReport:
    n_votes: int
    sections: list[CriterionSection]
    agreement: list[dict[str, Any]]
    agreement_chart: SafeString
    position_bias: dict[str, Any]
    position_chart: SafeString
    bias_facts: list[tuple[str, str]]
    annotators: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    # Style-controlled ratings, outlier annotators and per-category leaderboards (evaluator/selectors/arena.py).
    arena: ArenaReport = field(default_factory=ArenaReport)


def statistics_report(
    *, campaign: Campaign, filters: VoteFilters, prompt_level: bool, n_boot: int = 1000
) -> StatisticsReport:
    stats = campaign_statistics(campaign=campaign, filters=filters, prompt_level=prompt_level, n_boot=n_boot)
    names = dict(ModelVariant.objects.values_list("pk", "name"))
    labels = {criterion["slug"]: criterion["label"] for criterion in campaign.criteria} | {OVERALL: "Overall"}
    pairs = _records(stats.pairs, names)
    leaderboard = _records(stats.leaderboard, names)
    sections = [
        _section(slug, labels[slug], pairs, leaderboard)
        for slug in campaign.criterion_slugs
        if any(row["criterion"] == slug for row in pairs)
    ]
    order = {slug: index for index, slug in enumerate(campaign.criterion_slugs)}
    agreement = sorted(
        (row | {"label": labels.get(row["criterion"], row["criterion"])} for row in _records(stats.agreement, names)),
        key=lambda row: order.get(row["criterion"], len(order)),
    )
    position = dict(stats.position_bias)
    usernames = dict(get_user_model().objects.values_list("pk", "username"))
    annotators = [
        row | {"username": usernames.get(row["annotator_id"], row["annotator_id"])}
        for row in _records(stats.annotator_left_rates, names)
    ]
    return StatisticsReport(
        n_votes=int(stats.n_votes),
        sections=sections,
        agreement=agreement,
        agreement_chart=bar_chart(
            [(row["label"], row["krippendorff_alpha"]) for row in agreement if _finite(row["krippendorff_alpha"])],
            lo=-1.0,
            hi=1.0,
            reference=0.0,
            title="Krippendorff's α per criterion",
        ),
        position_bias=position,
        bias_facts=_bias_facts(position, dict(stats.length_bias)),
        position_chart=bar_chart(
            [("Left answer chosen", position["left_share"])] if _finite(position.get("left_share")) else [],
            lo=0.0,
            hi=1.0,
            reference=0.5,
            title="Position bias",
            fmt="{:.0%}",
        ),
        annotators=annotators,
        arena=arena_report(
            stats,
            criterion_slugs=list(campaign.criterion_slugs),
            labels=labels,
            variant_names=names,
            usernames=usernames,
        ),
    )


def _section(slug: str, label: str, pairs: list[dict[str, Any]], leaderboard: list[dict[str, Any]]) -> CriterionSection:
    rows = [row for row in pairs if row["criterion"] == slug]
    board = sorted((row for row in leaderboard if row["criterion"] == slug), key=lambda row: -row["rating"])
    forest = interval_chart(
        [
            Interval(
                # Each name shortened on its own, so that both stay in sight (the table below has them whole).
                f"{_short(row['variant_a_name'])} vs {_short(row['variant_b_name'])}",
                row["win_rate_a"],
                row["ci_low"],
                row["ci_high"],
                emphasis=_finite(row["p_holm"]) and row["p_holm"] < SIGNIFICANCE,
            )
            for row in rows
            if _finite(row["ci_low"])
        ],
        lo=0.0,
        hi=1.0,
        reference=0.5,
        title=f"{label}: win rate of the first variant",
        fmt="{:.0%}",
    )
    finite = [row for row in board if _finite(row["ci_low"]) and _finite(row["ci_high"])]
    low = min((row["ci_low"] for row in finite), default=900.0)
    high = max((row["ci_high"] for row in finite), default=1100.0)
    ratings = interval_chart(
        [Interval(row["variant_name"], row["rating"], row["ci_low"], row["ci_high"]) for row in finite],
        lo=math.floor(low / 50) * 50,
        hi=math.ceil(high / 50) * 50 or 1100,
        reference=1000.0,
        title=f"{label}: Bradley-Terry rating",
        fmt="{:.0f}",
    )
    return CriterionSection(
        slug,
        label,
        rows,
        board,
        forest,
        ratings,
        leaders=[row for row in board if row["rank"] == 1],
        votes=sum(int(row["n"]) for row in rows),
        significant=_significant(rows),
    )


def _significant(rows: list[dict[str, Any]]) -> list[Difference]:
    """The pairs significant after Holm's correction, the winner first, smallest p-value first."""
    differences = []
    for row in rows:
        if not (_finite(row["p_holm"]) and row["p_holm"] < SIGNIFICANCE and _finite(row["win_rate_a"])):
            continue
        a_won = row["win_rate_a"] > 0.5
        differences.append(
            Difference(
                winner=row["variant_a_name"] if a_won else row["variant_b_name"],
                loser=row["variant_b_name"] if a_won else row["variant_a_name"],
                win_rate=row["win_rate_a"] if a_won else 1 - row["win_rate_a"],
                p_holm=row["p_holm"],
            )
        )
    return sorted(differences, key=lambda difference: difference.p_holm)


def _short(name: str, limit: int = 17) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _bias_facts(position: dict[str, Any], length: dict[str, Any]) -> list[tuple[str, str]]:
    """Position and length bias as labelled sentences (the numbers come from evaluator.statistics)."""
    return [
        (
            "Left answer chosen (overall, decisive votes)",
            f"{_pct(position.get('left_share'))} of {position.get('n', 0)}, {_p(position.get('p_value'))}",
        ),
        (
            "Left-side effect in a Bradley-Terry fit (log-odds)",
            f"{_num(position.get('left_advantage'))} [{_num(position.get('left_advantage_ci_low'))}, "
            f"{_num(position.get('left_advantage_ci_high'))}], {_p(position.get('left_advantage_p_value'))}",
        ),
        (
            "Longer answer chosen (decisive votes)",
            f"{_pct(length.get('longer_share'))} of {length.get('n_decisive', 0)}, "
            f"{_p(length.get('longer_share_p_value'))}",
        ),
        (
            "Length effect per 1,000 characters, controlled for variant (log-odds)",
            f"{_num(length.get('slope_per_1k_chars'))} [{_num(length.get('slope_ci_low'))}, "
            f"{_num(length.get('slope_ci_high'))}], {_p(length.get('slope_p_value'))}",
        ),
    ]


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if _finite(value) else "–"


def _num(value: Any) -> str:
    return f"{value:.3g}" if _finite(value) else "–"


def _p(value: Any) -> str:
    """The p-value as said in a sentence: "p < 0.001" or "p = 0.042" (never "p = < 0.001")."""
    if not _finite(value):
        return "p: –"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _records(frame: pd.DataFrame, names: dict[int, str]) -> list[dict[str, Any]]:
    # The columns are named by strings; pandas' types say only that record keys are hashable.
    rows = cast(list[dict[str, Any]], frame.astype(object).where(frame.notna(), None).to_dict("records"))
    for row in rows:
        for key in ("variant", "variant_a", "variant_b"):
            if key in row:
                row[f"{key}_name"] = names.get(row[key], str(row[key]))
    return rows


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
