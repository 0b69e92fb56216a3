"""How far a judge can be trusted: pure calibration figures of a judge's verdicts against the human majority.

Pandas in, DataFrames and dataclasses out, no ORM. Three frames come in (evaluator/selectors/judges.py builds them):

- *verdicts*: one row per stored verdict: comparison_id, criterion, order ("ab": candidate a shown first, "ba"),
  choice ("left" the answer shown first, "right", "tie", or None when the reply named no side);
- *pairs*: one row per comparison: comparison_id, prompt_id, variant_a, variant_b, length_a, length_b;
- *votes*: the human votes frame of evaluator/stats/statistics.py (comparison_id, criterion, outcome).

The rules, stated once:

- A verdict's *outcome* is the variant it prefers: "left" in order ab is a, in order ba it is b.
- The judge's outcome on a pair is its outcome in both orders when they agree; when the two orders disagree the
  judge has no preference that survives the swap, and the pair counts as a tie (as MT-Bench counts it). A pair with
  an unparseable verdict in either order has no judge outcome and is left out of agreement.
- The human majority of a pair is its most frequent outcome among the human votes; when two outcomes share the top
  count the pair counts as a tie.
- Agreement (percent and Cohen's κ over the labels a / tie / b) is measured on pairs that have both.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evaluator.stats.statistics import leaderboard, sign_test_p_value

LABELS = ("a", "tie", "b")
ORDERS = ("ab", "ba")
CONFIDENCE = 0.95
_LABEL_CODE = {label: code for code, label in enumerate(LABELS)}
JUDGE_PAIR_COLUMNS = ["comparison_id", "criterion", "outcome_ab", "outcome_ba", "parsed", "consistent", "judge"]
MAJORITY_COLUMNS = ["comparison_id", "criterion", "votes_a", "votes_tie", "votes_b", "n_votes", "human"]
SUMMARY_COLUMNS = [
    "criterion",
    "pairs",
    "unparseable",
    "consistency",
    "first_share",
    "first_p_value",
    "longer_share",
    "longer_p_value",
    "n_agreement",
    "agreement",
    "kappa",
    "kappa_ci_low",
    "kappa_ci_high",
]


def verdict_outcomes(verdicts: pd.DataFrame) -> pd.Series:
    """The variant each verdict prefers (a, b, tie; None when unparseable). Needs order, choice."""
    ab = verdicts["order"].to_numpy() == "ab"
    choice = verdicts["choice"].to_numpy(dtype=object)
    outcome = np.full(len(verdicts), None, dtype=object)
    outcome[(choice == "left") & ab] = "a"
    outcome[(choice == "left") & ~ab] = "b"
    outcome[(choice == "right") & ab] = "b"
    outcome[(choice == "right") & ~ab] = "a"
    outcome[choice == "tie"] = "tie"
    return pd.Series(outcome, index=verdicts.index, dtype=object)


def judge_pairs(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, criterion) judged in both orders: the outcome of each order, whether both were parsed,
    whether they agree, and the judge's outcome (see the module's rules; None when not parsed)."""
    if verdicts.empty:
        return pd.DataFrame(columns=JUDGE_PAIR_COLUMNS)
    frame = verdicts.assign(outcome=verdict_outcomes(verdicts))
    wide = frame.pivot_table(
        index=["comparison_id", "criterion"], columns="order", values="outcome", aggfunc="first", dropna=False
    )
    wide = wide.reindex(columns=list(ORDERS))
    # Only pairs with both orders stored are pairs at all: a single order is never counted.
    both = frame.groupby(["comparison_id", "criterion"])["order"].nunique() == len(ORDERS)
    wide = wide[both.reindex(wide.index, fill_value=False)]
    result = wide.reset_index().rename(columns={"ab": "outcome_ab", "ba": "outcome_ba"})
    result["outcome_ab"] = result["outcome_ab"].astype(object).where(result["outcome_ab"].notna(), None)
    result["outcome_ba"] = result["outcome_ba"].astype(object).where(result["outcome_ba"].notna(), None)
    parsed = result["outcome_ab"].notna() & result["outcome_ba"].notna()
    consistent = parsed & (result["outcome_ab"] == result["outcome_ba"])
    judge = np.full(len(result), None, dtype=object)
    judge[parsed.to_numpy(dtype=bool)] = "tie"
    judge[consistent.to_numpy(dtype=bool)] = result["outcome_ab"].to_numpy(dtype=object)[
        consistent.to_numpy(dtype=bool)
    ]
    result["parsed"] = parsed.to_numpy(dtype=bool)
    result["consistent"] = consistent.to_numpy(dtype=bool)
    result["judge"] = pd.Series(judge, dtype=object)
    result.columns.name = None
    return result[JUDGE_PAIR_COLUMNS]


