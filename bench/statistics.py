"""Benchmark of the statistics core on a million synthetic judgements × 6 criteria × 10 variants (a 6M-row frame).

Run: `.venv/bin/python bench/statistics.py [--judgements 1000000] [--fastchat-rounds 10] [--rounds 1000]`
It prints one JSON report.

(a) The Bradley-Terry leaderboard of one criterion, two ways:
    - FastChat's (`compute_mle_elo` + `get_bootstrap_result` in lmsys/FastChat's elo_analysis.py): the battle list
      expanded row by row (each battle twice, a tie as one win and one loss), every bootstrap round resamples the
      rows and refits a logistic regression on them. FastChat calls sklearn; sklearn is not installed here, so the
      same row-level fit is done by Newton-IRLS in numpy (fewer iterations than sklearn's lbfgs, so if anything this
      flatters FastChat). Its rounds are far too slow for 1000 on a million rows, so a fixed few are timed and the
      per-round time is extrapolated linearly to 1000 rounds — the report says so.
    - Prefloop's (`evaluator.stats.statistics.leaderboard` on one criterion): aggregated (pair, outcome) cells, one
      multinomial per round, all rounds refit in one batched Newton solve.
    Both point estimates must agree to 1e-6 rating points.
(b) `campaign_statistics` on the whole frame, cold (criterion and outcome as plain strings, as the selector builds
    them), with the per-part timings. The synthetic frame carries the style columns (length and markdown counts of
    both answers, with planted style effects), so the total includes the style-controlled Bradley-Terry of every
    criterion with its 1000-round bootstrap (`style_control_s`), as well as the outlier-annotator test. The outcome
    counts per (criterion, comparison), which agreement and style control both start from, are counted once and
    timed on their own (`comparison_counts` in `parts_s`).
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluator.stats import statistics  # after the path fix, so the script runs from anywhere

CRITERIA = ("overall", "helpfulness", "correctness", "safety", "style", "concision")
N_VARIANTS = 10


def fastchat_battle_fit(variant_a: np.ndarray, variant_b: np.ndarray, outcome: np.ndarray, n_variants: int) -> Any:
    """FastChat's compute_mle_elo on indices 0..n_variants−1: duplicate every battle, fit a row-level logistic model.

    Rows 0..N−1 are the battles, rows N..2N−1 their copies; y = 1 for an a-win in both copies and for a tie in the
    first copy only (one tie = one win + one loss, i.e. half a win). No intercept, ±1 design; the reference variant's
    column is dropped (FastChat leans on sklearn's solver for the same indeterminacy) and ratings are centred.
    """
    n = variant_a.size
    rows = np.arange(2 * n)
    design = np.zeros((2 * n, n_variants))
    design[rows, np.tile(variant_a, 2)] = 1.0
    design[rows, np.tile(variant_b, 2)] = -1.0
    design = design[:, 1:]
    target = np.tile(outcome == statistics.WIN_A, 2).astype(float)
    target[:n][outcome == statistics.TIE] = 1.0
    beta = np.zeros(n_variants - 1)
    for _ in range(statistics.NEWTON_MAX_ITERATIONS):
        probability = 1.0 / (1.0 + np.exp(-(design @ beta)))
        gradient = design.T @ (target - probability)
        information = (design * (probability * (1.0 - probability))[:, None]).T @ design
        step = np.linalg.solve(information, gradient)
        beta += step
        if np.max(np.abs(step)) < statistics.NEWTON_TOLERANCE:
            break
    return statistics.strengths_to_ratings(np.concatenate([[0.0], beta]))


def fastchat_bootstrap(
    variant_a: np.ndarray, variant_b: np.ndarray, outcome: np.ndarray, n_variants: int, *, rounds: int, seed: int
) -> np.ndarray:
    """FastChat's get_bootstrap_result: each round resamples the battle rows with replacement and refits."""
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(rounds):
        sample = rng.integers(0, variant_a.size, variant_a.size)
        results.append(fastchat_battle_fit(variant_a[sample], variant_b[sample], outcome[sample], n_variants))
    return np.array(results)


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def compare_leaderboards(votes: pd.DataFrame, *, fastchat_rounds: int, rounds: int) -> dict[str, Any]:
    one = votes[votes["criterion"] == "overall"]
    variant_a = one["variant_a"].to_numpy() - 1  # synthetic variants are 1..N_VARIANTS
    variant_b = one["variant_b"].to_numpy() - 1
    outcome = statistics.outcome_codes(one["outcome"])

    fastchat_point, fastchat_point_s = timed(fastchat_battle_fit, variant_a, variant_b, outcome, N_VARIANTS)
    _, fastchat_rounds_s = timed(
        fastchat_bootstrap, variant_a, variant_b, outcome, N_VARIANTS, rounds=fastchat_rounds, seed=0
    )
    fastchat_per_round = fastchat_rounds_s / fastchat_rounds

    board, prefloop_s = timed(statistics.leaderboard, one, n_boot=rounds, seed=0)
    prefloop_point = board.sort_values("variant")["rating"].to_numpy()
    max_difference = float(np.max(np.abs(prefloop_point - fastchat_point)))
    assert max_difference < 1e-6, f"point estimates differ by {max_difference}"

    prefloop_per_round = prefloop_s / rounds
    fastchat_extrapolated = fastchat_point_s + fastchat_per_round * rounds
    return {
        "rows_one_criterion": len(one),
        "max_point_estimate_difference": max_difference,
        "fastchat_point_fit_s": fastchat_point_s,
        "fastchat_rounds_timed": fastchat_rounds,
        "fastchat_s_per_round": fastchat_per_round,
        "fastchat_1000_rounds_s_extrapolated": fastchat_extrapolated,
        "fastchat_note": f"FastChat way timed on {fastchat_rounds} rounds and extrapolated linearly to {rounds}",
        "prefloop_rounds": rounds,
        "prefloop_leaderboard_s": prefloop_s,
        "prefloop_s_per_round": prefloop_per_round,
        "speedup_at_1000_rounds": fastchat_extrapolated / prefloop_s,
        "speedup_per_round": fastchat_per_round / prefloop_per_round,
        "target_speedup_met": fastchat_extrapolated / prefloop_s >= 20,
        "target_prefloop_under_2s_met": prefloop_s < 2.0,
    }


def time_campaign(votes: pd.DataFrame, *, rounds: int) -> dict[str, Any]:
    # As the selector builds it: strings, not categoricals, so the encoding cost is part of the measurement.
    cold = votes.astype({"criterion": "str", "outcome": "str"})
    result, total = timed(statistics.campaign_statistics, cold, n_boot=rounds, seed=0)
    report = json.dumps(result.to_json())
    return {
        "rows": len(cold),
        "n_boot": rounds,
        "campaign_statistics_s": total,
        "style_control_s": result.timings.get("style_control"),
        "style_control_bootstrap": result.style_control.bootstrap if result.style_control is not None else None,
        "annotator_outliers_s": result.timings.get("annotator_outliers"),
        "parts_s": result.timings,
        "target_under_3s_met": total < 3.0,
        "json_bytes": len(report),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgements", type=int, default=1_000_000)
    parser.add_argument("--prompts", type=int, default=2_000)
    parser.add_argument("--annotators", type=int, default=60)
    parser.add_argument("--fastchat-rounds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()

    votes, generate_s = timed(
        statistics.synthetic_votes,
        args.judgements,
        n_variants=N_VARIANTS,
        criteria=CRITERIA,
        n_prompts=args.prompts,
        n_annotators=args.annotators,
        left_bias=0.1,
        style_effects={"length": 0.3, "bold": 0.1},
        seed=0,
    )
    report = {
        "command": " ".join(["bench/statistics.py", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "judgements": args.judgements,
        "criteria": len(CRITERIA),
        "variants": N_VARIANTS,
        "votes_rows": len(votes),
        "generate_s": generate_s,
        "leaderboard_one_criterion": compare_leaderboards(
            votes, fastchat_rounds=args.fastchat_rounds, rounds=args.rounds
        ),
        "campaign_statistics_cold": time_campaign(votes, rounds=args.rounds),
    }
    print(json.dumps(report, indent=2, default=lambda value: None if math.isnan(value) else value))


if __name__ == "__main__":
    main()
