"""The statistics page's Arena-style parts: style-controlled ratings, outlier annotators, per-category leaderboards.

Built from a CampaignStatistics the page has already computed; the only reads are the names behind the ids.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from django.utils.safestring import SafeString

from evaluator.stats.plots import Interval, interval_chart
from evaluator.stats.statistics import STYLE_FEATURE_LABELS, CampaignStatistics


@dataclass
class StyleSection:
    """One criterion's ratings with and without style control, and its style coefficients."""

    slug: str
    label: str
    rows: list[dict[str, Any]]
    coefficients: list[dict[str, Any]]
    chart: SafeString
    bootstrap: str


@dataclass
class CategoryBoard:
    category: str
    votes: int
    rows: list[dict[str, Any]]


@dataclass
class ArenaReport:
    style_sections: list[StyleSection] = field(default_factory=list)
    outliers: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    categories: list[CategoryBoard] = field(default_factory=list)


def arena_report(
    stats: CampaignStatistics,
    *,
    criterion_slugs: list[str],
    labels: dict[str, str],
    variant_names: dict[int, str],
    usernames: dict[int, str],
) -> ArenaReport:
    """The page's style-control, outlier and category sections, in rubric order, with names for ids."""
    return ArenaReport(
        style_sections=_style_sections(stats, criterion_slugs, labels, variant_names),
        outliers=[
            row | {"username": usernames.get(row["annotator_id"], str(row["annotator_id"]))}
            for row in _plain_records(stats.annotator_outliers.sort_values("z", na_position="last"))
        ],
        flagged=[
            usernames.get(int(pk), str(pk))
            for pk in stats.annotator_outliers.loc[stats.annotator_outliers["outlier"].astype(bool), "annotator_id"]
        ],
        excluded=[usernames.get(pk, str(pk)) for pk in stats.excluded_annotators],
        categories=_category_boards(stats.category_leaderboards, variant_names),
    )


def _style_sections(
    stats: CampaignStatistics, slugs: list[str], labels: dict[str, str], names: dict[int, str]
) -> list[StyleSection]:
    control = stats.style_control
    if control is None or control.leaderboard.empty:
        return []
    sections = []
    for slug in slugs:
        board = control.leaderboard[control.leaderboard["criterion"] == slug]
        if board.empty:
            continue
        rows = [
            row
            | {
                "variant_name": names.get(row["variant"], str(row["variant"])),
                "shift": _signed_points(row["rating"] - row["raw_rating"]),
            }
            for row in _plain_records(board.sort_values("rating", ascending=False))
        ]
        coefficients = [
            row
            | {
                "label": STYLE_FEATURE_LABELS.get(row["feature"], row["feature"]),
                # An interval that excludes 0 says the raters prefer (or avoid) that style beyond chance.
                "clear": _finite(row["ci_low"]) and (row["ci_low"] > 0 or row["ci_high"] < 0),
            }
            for row in _plain_records(control.coefficients[control.coefficients["criterion"] == slug])
        ]
        sections.append(
            StyleSection(
                slug=slug,
                label=labels.get(slug, slug),
                rows=rows,
                coefficients=coefficients,
                chart=_coefficient_chart(labels.get(slug, slug), coefficients),
                bootstrap=control.bootstrap.get(slug, "none"),
            )
        )
    return sections


def _coefficient_chart(label: str, coefficients: list[dict[str, Any]]) -> SafeString:
    shown = [row for row in coefficients if _finite(row["ci_low"]) and _finite(row["ci_high"])]
    reach = max((max(abs(row["ci_low"]), abs(row["ci_high"])) for row in shown), default=0.5)
    bound = max(0.5, math.ceil(reach * 2) / 2)
    return interval_chart(
        [
            Interval(row["label"], row["estimate"], row["ci_low"], row["ci_high"], emphasis=row["clear"])
            for row in shown
        ],
        lo=-bound,
        hi=bound,
        reference=0.0,
        title=f"{label}: style coefficients (log-odds per SD)",
        fmt="{:+.1f}",
    )


def _category_boards(boards: pd.DataFrame, names: dict[int, str]) -> list[CategoryBoard]:
    result = []
    for category, board in boards.groupby("category", sort=True):
        rows = [
            row | {"variant_name": names.get(row["variant"], str(row["variant"]))}
            for row in _plain_records(board.sort_values("rating", ascending=False))
        ]
        result.append(CategoryBoard(str(category), int(board["n"].iloc[0]), rows))
    return result


def _plain_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values, NaN as None (templates print None as "–" with `default`)."""
    records: list[dict[str, Any]] = frame.astype(object).where(frame.notna(), None).to_dict("records")  # type: ignore[assignment]
    return [{str(key): value for key, value in row.items()} for row in records]


def _signed_points(change: float) -> str:
    """A rating change in whole points with its sign ("+12", "−3"), "0" under half a point."""
    points = round(change)
    return f"{points:+d}".replace("-", "−") if points else "0"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