def human_majorities(votes: pd.DataFrame) -> pd.DataFrame:
    """The human votes of each (pair, criterion) counted, and their majority (a tie when two outcomes share the top
    count). Needs comparison_id, criterion, outcome."""
    if votes.empty:
        return pd.DataFrame(columns=MAJORITY_COLUMNS)
    counts = (
        votes.groupby(["comparison_id", "criterion", "outcome"], observed=True)
        .size()
        .unstack("outcome", fill_value=0)
        .reindex(columns=list(LABELS), fill_value=0)
    )
    values = counts.to_numpy()
    top = values.max(axis=1, keepdims=True)
    unique_top = (values == top).sum(axis=1) == 1
    winner = np.array(LABELS, dtype=object)[values.argmax(axis=1)]
    result = counts.reset_index()
    result.columns = ["comparison_id", "criterion", "votes_a", "votes_tie", "votes_b"]
    result["n_votes"] = values.sum(axis=1)
    result["human"] = np.where(unique_top, winner, "tie")
    return result[MAJORITY_COLUMNS]


def cohens_kappa(first: Any, second: Any, labels: tuple[str, ...] = LABELS) -> float:
    """Cohen's κ of two raters' labels on the same items: (p_o − p_e) / (1 − p_e); NaN without items or when
    chance agreement is certain (both raters always give one and the same label)."""
    matrix = _confusion_counts(np.asarray(first, dtype=object), np.asarray(second, dtype=object), labels)
    return _kappa_of(matrix[np.newaxis])[0]


