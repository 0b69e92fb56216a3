"""Annotator quality: per-annotator numbers and rubber-stamping warnings. Pure: a DataFrame in, a DataFrame out.

The input has one row per judgement of one campaign, with the columns of JUDGEMENT_COLUMNS:
annotator_id and comparison_id (ints); time_on_task_ms (int); outcome (the overall choice by *variant*: "a", "b",
"tie", or None where a judgement has no overall choice); left_is_a (bool: candidate a was shown on the left);
gold_outcome ("a", "b", "tie", or None for an ordinary comparison).

Warnings only point an admin at an annotator worth a look; flagging (AnnotatorFlag) stays a person's decision.
Every warning needs a minimum of evidence (QualityThresholds), so one quick judgement never raises one.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evaluator.stats.statistics import sign_test_p_value

JUDGEMENT_COLUMNS = ["annotator_id", "comparison_id", "time_on_task_ms", "outcome", "left_is_a", "gold_outcome"]
OUTCOMES = ("a", "b", "tie")
QUALITY_COLUMNS = [
    "annotator_id",
    "judgements",
    "median_seconds",
    "decisive",
    "left_rate",
    "left_p_value",
    "overall_choices",
    "top_outcome",
    "top_outcome_share",
    "gold_judged",
    "gold_accuracy",
    "agreement_n",
    "agreement",
    "warnings",
]

# Warning keys → what the page says.
FAST = "fast"
SAME_SIDE = "same_side"
SAME_OUTCOME = "same_outcome"
LOW_GOLD = "low_gold"
LOW_AGREEMENT = "low_agreement"
WARNING_LABELS = {
    FAST: "implausibly fast",
    SAME_SIDE: "always the same side",
    SAME_OUTCOME: "always the same outcome",
    LOW_GOLD: "low gold accuracy",
    LOW_AGREEMENT: "low agreement",
}


@dataclass(frozen=True)
class QualityThresholds:
    """When a warning is raised. Reading two answers and six criteria takes well over 4 s, so a median below that
    means the answers were not read; the side and outcome limits are the ones a fair coin almost never reaches."""

    fast_median_seconds: float = 4.0
    fast_min_judgements: int = 5
    side_share: float = 0.9  # left rate ≥ 0.9 or ≤ 0.1 …
    side_min_decisive: int = 10  # … over at least this many decisive votes,
    side_p_value: float = 0.001  # … or an exact two-sided binomial test against ½ below this
    outcome_share: float = 0.9  # one outcome (a, b or tie) in at least this share of overall choices
    outcome_min_choices: int = 10
    gold_accuracy: float = 0.6  # below this share of gold items right
    gold_min_judged: int = 5
    agreement: float = 0.4  # below this share of choices equal to the other annotators' majority
    agreement_min_comparisons: int = 10

    @property
    def side_share_low(self) -> float:
        return round(1.0 - self.side_share, 9)


def annotator_quality(judgements: pd.DataFrame, thresholds: QualityThresholds | None = None) -> pd.DataFrame:
    """One row per annotator (QUALITY_COLUMNS), sorted by annotator_id; NaN where a number has no data.

    - median_seconds: median time on task, in seconds.
    - left_rate: share of decisive overall choices that went to the answer shown on the left (a with left_is_a,
      b without); left_p_value: exact two-sided binomial test of that count against ½.
    - top_outcome, top_outcome_share: the annotator's most frequent overall outcome and its share of the overall
      choices. Outcomes are variants, not sides: a really better variant a raises this share too, which is why it
      only warns at 0.9 and why agreement sits next to it.
    - gold_accuracy: share of overall choices on gold items equal to the gold outcome (over gold_judged items).
    - agreement: share of the annotator's overall choices equal to the majority of the *other* annotators of the
      same comparison, over agreement_n comparisons: those with at least one other overall choice and a single
      most frequent outcome among the others (an even split has no majority and is left out).
    - warnings: the keys of WARNING_LABELS that apply, in that order.
    """
    limits = thresholds or QualityThresholds()
    frame = judgements[JUDGEMENT_COLUMNS].reset_index(drop=True)
    annotators = np.sort(frame["annotator_id"].unique())
    result = pd.DataFrame({"annotator_id": annotators})
    if frame.empty:
        for column in QUALITY_COLUMNS[1:]:
            result[column] = pd.Series(dtype=object if column in ("top_outcome", "warnings") else float)
        return result[QUALITY_COLUMNS]
    by_annotator = frame.groupby("annotator_id", sort=True)
    result["judgements"] = by_annotator.size().to_numpy()
    result["median_seconds"] = by_annotator["time_on_task_ms"].median().to_numpy() / 1000.0

    outcome = frame["outcome"]
    chosen = outcome.isin(OUTCOMES).to_numpy()
    decisive = outcome.isin(("a", "b")).to_numpy()
    left = decisive & ((outcome == "a").to_numpy() == frame["left_is_a"].to_numpy(dtype=bool))
    counts = (
        pd.DataFrame(
            {
                "annotator_id": frame["annotator_id"],
                "decisive": decisive.astype(np.int64),
                "left": left.astype(np.int64),
                **{f"n_{name}": (outcome == name).to_numpy(dtype=np.int64) for name in OUTCOMES},
            }
        )
        .groupby("annotator_id", sort=True)[["decisive", "left", *(f"n_{name}" for name in OUTCOMES)]]
        .sum()
    )
    decisive_n, left_n = counts["decisive"].to_numpy(), counts["left"].to_numpy()
    result["decisive"] = decisive_n
    result["left_rate"] = np.where(decisive_n > 0, left_n / np.maximum(decisive_n, 1), np.nan)
    result["left_p_value"] = [
        sign_test_p_value(int(k), int(n - k)) if n else math.nan for k, n in zip(left_n, decisive_n, strict=True)
    ]
    outcome_counts = counts[[f"n_{name}" for name in OUTCOMES]].to_numpy()
    choices = outcome_counts.sum(axis=1)
    result["top_outcome"] = [
        OUTCOMES[i] if n else None for i, n in zip(outcome_counts.argmax(axis=1), choices, strict=True)
    ]
    result["top_outcome_share"] = np.where(choices > 0, outcome_counts.max(axis=1) / np.maximum(choices, 1), np.nan)
    result["overall_choices"] = choices

    gold = frame["gold_outcome"].isin(OUTCOMES).to_numpy() & chosen
    correct = gold & (outcome.to_numpy() == frame["gold_outcome"].to_numpy())
    gold_counts = (
        pd.DataFrame({"annotator_id": frame["annotator_id"], "judged": gold, "correct": correct})
        .groupby("annotator_id", sort=True)[["judged", "correct"]]
        .sum()
    )
    gold_n, correct_n = gold_counts["judged"].to_numpy(dtype=np.int64), gold_counts["correct"].to_numpy()
    result["gold_judged"] = gold_n
    result["gold_accuracy"] = np.where(gold_n > 0, correct_n / np.maximum(gold_n, 1), np.nan)

    agreement_n, agreed = _agreement_with_others(frame, chosen)
    compared = agreement_n.reindex(annotators, fill_value=0).to_numpy(dtype=np.int64)
    result["agreement_n"] = compared
    result["agreement"] = np.where(
        compared > 0, agreed.reindex(annotators, fill_value=0).to_numpy() / np.maximum(compared, 1), np.nan
    )
    result["warnings"] = [_warnings(row, limits) for row in result.itertuples(index=False)]
    return result[QUALITY_COLUMNS]


def _agreement_with_others(frame: pd.DataFrame, chosen: np.ndarray) -> tuple[pd.Series, pd.Series]:
    """Per annotator: comparisons where the others have a majority, and how many of them it matched."""
    rows = frame.loc[chosen, ["annotator_id", "comparison_id", "outcome"]]
    if rows.empty:
        return pd.Series(dtype=np.int64), pd.Series(dtype=np.int64)
    own = np.stack([(rows["outcome"] == name).to_numpy(dtype=np.int64) for name in OUTCOMES], axis=1)
    per_comparison = pd.DataFrame(own, columns=OUTCOMES).groupby(rows["comparison_id"].to_numpy()).transform("sum")
    others = per_comparison.to_numpy() - own  # the other annotators' outcome counts on the same comparison
    top = others.max(axis=1)
    has_majority = (others.sum(axis=1) > 0) & ((others == top[:, None]).sum(axis=1) == 1)
    matched = has_majority & (own.argmax(axis=1) == others.argmax(axis=1))
    per = pd.DataFrame({"annotator_id": rows["annotator_id"].to_numpy(), "n": has_majority, "agreed": matched})
    grouped = per.groupby("annotator_id")[["n", "agreed"]].sum()
    return grouped["n"].astype(np.int64), grouped["agreed"].astype(np.int64)


# ``row`` is one of ``itertuples``' named tuples over QUALITY_COLUMNS, whose fields pandas' types cannot name.
def _warnings(row: Any, limits: QualityThresholds) -> list[str]:
    found = []
    if row.judgements >= limits.fast_min_judgements and row.median_seconds < limits.fast_median_seconds:
        found.append(FAST)
    lopsided = row.decisive >= limits.side_min_decisive and (
        row.left_rate >= limits.side_share or row.left_rate <= limits.side_share_low
    )
    if lopsided or (row.decisive and row.left_p_value < limits.side_p_value):
        found.append(SAME_SIDE)
    if row.overall_choices >= limits.outcome_min_choices and row.top_outcome_share >= limits.outcome_share:
        found.append(SAME_OUTCOME)
    if row.gold_judged >= limits.gold_min_judged and row.gold_accuracy < limits.gold_accuracy:
        found.append(LOW_GOLD)
    if row.agreement_n >= limits.agreement_min_comparisons and row.agreement < limits.agreement:
        found.append(LOW_AGREEMENT)
    return found