def _confusion_counts(first: np.ndarray, second: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    codes = {label: code for code, label in enumerate(labels)}
    k = len(labels)
    rows = np.array([codes[value] for value in first], dtype=np.int64)
    columns = np.array([codes[value] for value in second], dtype=np.int64)
    return np.bincount(rows * k + columns, minlength=k * k).reshape(k, k)


def _kappa_of(matrices: np.ndarray) -> np.ndarray:
    """κ of each of a stack of k × k confusion count matrices."""
    totals = matrices.sum(axis=(1, 2)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.trace(matrices, axis1=1, axis2=2) / totals
        expected = (matrices.sum(axis=2) * matrices.sum(axis=1)).sum(axis=1) / totals**2
        kappa = (observed - expected) / (1.0 - expected)
    kappa[(totals == 0) | np.isclose(expected, 1.0)] = math.nan
    return kappa


def kappa_interval(
    first: Any, second: Any, *, n_boot: int = 1000, seed: int = 0, labels: tuple[str, ...] = LABELS
) -> tuple[float, float]:
    """A 95% percentile bootstrap interval of Cohen's κ, resampling the items (pairs) with replacement; NaN for
    fewer than two items."""
    first_array = np.asarray(first, dtype=object)
    second_array = np.asarray(second, dtype=object)
    n = first_array.size
    if n < 2 or n_boot < 1:
        return math.nan, math.nan
    k = len(labels)
    codes = {label: code for code, label in enumerate(labels)}
    cells = np.array([codes[a] * k + codes[b] for a, b in zip(first_array, second_array, strict=True)])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    picked = cells[draws] + (np.arange(n_boot) * k * k)[:, np.newaxis]
    matrices = np.bincount(picked.ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k)
    kappas = _kappa_of(matrices)
    kappas = kappas[~np.isnan(kappas)]
    if kappas.size == 0:
        return math.nan, math.nan
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    low, high = np.percentile(kappas, [tail, 100.0 - tail])
    return float(low), float(high)


def matched(pairs: pd.DataFrame, majorities: pd.DataFrame) -> pd.DataFrame:
    """Judged pairs (with a judge outcome) that also have a human majority, one row each, both frames' columns."""
    judged = pairs[pairs["judge"].notna()] if not pairs.empty else pairs
    if judged.empty or majorities.empty:
        return pd.DataFrame(columns=[*JUDGE_PAIR_COLUMNS, *MAJORITY_COLUMNS[2:]])
    return judged.merge(majorities, on=["comparison_id", "criterion"], how="inner")


def confusion_table(both: pd.DataFrame) -> pd.DataFrame:
    """Counts of judge outcome (rows) × human majority (columns), labels a / tie / b, from `matched`'s frame."""
    if both.empty:
        return pd.DataFrame(0, index=list(LABELS), columns=list(LABELS))
    matrix = _confusion_counts(both["judge"].to_numpy(dtype=object), both["human"].to_numpy(dtype=object), LABELS)
    return pd.DataFrame(matrix, index=list(LABELS), columns=list(LABELS))


def disagreements(both: pd.DataFrame, *, limit: int = 20) -> pd.DataFrame:
    """The pairs where judge and humans disagree most: the share of human votes *against* the judge's outcome,
    highest first (more human votes first among equals); only pairs where the judge differs from the majority."""
    if both.empty:
        return both.assign(against=pd.Series(dtype=float))
    votes_for = np.select(
        [both["judge"] == "a", both["judge"] == "b"], [both["votes_a"], both["votes_b"]], both["votes_tie"]
    )
    against = 1.0 - votes_for / both["n_votes"].to_numpy(dtype=float)
    frame = both.assign(against=against)
    frame = frame[frame["judge"] != frame["human"]]
    return frame.sort_values(["against", "n_votes", "comparison_id"], ascending=[False, False, True]).head(limit)


def position_bias(verdicts: pd.DataFrame) -> tuple[float, float, int]:
    """Of the decisive parsed verdicts: the share naming the answer shown first, its two-sided binomial p-value
    against ½, and their number. Needs choice."""
    choice = verdicts["choice"]
    first = int((choice == "left").sum())
    second = int((choice == "right").sum())
    n = first + second
    return (first / n if n else math.nan), sign_test_p_value(first, second), n


def length_bias(verdicts: pd.DataFrame, pairs: pd.DataFrame) -> tuple[float, float, int]:
    """Of the decisive parsed verdicts on answers of unequal length: the share preferring the longer answer, its
    binomial p-value against ½, and their number. Needs order, choice; pairs: comparison_id, length_a, length_b."""
    if verdicts.empty:
        return math.nan, 1.0, 0
    frame = verdicts.assign(outcome=verdict_outcomes(verdicts)).merge(
        pairs[["comparison_id", "length_a", "length_b"]], on="comparison_id", how="inner"
    )
    frame = frame[frame["outcome"].isin(["a", "b"]) & (frame["length_a"] != frame["length_b"])]
    longer = np.where(frame["length_a"] > frame["length_b"], "a", "b")
    wins = int((frame["outcome"].to_numpy(dtype=object) == longer).sum())
    n = len(frame)
    return (wins / n if n else math.nan), sign_test_p_value(wins, n - wins), n


def judge_votes(verdicts: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The judge's parsed verdicts as a votes frame for statistics.leaderboard: each order one vote (criterion,
    variant_a, variant_b, outcome)."""
    frame = verdicts.assign(outcome=verdict_outcomes(verdicts))
    frame = frame[frame["outcome"].notna()]
    joined = frame.merge(pairs[["comparison_id", "variant_a", "variant_b"]], on="comparison_id", how="inner")
    return joined[["comparison_id", "criterion", "variant_a", "variant_b", "outcome"]].reset_index(drop=True)


@dataclass
class JudgeCalibration:
    """Everything the calibration page shows: one summary row per criterion (SUMMARY_COLUMNS), and per criterion
    the confusion table, the worst disagreements, and the judge-only leaderboard."""

    summary: pd.DataFrame
    confusion: dict[str, pd.DataFrame] = field(default_factory=dict)
    disagreements: dict[str, pd.DataFrame] = field(default_factory=dict)
    leaderboard: pd.DataFrame = field(default_factory=pd.DataFrame)


def calibration(
    verdicts: pd.DataFrame,
    pairs: pd.DataFrame,
    votes: pd.DataFrame,
    *,
    criteria: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    disagreement_limit: int = 20,
) -> JudgeCalibration:
    """The calibration of a judge against the humans, per criterion (those of `criteria` in that order, else the
    criteria the verdicts hold)."""
    judged = judge_pairs(verdicts)
    majorities = human_majorities(votes)
    both_all = matched(judged, majorities)
    names = criteria if criteria is not None else sorted(verdicts["criterion"].unique()) if len(verdicts) else []
    rows = []
    result = JudgeCalibration(summary=pd.DataFrame(columns=SUMMARY_COLUMNS))
    for criterion in names:
        own_verdicts = verdicts[verdicts["criterion"] == criterion]
        own_pairs = judged[judged["criterion"] == criterion]
        both = both_all[both_all["criterion"] == criterion]
        parsed = own_pairs[own_pairs["parsed"]]
        first_share, first_p, _ = position_bias(own_verdicts)
        longer_share, longer_p, _ = length_bias(own_verdicts, pairs)
        judge_labels = both["judge"].to_numpy(dtype=object)
        human_labels = both["human"].to_numpy(dtype=object)
        low, high = kappa_interval(judge_labels, human_labels, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "criterion": criterion,
                "pairs": len(own_pairs),
                "unparseable": int(own_verdicts["choice"].isna().sum()),
                "consistency": float(parsed["consistent"].mean()) if len(parsed) else math.nan,
                "first_share": first_share,
                "first_p_value": first_p,
                "longer_share": longer_share,
                "longer_p_value": longer_p,
                "n_agreement": len(both),
                "agreement": float((judge_labels == human_labels).mean()) if len(both) else math.nan,
                "kappa": cohens_kappa(judge_labels, human_labels),
                "kappa_ci_low": low,
                "kappa_ci_high": high,
            }
        )
        result.confusion[criterion] = confusion_table(both)
        result.disagreements[criterion] = disagreements(both, limit=disagreement_limit)
    if rows:
        result.summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    votes_of_judge = judge_votes(verdicts, pairs) if len(verdicts) else pd.DataFrame()
    if len(votes_of_judge):
        result.leaderboard = leaderboard(votes_of_judge, n_boot=n_boot, seed=seed)
    return result
