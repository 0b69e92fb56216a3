"""Pure preference statistics: pandas in, DataFrames and dataclasses out, no ORM, no Django.

A *votes* frame has one row per judgement × criterion with the columns of VOTE_COLUMNS:
judgement_id, comparison_id, prompt_id, annotator_id (ints); criterion (str; the rubric slugs and "overall");
variant_a < variant_b (ints, the comparison's two variants); outcome in {"a", "b", "tie"} (which *variant* won);
left_is_a (bool, candidate a was shown on the left); length_a, length_b (ints, answer lengths in characters);
time_on_task_ms (int); created_at (timezone-aware datetime). Optional: category (str, the prompt's tag; "" for none)
and the style columns STYLE_COLUMNS (length_a/b and the markdown counts headers_a/b, lists_a/b, bold_a/b of
`markdown_style_counts`), which enable the per-category leaderboards and style control.

Entry points for other callers: `leaderboard` (Bradley-Terry per criterion), `style_controlled_leaderboard` (with
style covariates), `fit_bradley_terry_covariates` (the fit itself on cells), `annotator_outliers`,
`category_leaderboards`, and `campaign_statistics` (everything).

Every function needs only the columns it reads, so tests can pass small frames. The heavy parts work on aggregated
counts rather than on rows, which is what keeps a million judgements × six criteria in the low seconds:

- the clustered bootstrap of the pairwise table multiplies one matrix of prompt weights (rounds × prompts) by one
  matrix of per-prompt outcome counts (prompts × cells);
- Bradley-Terry is a weighted logistic regression on the unique (variant pair, outcome) cells, and its bootstrap
  draws those cells' counts from one multinomial per round and refits all rounds at once with a batched Newton solve;
- style control fits on comparisons (every judgement of one comparison shares its answers, hence its covariates),
  all criteria in one batched Newton solve whose per-pair sums run over the comparisons sorted by pair;
- agreement sums over the handful of distinct per-comparison count rows, each weighted by how many comparisons
  have it, and the sign tests are one vectorised binomial cdf.

Run the benchmark with `.venv/bin/python bench/statistics.py` (see its docstring).
"""

import math
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.special import expit
from scipy.stats import binom, norm
from scipy.stats import t as student_t

VOTE_COLUMNS = [
    "judgement_id",
    "comparison_id",
    "prompt_id",
    "annotator_id",
    "criterion",
    "variant_a",
    "variant_b",
    "outcome",
    "left_is_a",
    "length_a",
    "length_b",
    "time_on_task_ms",
    "created_at",
]
OVERALL = "overall"
PAIR_KEYS = ["criterion", "variant_a", "variant_b"]
PAIR_COLUMNS = [
    *PAIR_KEYS,
    "wins_a",
    "wins_b",
    "ties",
    "n",
    "tie_rate",
    "win_rate_a",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "cohens_h",
    "n_for_80_power",
]
LEADERBOARD_COLUMNS = ["criterion", "variant", "rating", "ci_low", "ci_high", "rank"]
AGREEMENT_COLUMNS = ["criterion", "krippendorff_alpha", "fleiss_kappa", "n_units"]
ANNOTATOR_COLUMNS = ["annotator_id", "decisive", "left_share", "p_value"]

# Ordinal codes of an outcome, seen from variant a: a win, a tie (the middle), a loss. Krippendorff's ordinal α needs
# the tie in the middle; the cell layout of the count matrices below uses the same order.
OUTCOME_CODES = {"a": 0, "tie": 1, "b": 2}
WIN_A, TIE, WIN_B = 0, 1, 2

ALPHA = 0.05
POWER = 0.8
CONFIDENCE = 0.95
# Elo-style scale: 400 points per factor of ten in Bradley-Terry strength, the mean variant at 1000.
RATING_SCALE = 400.0 / math.log(10.0)
RATING_CENTRE = 1000.0
# A Gaussian prior this weak moves a well-determined estimate by ~1e-8 of its standard error, yet keeps the fit
# finite when a variant won (or lost) every game and keeps the information matrix invertible on a disconnected
# comparison graph. Each connected component is then centred at 1000 on its own (strengths_to_ratings): ratings are
# only comparable inside one component.
RIDGE = 1e-8
NEWTON_TOLERANCE = 1e-11
NEWTON_MAX_ITERATIONS = 200
# Style-control bootstrap refits feed percentiles, not point estimates: 1e-7 is far below their noise. On a small
# campaign some rounds are (nearly) separated along a style direction, where Newton wanders on a flat likelihood and
# never converges; such a round stops after BOOTSTRAP_MAX_ITERATIONS steps with a large coefficient — what a
# separated round means — instead of holding the whole batch to NEWTON_MAX_ITERATIONS.
BOOTSTRAP_TOLERANCE = 1e-7
BOOTSTRAP_MAX_ITERATIONS = 40
# Below this step size Newton is taken to be in its quadratic phase, where the size of the next step can be
# predicted from the last two (`_newton_converged`). Small enough that the information matrix returned with the
# estimate (computed one step of at most this size earlier) equals the one at the estimate to ~1e-7 relative.
QUADRATIC_PHASE_STEP = 1e-7
# Newton on a (nearly) separated round can overshoot; a step cap keeps it monotone at the cost of a few iterations.
NEWTON_MAX_STEP = 4.0
# Bootstrap rounds are processed in chunks so the weight matrix stays below ~this many entries.
BOOTSTRAP_CHUNK_ENTRIES = 20_000_000


# ----------------------------------------------------------------------------------------------------------------
# Tests and corrections
# ----------------------------------------------------------------------------------------------------------------


def sign_test_p_value(wins_a: int, wins_b: int) -> float:
    """Exact two-sided binomial sign test on the decisive votes (ties excluded); 1.0 with none."""
    return float(sign_test_p_values([wins_a], [wins_b])[0])


def sign_test_p_values(wins_a: Any, wins_b: Any) -> np.ndarray:
    """`sign_test_p_value` of many (wins_a, wins_b) at once.

    Under p = ½ the binomial is symmetric, so the exact two-sided p-value (every outcome no likelier than the
    observed one, as scipy's `binomtest` sums them) is 2·P(X ≤ min(k, n − k)), capped at 1: one vectorised cdf
    instead of a binomtest per pair.
    """
    wins_a = np.asarray(wins_a, dtype=np.int64)
    wins_b = np.asarray(wins_b, dtype=np.int64)
    decisive = wins_a + wins_b
    tail = binom.cdf(np.minimum(wins_a, wins_b), np.maximum(decisive, 1), 0.5)
    return np.where(decisive > 0, np.minimum(2.0 * tail, 1.0), 1.0)


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaNs stay NaN and are not counted in the family)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = present.size
    if m == 0:
        return adjusted
    order = present[np.argsort(p[present], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    # The running maximum keeps the adjusted values in the same order as the raw ones (step-down monotonicity).
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def cohens_h(share: Any) -> Any:
    """Cohen's h of a proportion against ½: 2·asin(√p) − 2·asin(√½)."""
    return 2.0 * np.arcsin(np.sqrt(share)) - 2.0 * np.arcsin(math.sqrt(0.5))


def additional_n_for_power(h: Any, already: Any, *, alpha: float = ALPHA, power: float = POWER) -> np.ndarray:
    """More decisive judgements needed for `power` at effect `h` in a two-sided level-`alpha` test; NaN when h = 0.

    Normal approximation n = ((z_{1-α/2} + z_power) / h)², minus the `already` collected, floored at 0.
    """
    h = np.abs(np.asarray(h, dtype=float))
    z_sum = norm.ppf(1.0 - alpha / 2.0) + norm.ppf(power)
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.ceil((z_sum / h) ** 2)
    extra = np.maximum(needed - np.asarray(already, dtype=float), 0.0)
    return np.where((h > 0) & np.isfinite(h), extra, np.nan)


def sign_test_power(n: int, win_rate: float, *, alpha: float = ALPHA) -> float:
    """Power of the two-sided level-`alpha` sign test on `n` decisive judgements when the true win rate is
    `win_rate`, by the same normal approximation on Cohen's h as `additional_n_for_power`; 0 with no judgement."""
    if n <= 0:
        return 0.0
    shift = abs(float(cohens_h(win_rate))) * math.sqrt(n)
    z = norm.ppf(1.0 - alpha / 2.0)
    return float(norm.cdf(shift - z) + norm.cdf(-shift - z))


# ----------------------------------------------------------------------------------------------------------------
# Encoding: integer codes once, so everything after is bincount and matrix algebra
# ----------------------------------------------------------------------------------------------------------------


def outcome_codes(outcome: pd.Series) -> np.ndarray:
    """The outcome column as ordinal codes (a → 0, tie → 1, b → 2), via the categories so 6M strings map once."""
    categorical = outcome if isinstance(outcome.dtype, pd.CategoricalDtype) else outcome.astype("category")
    lookup = np.array([OUTCOME_CODES[str(value)] for value in categorical.cat.categories] + [-1], dtype=np.int64)
    codes = lookup[categorical.cat.codes.to_numpy()]
    if (codes < 0).any():
        raise ValueError("outcome must be one of 'a', 'b', 'tie'")
    return codes


def _factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense integer codes and the sorted unique values they index.

    Integer ids in a compact range (database keys, the keys built from them below) skip the hash table: a presence
    table over the range and its running count give the same sorted codes several times faster.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _factorize_categorical(values)
    array = values.to_numpy()
    if array.size and array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if high - low <= 4 * array.size:
            offset = array - low
            present = np.zeros(high - low + 1, dtype=bool)
            present[offset] = True
            rank = np.cumsum(present, dtype=np.int64) - 1
            return rank[offset], np.flatnonzero(present) + low
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _factorize_categorical(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """`_factorize` of a categorical through its codes: the used categories in the categorical's order (as
    `pd.factorize(sort=True)` gives them), without touching the rows' values (6M strings would be materialised
    otherwise)."""
    codes = values.cat.codes.to_numpy()
    categories = np.asarray(values.cat.categories)
    seen = np.zeros(categories.size + 1, dtype=bool)
    seen[codes] = True  # a missing value's code −1 marks the last slot
    if seen[-1]:  # missing values: pandas' own handling
        missing_codes, uniques = pd.factorize(values, sort=True)
        return missing_codes.astype(np.int64), np.asarray(uniques)
    used = np.flatnonzero(seen[:-1])
    if used.size == categories.size:
        # Every category used: the codes are the answer.
        return codes.astype(np.int64), categories
    rank = np.full(categories.size, -1, dtype=np.int64)
    rank[used] = np.arange(used.size)
    return rank[codes], categories[used]


@dataclass(frozen=True)
class _PairCells:
    """Votes reduced to (criterion, variant pair) groups: their keys, the group of every row, and counts."""

    keys: pd.DataFrame  # criterion, variant_a, variant_b; one row per group, sorted
    group: np.ndarray  # group index of every vote row
    outcome: np.ndarray  # outcome code of every vote row
    counts: np.ndarray  # groups × 3 (wins_a, ties, wins_b)


def _pair_cells(votes: pd.DataFrame) -> _PairCells:
    criterion, criteria = _factorize(votes["criterion"])
    variant_a = votes["variant_a"].to_numpy(dtype=np.int64)
    variant_b = votes["variant_b"].to_numpy(dtype=np.int64)
    # One int64 key per (criterion, a, b); factorize with sort=True gives groups ordered by criterion then pair.
    span = int(max(variant_a.max(), variant_b.max())) + 1
    key = (criterion * span + variant_a) * span + variant_b
    group, unique_keys = _factorize(pd.Series(key))
    outcome = outcome_codes(votes["outcome"])
    counts = np.bincount(group * 3 + outcome, minlength=len(unique_keys) * 3).reshape(-1, 3)
    keys = pd.DataFrame(
        {
            "criterion": criteria[unique_keys // (span * span)],
            "variant_a": (unique_keys // span) % span,
            "variant_b": unique_keys % span,
        }
    )
    return _PairCells(keys=keys, group=group, outcome=outcome, counts=counts)


# ----------------------------------------------------------------------------------------------------------------
# Pairwise table with a prompt-clustered bootstrap
# ----------------------------------------------------------------------------------------------------------------


def _net_win_rate(counts: np.ndarray) -> np.ndarray:
    """(wins_a + ½ ties) / n over the last axis of (…, 3) counts; NaN where there are no votes."""
    total = counts.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (counts[..., WIN_A] + 0.5 * counts[..., TIE]) / total


def _multinomial_rounds(rng: np.random.Generator, n_items: int, n_rounds: int) -> np.ndarray:
    """How often each of `n_items` is drawn in each round of drawing `n_items` with replacement (rounds × items)."""
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_rounds).astype(np.float64)


def _prompt_bootstrap_win_rates(
    cells: _PairCells, prompt_id: pd.Series, *, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Net win rate of every group in each of `n_boot` rounds that resample *prompts* (rounds × groups).

    Votes on one prompt are correlated (a hard prompt trips both variants), so the prompt, not the vote, is the unit
    that is resampled. Resampling prompts globally keeps the rounds consistent across criteria and pairs. A round's
    counts are weights (how often each prompt was drawn) times the prompts × cells count matrix — one matmul.
    """
    prompt, _ = _factorize(prompt_id)
    n_prompts = int(prompt.max()) + 1
    n_cells = cells.counts.size
    cell = cells.group * 3 + cells.outcome
    matrix: Any
    if n_prompts * n_cells <= BOOTSTRAP_CHUNK_ENTRIES:
        # Dense BLAS beats a sparse product by far while the matrix fits comfortably in memory.
        flat = np.bincount(prompt * n_cells + cell, minlength=n_prompts * n_cells)
        matrix = flat.reshape(n_prompts, n_cells).astype(np.float64)
    else:
        matrix = sparse.csr_matrix((np.ones(prompt.size), (prompt, cell)), shape=(n_prompts, n_cells))
    chunk = max(1, BOOTSTRAP_CHUNK_ENTRIES // n_prompts)
    rates = []
    for start in range(0, n_boot, chunk):
        weights = _multinomial_rounds(rng, n_prompts, min(chunk, n_boot - start))
        round_counts = np.asarray(weights @ matrix).reshape(weights.shape[0], -1, 3)
        rates.append(_net_win_rate(round_counts))
    return np.concatenate(rates)


def _percentile_interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% percentile interval over axis 0, ignoring rounds where the statistic is undefined."""
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    if samples.shape[0] == 0:
        empty = np.full(samples.shape[1:], np.nan)
        return empty, empty
    if not np.isnan(samples).any():
        # The common case, and nanpercentile's column-by-column path is far slower than percentile's.
        low, high = np.percentile(samples, [tail, 100.0 - tail], axis=0)
        return low, high
    with warnings.catch_warnings():
        # A statistic undefined in every round (a pair nobody judged decisively) is a NaN interval, not a warning.
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [tail, 100.0 - tail], axis=0)
    return low, high


def pairwise_table(votes: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Wins, ties, net win rate with a prompt-clustered bootstrap CI, sign test, Holm, Cohen's h and power.

    One row per (criterion, variant pair) in `votes`. win_rate_a counts ties as half a win; the sign test and the
    effect size use the decisive votes only. p_holm adjusts over the whole family of rows (all criteria × pairs).
    n_for_80_power is how many *more* decisive judgements would give 80% power at the observed effect (two-sided
    α = 0.05, normal approximation); NaN when the observed effect is zero. Needs criterion, variant_a, variant_b,
    outcome, and prompt_id for the CI (without prompt_id every vote is its own cluster).
    """
    if votes.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    clusters = votes["prompt_id"] if "prompt_id" in votes else pd.Series(np.arange(len(votes)))
    return _pairwise_table_of(_pair_cells(votes), clusters, n_boot=n_boot, seed=seed)


def _pairwise_table_of(cells: _PairCells, clusters: pd.Series, *, n_boot: int, seed: int) -> pd.DataFrame:
    table = cells.keys.copy()
    wins_a, ties, wins_b = (cells.counts[:, code] for code in (WIN_A, TIE, WIN_B))
    table["wins_a"], table["wins_b"], table["ties"] = wins_a, wins_b, ties
    table["n"] = wins_a + wins_b + ties
    table["tie_rate"] = ties / table["n"]
    table["win_rate_a"] = _net_win_rate(cells.counts)

    if n_boot > 0:
        rounds = _prompt_bootstrap_win_rates(cells, clusters, n_boot=n_boot, rng=np.random.default_rng(seed))
        table["ci_low"], table["ci_high"] = _percentile_interval(rounds)
    else:
        table["ci_low"] = table["ci_high"] = np.nan

    table["p_value"] = sign_test_p_values(wins_a, wins_b)
    table["p_holm"] = holm(table["p_value"])
    decisive = wins_a + wins_b
    with np.errstate(divide="ignore", invalid="ignore"):
        table["cohens_h"] = cohens_h(wins_a / decisive)
    table["n_for_80_power"] = additional_n_for_power(table["cohens_h"], decisive)
    return table[PAIR_COLUMNS].sort_values(["variant_a", "variant_b", "criterion"], ignore_index=True)


# ----------------------------------------------------------------------------------------------------------------
# Weighted logistic regression (Bradley-Terry and its covariate variants), batched over bootstrap rounds
# ----------------------------------------------------------------------------------------------------------------


def fit_weighted_logistic(
    design: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray,
    *,
    start: np.ndarray | None = None,
    ridge: float = RIDGE,
    tolerance: float = NEWTON_TOLERANCE,
    max_iterations: int = NEWTON_MAX_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood coefficients of P(success) = σ(design @ β) for R data sets at once, by Newton's method.

    design is cells × p; successes and trials are (R, cells) — fractional successes are fine (a tie is half a win).
    Returns (β of shape (R, p), observed information of shape (R, p, p) at β). All R fits share the design, so each
    Newton step is a batched matrix product and a batched p × p solve: a thousand bootstrap refits cost about as much
    as a handful of single fits. `ridge` is a Gaussian prior precision (see RIDGE).
    """
    successes = np.atleast_2d(np.asarray(successes, dtype=float))
    trials = np.atleast_2d(np.asarray(trials, dtype=float))
    n_sets, n_params = trials.shape[0], design.shape[1]
    beta = np.zeros((n_sets, n_params)) if start is None else np.array(np.broadcast_to(start, (n_sets, n_params)))
    prior = ridge * np.eye(n_params)
    # Σ_k w_rk·x_k x_kᵀ for every data set r is one (R × cells)·(cells × p²) matrix product on the cells' outer
    # products: BLAS, several times faster than the equivalent einsum.
    outer = (design[:, :, None] * design[:, None, :]).reshape(design.shape[0], -1)

    def information_at(probability: np.ndarray) -> np.ndarray:
        weight = trials * probability * (1.0 - probability)
        return (weight @ outer).reshape(n_sets, n_params, n_params) + prior

    previous = None
    for _ in range(max_iterations):
        probability = expit(beta @ design.T)
        gradient = (successes - trials * probability) @ design - ridge * beta
        information = information_at(probability)
        step = np.linalg.solve(information, gradient[..., None])[..., 0]
        step = np.clip(step, -NEWTON_MAX_STEP, NEWTON_MAX_STEP)
        beta += step
        previous, converged = _newton_converged(step, previous, tolerance)
        if converged:
            # β moved by less than the tolerance: the information there is the one just computed, to that order.
            return beta, information
    return beta, information_at(expit(beta @ design.T))


def _newton_converged(step: np.ndarray, previous: np.ndarray | None, tolerance: float) -> tuple[np.ndarray, bool]:
    """Whether Newton's last `step` (R × p) left every data set within `tolerance` of its optimum; also returns the
    step sizes to pass back as `previous` next time.

    Either the step itself was below the tolerance, or the iteration is visibly in its quadratic phase: a step of
    size s after one of size s′ predicts the next as c·s² with c = s/s′², so the remaining error is about s³/s′².
    That spares the last iteration, whose only job would be to confirm a step of ~1e-16.
    """
    size = np.max(np.abs(step), axis=-1, initial=0.0)
    if size.max(initial=0.0) < tolerance:
        return size, True
    if previous is None or size.max() > QUADRATIC_PHASE_STEP:
        return size, False
    with np.errstate(divide="ignore", invalid="ignore"):
        remaining = size**3 / previous**2
    return size, bool(np.all(remaining < tolerance))


def bradley_terry_design(variant_a: np.ndarray, variant_b: np.ndarray, n_variants: int) -> np.ndarray:
    """Rows +1 for variant a, −1 for variant b, without the reference variant 0's column (its strength is 0).

    Dropping one column removes the model's one free constant (adding c to every strength changes nothing), so the
    information matrix is invertible on any connected comparison graph; ratings are re-centred afterwards.
    """
    design = np.zeros((variant_a.size, n_variants))
    rows = np.arange(variant_a.size)
    design[rows, variant_a] = 1.0
    design[rows, variant_b] = -1.0
    return design[:, 1:]


def strengths_to_ratings(log_strengths: np.ndarray, components: np.ndarray | None = None) -> np.ndarray:
    """Ratings 1000 + 400·log10(strength), the mean over variants (last axis) at 1000.

    With `components` (a connected-component label per variant) each component is centred on its own: nothing in
    the data relates one component's level to another's.
    """
    labels = np.zeros(log_strengths.shape[-1], dtype=int) if components is None else components
    centred = np.array(log_strengths, dtype=float)
    for label in np.unique(labels):
        members = labels == label
        centred[..., members] -= centred[..., members].mean(axis=-1, keepdims=True)
    return RATING_CENTRE + RATING_SCALE * centred


def _with_reference(free: np.ndarray) -> np.ndarray:
    """Prepend the reference variant's log-strength 0 to the free ones."""
    return np.concatenate([np.zeros((*free.shape[:-1], 1)), free], axis=-1)


@dataclass(frozen=True)
class BradleyTerryCells:
    """A criterion's votes as unique (variant pair, outcome) cells: enough for the fit and for its bootstrap."""

    variants: np.ndarray  # variant ids; index = position in the design
    pair_a: np.ndarray  # index of variant a of every pair
    pair_b: np.ndarray
    counts: np.ndarray  # pairs × 3 (wins_a, ties, wins_b)

    def design(self) -> np.ndarray:
        return bradley_terry_design(self.pair_a, self.pair_b, self.variants.size)

    def components(self) -> np.ndarray:
        """Connected-component label of every variant in the graph of pairs that played at least once."""
        played = self.counts.sum(axis=1) > 0
        size = self.variants.size
        graph = sparse.coo_matrix((np.ones(played.sum()), (self.pair_a[played], self.pair_b[played])), (size, size))
        return connected_components(graph, directed=False)[1]


def bradley_terry_cells(variant_a: np.ndarray, variant_b: np.ndarray, counts: np.ndarray) -> BradleyTerryCells:
    """Cells from per-pair variant ids and their (wins_a, ties, wins_b) counts."""
    variants, index = np.unique(np.concatenate([variant_a, variant_b]), return_inverse=True)
    return BradleyTerryCells(variants, index[: variant_a.size], index[variant_a.size :], np.asarray(counts, float))


def _successes_and_trials(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tie is half a win and half a loss: successes = wins_a + ½ ties out of all games of the pair."""
    return counts[..., WIN_A] + 0.5 * counts[..., TIE], counts.sum(axis=-1)


def bradley_terry_ratings(cells: BradleyTerryCells) -> np.ndarray:
    """Maximum-likelihood ratings of the cells' variants."""
    successes, trials = _successes_and_trials(cells.counts)
    free, _ = fit_weighted_logistic(cells.design(), successes, trials)
    return strengths_to_ratings(_with_reference(free), cells.components())[0]


def bradley_terry_bootstrap(
    cells: BradleyTerryCells, *, n_boot: int, rng: np.random.Generator, start: np.ndarray | None = None
) -> np.ndarray:
    """Ratings in `n_boot` rounds that resample the battle list (rounds × variants).

    Resampling N battles with replacement is, on aggregated data, one multinomial draw of N over the unique
    (pair, outcome) cells with probabilities count / N: one vectorised call for all rounds, then one batched refit
    warm-started from the point estimate.
    """
    flat = cells.counts.ravel()
    total = int(flat.sum())
    if n_boot == 0 or total == 0:
        return np.empty((0, cells.variants.size))
    draws = rng.multinomial(total, flat / total, size=n_boot).reshape(n_boot, -1, 3).astype(float)
    successes, trials = _successes_and_trials(draws)
    free, _ = fit_weighted_logistic(cells.design(), successes, trials, start=start)
    return strengths_to_ratings(_with_reference(free), cells.components())


def _rank_by_intervals(ci_low: np.ndarray, ci_high: np.ndarray) -> np.ndarray:
    """1 + how many variants' intervals lie entirely above this one's (ties in rank when intervals overlap)."""
    return 1 + (ci_low[None, :] > ci_high[:, None]).sum(axis=1)


def _leaderboard_of(criterion: str, cells: BradleyTerryCells, *, n_boot: int, seed: int) -> pd.DataFrame:
    successes, trials = _successes_and_trials(cells.counts)
    design = cells.design()
    free, _ = fit_weighted_logistic(design, successes, trials)
    components = cells.components()
    ratings = strengths_to_ratings(_with_reference(free), components)[0]
    rounds = bradley_terry_bootstrap(cells, n_boot=n_boot, rng=np.random.default_rng(seed), start=free)
    ci_low, ci_high = _percentile_interval(rounds)
    rank = _rank_by_intervals(ci_low, ci_high) if n_boot > 0 else np.ones(ratings.size, dtype=int)
    return pd.DataFrame(
        {
            "criterion": criterion,
            "variant": cells.variants,
            "rating": ratings,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "rank": rank,
        }
    )


def leaderboard(votes: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Bradley-Terry ratings per criterion with 95% bootstrap CIs and CI-separated ranks.

    Strengths are maximum-likelihood on the aggregated (pair, outcome) counts, a tie counting half a win and half a
    loss; rating = 1000 + 400·log10(strength), mean 1000 per criterion. Only variants that played appear. A variant
    that won or lost everything gets a large but finite rating (see RIDGE), and on a disconnected comparison graph
    each connected component is centred at 1000 separately, so ratings across components are not comparable.
    Needs criterion, variant_a, variant_b, outcome.
    """
    if votes.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    return _leaderboard_from(_pair_cells(votes), n_boot=n_boot, seed=seed)


def _leaderboard_from(pair_cells: _PairCells, *, n_boot: int, seed: int) -> pd.DataFrame:
    boards = []
    for criterion, rows in pair_cells.keys.groupby("criterion", sort=True).groups.items():
        positions = np.asarray(rows)
        keys = pair_cells.keys.iloc[positions]
        cells = bradley_terry_cells(
            keys["variant_a"].to_numpy(), keys["variant_b"].to_numpy(), pair_cells.counts[positions]
        )
        boards.append(_leaderboard_of(str(criterion), cells, n_boot=n_boot, seed=seed))
    board = pd.concat(boards, ignore_index=True)
    return board.sort_values(["criterion", "rating"], ascending=[True, False], ignore_index=True)


# ----------------------------------------------------------------------------------------------------------------
# Inter-annotator agreement
# ----------------------------------------------------------------------------------------------------------------


def fleiss_kappa(value_counts: np.ndarray) -> float:
    """Fleiss' κ of units × categories counts; NaN unless every unit has the same number (≥ 2) of raters."""
    return _fleiss_kappa_of(*_distinct_rows(np.asarray(value_counts)))


def ordinal_alpha(value_counts: np.ndarray) -> float:
    """Krippendorff's ordinal α from units × (a, tie, b) counts; NaN when no unit has two judgements.

    The computation of the `krippendorff` package (`krippendorff.alpha(value_counts=…, value_domain=[0, 1, 2],
    level_of_measurement="ordinal")`, which the tests compare against), on the distinct count rows weighted by how
    many units share each (see `_distinct_rows`).
    """
    return _ordinal_alpha_of(*_distinct_rows(np.asarray(value_counts)))


def _distinct_rows(value_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of units × categories counts and how many units have each (rows with no count dropped).

    With a few raters per comparison there are only a handful of distinct rows among hundreds of thousands of
    units; both agreement coefficients are sums over units, so they run on these instead.
    """
    if value_counts.shape[0] == 0:
        return np.zeros((0, value_counts.shape[1])), np.zeros(0)
    rows, multiplicity = np.unique(value_counts, axis=0, return_counts=True)
    judged = rows.sum(axis=1) > 0
    return rows[judged].astype(float), multiplicity[judged].astype(float)


def _fleiss_kappa_of(rows: np.ndarray, multiplicity: np.ndarray) -> float:
    """`fleiss_kappa` of distinct count rows, each standing for `multiplicity` units."""
    raters = rows.sum(axis=1)
    if rows.shape[0] == 0 or raters.min() != raters.max() or raters[0] < 2:
        return math.nan
    m = float(raters[0])
    per_unit = ((rows**2).sum(axis=1) - m) / (m * (m - 1.0))
    totals = multiplicity @ rows
    shares = totals / totals.sum()
    expected = float((shares**2).sum())
    if expected == 1.0:
        return math.nan  # one category throughout: agreement is undefined, not perfect
    return float((multiplicity @ per_unit / multiplicity.sum() - expected) / (1.0 - expected))


def _ordinal_alpha_of(rows: np.ndarray, multiplicity: np.ndarray) -> float:
    """`ordinal_alpha` of distinct count rows, each standing for `multiplicity` units."""
    pairable = rows.sum(axis=1) >= 2
    rows, multiplicity = rows[pairable], multiplicity[pairable]
    if rows.shape[0] == 0:
        return math.nan
    n_values = rows.shape[1]
    # Coincidences: Σ over units of (n_uc·n_uk − [c = k]·n_uc) / (m_u − 1).
    per_unit = rows[:, :, None] * rows[:, None, :] - rows[:, None, :] * np.eye(n_values)[None]
    coincidences = np.einsum("u,uck->ck", multiplicity / (rows.sum(axis=1) - 1.0), per_unit)
    n_v = coincidences.sum(axis=0)
    expected = (np.outer(n_v, n_v) - np.diag(n_v)) / (n_v.sum() - 1.0)
    # Ordinal distance of values c ≤ k: (Σ_{g=c..k} n_g − (n_c + n_k)/2)².
    cumulative = np.concatenate([[0.0], np.cumsum(n_v)])
    values = np.arange(n_values)
    low, high = np.minimum.outer(values, values), np.maximum.outer(values, values)
    distance = (cumulative[high + 1] - cumulative[low] - (n_v[low] + n_v[high]) / 2.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(1.0 - (coincidences * distance).sum() / (expected * distance).sum())
    return value if math.isfinite(value) else math.nan


def agreement(votes: pd.DataFrame) -> pd.DataFrame:
    """Krippendorff's ordinal α and Fleiss' κ per criterion: units are comparisons, coders annotators.

    Values are the outcome seen from variant a (a → 0, tie → 1, b → 2). n_units counts the comparisons with at least
    two judgements (the only ones that carry agreement information). Needs criterion, comparison_id, outcome.
    """
    if votes.empty:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    return _agreement_of(_comparison_counts(votes))


@dataclass(frozen=True)
class _ComparisonCounts:
    """Votes reduced to outcome counts per (criterion, comparison): what agreement and style control start from."""

    criteria: np.ndarray  # criterion names, in `_factorize` order
    comparison: np.ndarray  # comparison index (0..n−1, in no promised order) of every vote row
    counts: np.ndarray  # criteria × comparisons × 3 (wins_a, ties, wins_b)


def _comparison_counts(votes: pd.DataFrame) -> _ComparisonCounts:
    """Count the (non-empty) votes per (criterion, comparison, outcome); without comparison_id every vote is its own
    comparison."""
    criterion, criteria = _factorize(votes["criterion"])
    if "comparison_id" in votes:
        comparison = _dense_codes(votes["comparison_id"].to_numpy())
    else:
        comparison = np.arange(len(votes), dtype=np.int64)
    n_comparisons = int(comparison.max()) + 1
    flat = (criterion * n_comparisons + comparison) * 3 + outcome_codes(votes["outcome"])
    counts = np.bincount(flat, minlength=len(criteria) * n_comparisons * 3).reshape(len(criteria), n_comparisons, 3)
    return _ComparisonCounts(criteria=criteria, comparison=comparison, counts=counts)


def _agreement_of(comparisons: _ComparisonCounts) -> pd.DataFrame:
    """`agreement` on the votes' per-comparison counts."""
    criteria, counts = comparisons.criteria, comparisons.counts
    n_criteria = len(criteria)
    # Every (criterion, comparison)'s counts as one integer in base (most votes on one comparison + 1): the distinct
    # count rows of each criterion and their multiplicities are then one bincount.
    wins_a, ties, wins_b = counts[..., WIN_A], counts[..., TIE], counts[..., WIN_B]
    base = int((wins_a + ties + wins_b).max()) + 1
    n_keys = base**3
    if n_keys * n_criteria > 4 * comparisons.comparison.size + 1_000:
        # Some comparison has a great many votes: the integers would be too sparse, sort the rows instead.
        distinct_rows = [_distinct_rows(counts[index]) for index in range(n_criteria)]
    else:
        key = (wins_a * base + ties) * base + wins_b + (np.arange(n_criteria) * n_keys)[:, None]
        multiplicities = np.bincount(key.ravel(), minlength=n_criteria * n_keys).reshape(n_criteria, n_keys)
        distinct_rows = []
        for index in range(n_criteria):
            present = np.flatnonzero(multiplicities[index])
            present = present[present > 0]  # comparisons judged on this criterion
            digits = np.column_stack([present // base**2, present // base % base, present % base])
            distinct_rows.append((digits.astype(float), multiplicities[index, present].astype(float)))
    rows = []
    for name, (distinct, multiplicity) in zip(criteria, distinct_rows, strict=True):
        rows.append(
            {
                "criterion": str(name),
                "krippendorff_alpha": _ordinal_alpha_of(distinct, multiplicity),
                "fleiss_kappa": _fleiss_kappa_of(distinct, multiplicity),
                "n_units": int(multiplicity[distinct.sum(axis=1) >= 2].sum()),
            }
        )
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


# ----------------------------------------------------------------------------------------------------------------
# Bias checks
# ----------------------------------------------------------------------------------------------------------------


def _overall(votes: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The "overall" rows' `columns`: position and length bias are judged on the overall verdict, once a judgement.

    On a categorical criterion the test runs on the integer codes; materialising 6M strings would cost more than
    the statistics.
    """
    criterion = votes["criterion"]
    if isinstance(criterion.dtype, pd.CategoricalDtype):
        categories = list(criterion.cat.categories)
        code = categories.index(OVERALL) if OVERALL in categories else -2
        mask = criterion.cat.codes.to_numpy() == code
    else:
        mask = (criterion == OVERALL).to_numpy(dtype=bool)
    return votes.loc[mask, columns]


def _left_won(outcome: np.ndarray, left_is_a: np.ndarray) -> np.ndarray:
    """Whether the decisive vote went to the answer shown on the left (call on decisive rows only)."""
    return (outcome == WIN_A) == left_is_a


def _wald(estimate: float, information: np.ndarray, index: int) -> dict[str, float]:
    """Estimate, 95% Wald CI and p-value of one coefficient, its variance from the inverse observed information."""
    variance = float(np.linalg.inv(information)[index, index])
    se = math.sqrt(variance) if variance > 0 else math.nan
    z = float(norm.ppf(0.5 + CONFIDENCE / 2.0))
    p_value = float(2.0 * norm.sf(abs(estimate) / se)) if se > 0 else math.nan
    return {"estimate": estimate, "ci_low": estimate - z * se, "ci_high": estimate + z * se, "p_value": p_value}


def _bradley_terry_with_covariate(
    variant_a: np.ndarray, variant_b: np.ndarray, covariate: np.ndarray, outcome: np.ndarray
) -> dict[str, float]:
    """Bradley-Terry with one extra covariate: log-odds(a beats b) = β_a − β_b + γ·covariate; γ with its Wald CI.

    Rows are aggregated on their unique (a, b, covariate) values first, so a binary covariate costs no more than
    plain Bradley-Terry.
    """
    if outcome.size == 0:
        return {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    variants, variant_index = np.unique(np.concatenate([variant_a, variant_b]), return_inverse=True)
    index_a, index_b = variant_index[: variant_a.size], variant_index[variant_a.size :]
    value, values = _factorize(pd.Series(covariate))
    # One integer per (a, b, covariate value): factorize it, then bincount the outcomes per unique key.
    key = (index_a * variants.size + index_b) * len(values) + value
    cell, unique_keys = _factorize(pd.Series(key))
    counts = np.bincount(cell * 3 + outcome, minlength=len(unique_keys) * 3).reshape(-1, 3)
    pair, value_of_cell = np.divmod(unique_keys, len(values))
    successes, trials = _successes_and_trials(counts.astype(float))
    covariates = np.asarray(values, dtype=float)[value_of_cell, None]
    beta, information = fit_bradley_terry_covariates(
        pair // variants.size, pair % variants.size, variants.size, covariates, successes, trials
    )
    return _wald(float(beta[-1]), information, beta.size - 1)


def position_bias(votes: pd.DataFrame) -> dict[str, float]:
    """Is the answer shown on the left preferred? Judged on the decisive *overall* votes.

    left_share: share of decisive votes that went to the left answer, with its binomial test against ½ (p_value) and
    n. left_advantage: the log-odds of winning for being shown on the left, from a Bradley-Terry fit with a ±1
    "a shown left" covariate (so unequal strengths do not masquerade as bias), with its 95% Wald CI
    (left_advantage_ci_low/high, from the observed information) and left_advantage_p_value. Needs criterion,
    variant_a, variant_b, outcome, left_is_a.
    """
    overall = _overall(votes, ["variant_a", "variant_b", "outcome", "left_is_a"])
    codes = outcome_codes(overall["outcome"])
    left_is_a = overall["left_is_a"].to_numpy(dtype=bool)
    decisive = codes != TIE
    left_wins = int(_left_won(codes[decisive], left_is_a[decisive]).sum())
    n = int(decisive.sum())
    side = np.where(left_is_a, 1.0, -1.0)
    fit = _bradley_terry_with_covariate(overall["variant_a"].to_numpy(), overall["variant_b"].to_numpy(), side, codes)
    return {
        "left_share": left_wins / n if n else math.nan,
        "p_value": sign_test_p_value(left_wins, n - left_wins),
        "n": n,
        "left_advantage": fit["estimate"],
        "left_advantage_ci_low": fit["ci_low"],
        "left_advantage_ci_high": fit["ci_high"],
        "left_advantage_p_value": fit["p_value"],
    }


def length_bias(votes: pd.DataFrame) -> dict[str, float]:
    """Do longer answers win? Judged on the *overall* votes; a flat dict of numbers.

    - longer_share: share of decisive votes (answers of unequal length) won by the longer answer, with its binomial
      test against ½ (longer_share_p_value) and n_decisive: the raw association, confounded with model strength.
    - point_biserial_r / point_biserial_p_value: correlation of (length_a − length_b) with "a won" on decisive votes.
    - slope_per_1k_chars (+ CI and p-value): length controlled the Bradley-Terry way — the log-odds of a winning per
      1000 characters of (length_a − length_b) in a Bradley-Terry fit with that covariate (ties half a win), so it
      measures the preference for length *within* the variants' strengths.
    Needs criterion, variant_a, variant_b, outcome, length_a, length_b.
    """
    overall = _overall(votes, ["variant_a", "variant_b", "outcome", "length_a", "length_b"])
    codes = outcome_codes(overall["outcome"])
    difference = overall["length_a"].to_numpy(dtype=float) - overall["length_b"].to_numpy(dtype=float)
    decisive = codes != TIE
    a_won = (codes[decisive] == WIN_A).astype(float)
    decisive_difference = difference[decisive]
    unequal = decisive_difference != 0
    longer_wins = int(((decisive_difference > 0) == (a_won == 1.0))[unequal].sum())
    n_unequal = int(unequal.sum())
    r, r_p = _point_biserial(a_won, decisive_difference)
    fit = _bradley_terry_with_covariate(
        overall["variant_a"].to_numpy(), overall["variant_b"].to_numpy(), difference / 1000.0, codes
    )
    return {
        "n_decisive": int(decisive.sum()),
        "longer_share": longer_wins / n_unequal if n_unequal else math.nan,
        "longer_share_p_value": sign_test_p_value(longer_wins, n_unequal - longer_wins),
        "point_biserial_r": r,
        "point_biserial_p_value": r_p,
        "slope_per_1k_chars": fit["estimate"],
        "slope_ci_low": fit["ci_low"],
        "slope_ci_high": fit["ci_high"],
        "slope_p_value": fit["p_value"],
    }


def _point_biserial(binary: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Pearson correlation of a 0/1 variable with a continuous one, with its t-test p-value; NaN when degenerate."""
    n = binary.size
    if n < 3 or binary.std() == 0 or values.std() == 0:
        return math.nan, math.nan
    r = float(np.corrcoef(binary, values)[0, 1])
    if abs(r) >= 1.0:
        return r, 0.0
    t_statistic = r * math.sqrt((n - 2) / (1.0 - r * r))
    return r, float(2.0 * student_t.sf(abs(t_statistic), n - 2))


def annotator_left_rates(votes: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: decisive overall votes, share that went to the left answer, binomial p-value against ½.

    Spots the individual annotator who always clicks left, which the campaign-wide share can hide. Needs criterion,
    annotator_id, outcome, left_is_a.
    """
    overall = _overall(votes, ["annotator_id", "outcome", "left_is_a"])
    codes = outcome_codes(overall["outcome"])
    decisive = codes != TIE
    left = _left_won(codes[decisive], overall["left_is_a"].to_numpy(dtype=bool)[decisive])
    annotator, annotators = _factorize(overall["annotator_id"].iloc[np.flatnonzero(decisive)])
    per_annotator = pd.DataFrame(
        {
            "annotator_id": annotators,
            "decisive": np.bincount(annotator, minlength=len(annotators)),
            "left_wins": np.bincount(annotator, weights=left, minlength=len(annotators)).astype(np.int64),
        }
    )
    per_annotator["left_share"] = per_annotator["left_wins"] / per_annotator["decisive"]
    per_annotator["p_value"] = sign_test_p_values(
        per_annotator["left_wins"], per_annotator["decisive"] - per_annotator["left_wins"]
    )
    return per_annotator[ANNOTATOR_COLUMNS]


# ----------------------------------------------------------------------------------------------------------------
# Style control: Bradley-Terry with answer-length and markdown covariates
# ----------------------------------------------------------------------------------------------------------------

# The style of an answer, as Chatbot Arena's style control measures it: its length and its markdown structure.
STYLE_FEATURES = ("length", "headers", "lists", "bold")
STYLE_FEATURE_LABELS = {
    "length": "Answer length",
    "headers": "Markdown headers",
    "lists": "List items",
    "bold": "Bold spans",
}
# The votes frame's optional style columns: each feature's count for candidate a and for candidate b.
STYLE_COLUMNS = [f"{feature}_{side}" for feature in STYLE_FEATURES for side in ("a", "b")]
STYLE_LEADERBOARD_COLUMNS = ["criterion", "variant", "raw_rating", "rating", "ci_low", "ci_high", "rank"]
STYLE_COEFFICIENT_COLUMNS = ["criterion", "feature", "estimate", "ci_low", "ci_high"]
# The style bootstrap refits every round exactly while rounds × cells stays under this; above it (hundreds of
# thousands of comparisons) it takes the score bootstrap, a one-step linearisation of the same refit.
STYLE_EXACT_BOOTSTRAP_ENTRIES = 4_000_000

# Markdown counted the way FastChat's style control counts it; fenced code is left out first, so a "# comment" or
# "- x" inside code counts as neither header nor list.
_CODE_BLOCK = re.compile(r"```[^`]*```")
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:\d+\.|[-*+])\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def markdown_style_counts(text: str) -> dict[str, int]:
    """The style features of one answer: length (characters, code included), headers, list items, bold spans."""
    prose = _CODE_BLOCK.sub("", text)
    return {
        "length": len(text),
        "headers": len(_HEADER.findall(prose)),
        "lists": len(_LIST_ITEM.findall(prose)),
        "bold": len(_BOLD.findall(prose)),
    }


def style_features(votes: pd.DataFrame, features: tuple[str, ...] = STYLE_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """The style covariates of every row: (a − b) / (a + b + 1) per feature, standardized over the rows.

    The ratio makes a difference relative (ten more characters matter in a short answer, not in a long one) and the
    +1 keeps it defined when neither answer has the element. Standardizing puts every coefficient on the scale
    "log-odds per standard deviation of the feature". Returns (rows × features matrix, identified mask): a feature
    that is constant over the rows (no answer has a header) cannot be estimated; its column is zeros and its mask
    entry False. Needs `<feature>_a` and `<feature>_b` for every feature.
    """
    count_a = np.column_stack([votes[f"{feature}_a"].to_numpy(dtype=float) for feature in features])
    count_b = np.column_stack([votes[f"{feature}_b"].to_numpy(dtype=float) for feature in features])
    ratio = (count_a - count_b) / (count_a + count_b + 1.0)
    if ratio.shape[0] == 0:
        return ratio, np.zeros(len(features), dtype=bool)
    spread = ratio.std(axis=0)
    identified = spread > 1e-12
    standardized = np.zeros_like(ratio)
    standardized[:, identified] = (ratio[:, identified] - ratio[:, identified].mean(axis=0)) / spread[identified]
    return standardized, identified


@dataclass(frozen=True)
class _StyleCells:
    """Votes reduced to cells that share variants, answers and prompt (a comparison, in the app), for every criterion.

    Style is a property of the answers, not of the criterion, so the cells, their covariates and their prompts are
    built once; only the per-criterion outcome totals differ.
    """

    criteria: np.ndarray  # criterion names
    variant_a: np.ndarray  # variant id of every cell
    variant_b: np.ndarray
    ratio: np.ndarray  # cells × features: (a − b) / (a + b + 1), not yet standardized
    cluster: np.ndarray  # prompt index of every cell (the bootstrap's unit)
    successes: np.ndarray  # criteria × cells: wins of a + ½ ties
    trials: np.ndarray  # criteria × cells


def _dense_codes(values: np.ndarray) -> np.ndarray:
    """Codes 0..n−1 of the distinct values (in no promised order); ids in a compact range skip the hash table."""
    if values.size and np.issubdtype(values.dtype, np.integer):
        low, high = int(values.min()), int(values.max())
        if high - low <= 4 * values.size:
            present = np.zeros(high - low + 1, dtype=np.int64)
            present[values - low] = 1
            return (np.cumsum(present) - 1)[values - low]
    return pd.factorize(values)[0].astype(np.int64)


def _style_cells(votes: pd.DataFrame, features: tuple[str, ...], comparisons: _ComparisonCounts) -> _StyleCells:
    cell = comparisons.comparison
    n_cells = comparisons.counts.shape[1]
    # Any row of a cell stands for it: variants, answers and prompt are the same on all of them.
    representative = np.empty(n_cells, dtype=np.int64)
    representative[cell] = np.arange(len(votes), dtype=np.int64)
    needed = ["variant_a", "variant_b", *(f"{feature}_{side}" for feature in features for side in ("a", "b"))]
    sample = votes[[*needed, "prompt_id"] if "prompt_id" in votes else needed].iloc[representative]
    count_a = np.column_stack([sample[f"{feature}_a"].to_numpy(dtype=float) for feature in features])
    count_b = np.column_stack([sample[f"{feature}_b"].to_numpy(dtype=float) for feature in features])
    counts = comparisons.counts
    wins_a, ties, wins_b = counts[..., WIN_A], counts[..., TIE], counts[..., WIN_B]
    return _StyleCells(
        criteria=comparisons.criteria,
        variant_a=sample["variant_a"].to_numpy(dtype=np.int64),
        variant_b=sample["variant_b"].to_numpy(dtype=np.int64),
        ratio=(count_a - count_b) / (count_a + count_b + 1.0),
        cluster=_dense_codes(sample["prompt_id"].to_numpy()) if "prompt_id" in votes else np.arange(n_cells),
        successes=wins_a + 0.5 * ties,
        trials=(wins_a + ties + wins_b).astype(float),
    )


def _standardize(ratio: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`style_features`' standardization on cells that stand for `weight` rows each; (matrix, identified mask)."""
    total = weight.sum()
    mean = weight @ ratio / total
    spread = np.sqrt(weight @ (ratio - mean) ** 2 / total)
    identified = spread > 1e-12
    return (ratio[:, identified] - mean[identified]) / spread[identified], identified


def fit_bradley_terry_covariates(
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    n_variants: int,
    covariates: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray,
    *,
    ridge: float = RIDGE,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum likelihood of log-odds(a beats b) = θ_a − θ_b + covariates @ γ on cells, by Newton's method.

    pair_a/pair_b are variant indices 0..n_variants−1 per cell, covariates cells × q, successes (fractional: a tie
    is half a win) and trials per cell. Returns (β = [θ₁…θ_{V−1}, γ], observed information at β): the same
    parametrisation and prior as `fit_weighted_logistic(np.hstack([bradley_terry_design(…), covariates]), …)`
    (variant 0 is the reference), but each Newton step sums the Bradley-Terry block per variant *pair* rather than
    per cell, so hundreds of thousands of cells cost a few bincounts and one cells × q² product a step.
    """
    pairs, pair = np.unique(pair_a * n_variants + pair_b, return_inverse=True)
    pair_design = bradley_terry_design(pairs // n_variants, pairs % n_variants, n_variants)
    beta, information = _fit_on_pairs(pair_design, pair, covariates, successes[None], trials[None], ridge=ridge)
    return beta[0], information[0]


def _fit_on_pairs(
    pair_design: np.ndarray,
    pair: np.ndarray,
    covariates: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray,
    *,
    start: np.ndarray | None = None,
    ridge: float = RIDGE,
) -> tuple[np.ndarray, np.ndarray]:
    """`fit_bradley_terry_covariates` for G data sets on the same cells at once (successes and trials G × cells),
    given the pairs' design (pairs × (V − 1)) and each cell's pair index; returns β (G × p) and information
    (G × p × p). The cells are put in pair order once, so the sums per pair are matrix products over contiguous
    runs of cells; the covariate block is one (G × cells)·(cells × q²) product."""
    n_pairs, n_free = pair_design.shape
    n_cells, n_covariates = covariates.shape
    n_sets = successes.shape[0]
    size = n_free + n_covariates
    beta = np.zeros((n_sets, size)) if start is None else np.array(np.broadcast_to(start, (n_sets, size)))
    prior = ridge * np.eye(size)
    if n_cells > 1 and (pair[1:] < pair[:-1]).any():
        order = np.argsort(pair, kind="stable")
        pair, covariates, successes, trials = pair[order], covariates[order], successes[:, order], trials[:, order]
    starts = np.flatnonzero(np.concatenate([[True], pair[1:] != pair[:-1]])) if n_cells else np.zeros(0, int)
    runs = list(zip(pair[starts].tolist(), starts.tolist(), [*starts[1:].tolist(), n_cells], strict=True))
    with_constant = np.hstack([np.ones((n_cells, 1)), covariates])
    outer = (covariates[:, :, None] * covariates[:, None, :]).reshape(n_cells, -1)

    def per_pair(values: np.ndarray) -> np.ndarray:
        """Σ over each pair's cells of values × (1, covariates): G × pairs × (1 + q). One small matrix product per
        pair over its contiguous run of cells, instead of a pass over all cells per column."""
        sums = np.zeros((n_sets, n_pairs, 1 + n_covariates))
        for index, first, end in runs:
            sums[:, index] = values[:, first:end] @ with_constant[first:end]
        return sums

    def information_at(probability: np.ndarray) -> np.ndarray:
        weight = trials * probability * (1.0 - probability)
        sums = per_pair(weight)
        information = np.empty((n_sets, size, size))
        information[:, :n_free, :n_free] = np.einsum("pa,gp,pb->gab", pair_design, sums[..., 0], pair_design)
        information[:, :n_free, n_free:] = np.einsum("pa,gpq->gaq", pair_design, sums[..., 1:])
        information[:, n_free:, :n_free] = information[:, :n_free, n_free:].transpose(0, 2, 1)
        information[:, n_free:, n_free:] = (weight @ outer).reshape(n_sets, n_covariates, n_covariates)
        return information + prior

    previous = None
    for _ in range(NEWTON_MAX_ITERATIONS):
        probability = _probability_on_pairs(pair_design, pair, covariates, beta)
        sums = per_pair(successes - trials * probability)
        gradient = np.hstack([sums[..., 0] @ pair_design, sums[..., 1:].sum(axis=1)])
        information = information_at(probability)
        step = np.linalg.solve(information, (gradient - ridge * beta)[..., None])[..., 0]
        step = np.clip(step, -NEWTON_MAX_STEP, NEWTON_MAX_STEP)
        beta += step
        previous, converged = _newton_converged(step, previous, NEWTON_TOLERANCE)
        if converged:
            # A step this small leaves the information as it was: no need to evaluate it once more.
            return beta, information
    return beta, information_at(_probability_on_pairs(pair_design, pair, covariates, beta))


def _probability_on_pairs(pair_design: np.ndarray, pair: np.ndarray, covariates: np.ndarray, beta: np.ndarray) -> Any:
    """P(a beats b) of every cell (last axis) under β (…, p)."""
    n_free = pair_design.shape[1]
    return expit((beta[..., :n_free] @ pair_design.T)[..., pair] + beta[..., n_free:] @ covariates.T)


def _resample_counts(rng: np.random.Generator, n_items: int, n_rounds: int) -> np.ndarray:
    """How often each item is drawn in each round of `n_items` draws with replacement (rounds × items, float).

    The same distribution as `_multinomial_rounds`, drawn as integers and counted, which is several times faster.
    """
    draws = rng.integers(0, n_items, size=(n_rounds, n_items)) + (np.arange(n_rounds) * n_items)[:, None]
    return np.bincount(draws.ravel(), minlength=n_rounds * n_items).reshape(n_rounds, n_items).astype(float)


def _style_bootstrap(
    pair_design: np.ndarray,
    pair: np.ndarray,
    covariates: np.ndarray,
    fit: tuple[np.ndarray, np.ndarray],
    successes: np.ndarray,
    trials: np.ndarray,
    cluster: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, str]:
    """Coefficients in each round of cluster `weights` (rounds × clusters), and how they were drawn.

    "refit": each cell is weighted by its prompt's draws and the model refit (batched Newton, warm-started).
    "score": on large data, a round is one Newton step from the full fit, β + I⁻¹·Σₚ (wₚ − 1)·gₚ, gₚ a prompt's
    score at the full fit and I the full information — the first-order expansion of the refit, exact as the data
    grow, at the cost of a (rounds × prompts)·(prompts × parameters) product instead of rounds × cells fits.
    """
    beta, information = fit
    n_rounds, n_clusters = weights.shape
    if n_rounds * trials.size <= STYLE_EXACT_BOOTSTRAP_ENTRIES:
        design = np.hstack([pair_design[pair], covariates])
        cell_weights = weights[:, cluster]
        refit, _ = fit_weighted_logistic(
            design,
            cell_weights * successes,
            cell_weights * trials,
            start=beta,
            tolerance=BOOTSTRAP_TOLERANCE,
            max_iterations=BOOTSTRAP_MAX_ITERATIONS,
        )
        return refit, "refit"
    n_pairs = pair_design.shape[0]
    residual = successes - trials * _probability_on_pairs(pair_design, pair, covariates, beta)
    per_cluster_pair = np.bincount(cluster * n_pairs + pair, weights=residual, minlength=n_clusters * n_pairs)
    scores = np.empty((n_clusters, beta.size))
    scores[:, : pair_design.shape[1]] = per_cluster_pair.reshape(n_clusters, n_pairs) @ pair_design
    for j in range(covariates.shape[1]):
        scores[:, pair_design.shape[1] + j] = np.bincount(
            cluster, weights=covariates[:, j] * residual, minlength=n_clusters
        )
    # (w − 1)·scores without the rounds × prompts temporary: every round subtracts the same Σₚ gₚ.
    shifts = weights @ scores - scores.sum(axis=0)
    return beta + shifts @ np.linalg.inv(information), "score"


@dataclass
class StyleControl:
    """Bradley-Terry ratings with and without style control, and the style coefficients.

    leaderboard (STYLE_LEADERBOARD_COLUMNS): per (criterion, variant) the plain Bradley-Terry `raw_rating` and the
    style-controlled `rating` with its 95% bootstrap interval and CI-separated `rank`. coefficients
    (STYLE_COEFFICIENT_COLUMNS): per (criterion, feature) the log-odds of winning per standard deviation of the
    feature's relative difference, with its 95% bootstrap interval (all NaN when the feature never varies).
    bootstrap: per criterion, "refit", "score" (see `_style_bootstrap`) or "none".
    """

    leaderboard: pd.DataFrame
    coefficients: pd.DataFrame
    bootstrap: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "leaderboard": _json_records(self.leaderboard, STYLE_LEADERBOARD_COLUMNS),
            "coefficients": _json_records(self.coefficients, STYLE_COEFFICIENT_COLUMNS),
            "bootstrap": dict(self.bootstrap),
        }


def has_style_columns(votes: pd.DataFrame, features: tuple[str, ...] = STYLE_FEATURES) -> bool:
    """Whether `votes` carries the style columns `style_controlled_leaderboard` needs."""
    return all(f"{feature}_{side}" in votes for feature in features for side in ("a", "b"))


def style_controlled_leaderboard(
    votes: pd.DataFrame, *, features: tuple[str, ...] = STYLE_FEATURES, n_boot: int = 1000, seed: int = 0
) -> StyleControl:
    """Bradley-Terry per criterion with style covariates, as Chatbot Arena's style control does.

    The model: log-odds(a beats b) = θ_a − θ_b + Σ_f γ_f·x_f, with x_f the standardized relative difference of
    feature f over the criterion's votes (`style_features`), a tie half a win. θ are the style-controlled
    strengths — how much a variant wins beyond what its answers' length and formatting explain — on the rating
    scale of `leaderboard` (1000 + 400·log10, mean 1000 per criterion, each connected component centred
    separately); raw_rating is the same fit without covariates. γ_f is the style coefficient. The CIs come from a
    bootstrap that resamples prompts, the same draws for every criterion (`_style_bootstrap`), so they also carry
    the correlation of the votes on one prompt. Needs criterion, variant_a, variant_b, outcome and the style
    columns of `features`; comparison_id (to aggregate) and prompt_id (the bootstrap unit) are used when present.
    """
    if votes.empty:
        return StyleControl(
            pd.DataFrame(columns=STYLE_LEADERBOARD_COLUMNS), pd.DataFrame(columns=STYLE_COEFFICIENT_COLUMNS)
        )
    return _style_control_from(votes, _comparison_counts(votes), features=features, n_boot=n_boot, seed=seed)


def _style_control_from(
    votes: pd.DataFrame, comparisons: _ComparisonCounts, *, features: tuple[str, ...], n_boot: int, seed: int
) -> StyleControl:
    """`style_controlled_leaderboard` of non-empty votes, given their per-comparison counts."""
    cells = _style_cells(votes, features, comparisons)
    n_clusters = int(cells.cluster.max()) + 1
    weights = _resample_counts(np.random.default_rng(seed), n_clusters, n_boot)
    boards, coefficients, bootstrap = [], [], {}
    for group in _criteria_sharing_judgements(cells.trials):
        for index, (board, coefficient, how) in zip(
            group, _style_control_of(cells, group, features, weights), strict=True
        ):
            boards.append(board)
            coefficients.append(coefficient)
            bootstrap[str(cells.criteria[index])] = how
    board = pd.concat(boards, ignore_index=True)
    return StyleControl(
        board.sort_values(["criterion", "rating"], ascending=[True, False], ignore_index=True),
        pd.concat(coefficients, ignore_index=True),
        bootstrap,
    )


def _criteria_sharing_judgements(trials: np.ndarray) -> list[list[int]]:
    """Criteria grouped by identical per-cell judgement counts (usually all of them: every judgement rates every
    criterion). A group shares its standardized covariates and pairs, so its fits run as one batch."""
    groups: list[list[int]] = []
    for index in range(trials.shape[0]):
        same = next((group for group in groups if np.array_equal(trials[group[0]], trials[index])), None)
        if same is None:
            groups.append([index])
        else:
            same.append(index)
    return groups


def _style_control_of(
    cells: _StyleCells, group: list[int], features: tuple[str, ...], weights: np.ndarray
) -> list[tuple[pd.DataFrame, pd.DataFrame, str]]:
    """Leaderboard rows, coefficient rows and bootstrap kind of each criterion of `group` (same judged cells)."""
    judged = np.flatnonzero(cells.trials[group[0]] > 0)
    # The group's variant pairs, found once: every fit below works per pair, not per cell. The cells are taken in
    # pair order, so that a sum per pair is a sum over a contiguous run of cells.
    pair = _dense_codes(cells.variant_a[judged] * (int(cells.variant_b.max()) + 1) + cells.variant_b[judged])
    by_pair = np.argsort(pair, kind="stable")
    active, pair = judged[by_pair], pair[by_pair]
    trials = cells.trials[group[0], active]
    successes = cells.successes[np.ix_(np.asarray(group), active)]
    covariates, identified = _standardize(cells.ratio[active], trials)
    variant_a, variant_b = cells.variant_a[active], cells.variant_b[active]
    n_pairs = int(pair.max()) + 1
    representative = np.empty(n_pairs, dtype=np.int64)
    representative[pair] = np.arange(pair.size)
    pair_trials = np.bincount(pair, weights=trials, minlength=n_pairs)
    pair_counts = np.column_stack([pair_trials, np.zeros(n_pairs), np.zeros(n_pairs)])
    bt = bradley_terry_cells(variant_a[representative], variant_b[representative], pair_counts)
    pair_design, components, n_free = bt.design(), bt.components(), bt.variants.size - 1

    pair_successes = np.stack([np.bincount(pair, weights=row, minlength=n_pairs) for row in successes])
    raw, _ = _fit_on_pairs(
        pair_design,
        np.arange(n_pairs),
        np.zeros((n_pairs, 0)),
        pair_successes,
        np.broadcast_to(pair_trials, pair_successes.shape),
    )
    # The plain strengths are a close start for the controlled ones: it saves Newton steps on the big fit.
    start = np.hstack([raw, np.zeros((len(group), covariates.shape[1]))])
    trials_batch = np.broadcast_to(trials, successes.shape)
    betas, informations = _fit_on_pairs(pair_design, pair, covariates, successes, trials_batch, start=start)

    cluster = cells.cluster[active]
    results = []
    for position, index in enumerate(group):
        beta = betas[position]
        if weights.shape[0] > 0:
            fit = (beta, informations[position])
            rounds, how = _style_bootstrap(
                pair_design, pair, covariates, fit, successes[position], trials, cluster, weights
            )
        else:
            rounds, how = np.empty((0, beta.size)), "none"
        ci_low, ci_high = _percentile_interval(strengths_to_ratings(_with_reference(rounds[:, :n_free]), components))
        rank = _rank_by_intervals(ci_low, ci_high) if rounds.shape[0] > 0 else np.ones(n_free + 1, dtype=int)
        criterion = str(cells.criteria[index])
        board = pd.DataFrame(
            {
                "criterion": criterion,
                "variant": bt.variants,
                "raw_rating": strengths_to_ratings(_with_reference(raw[position]), components),
                "rating": strengths_to_ratings(_with_reference(beta[:n_free]), components),
                "ci_low": ci_low,
                "ci_high": ci_high,
                "rank": rank,
            }
        )
        estimate, low, high = (np.full(len(features), np.nan) for _ in range(3))
        estimate[identified] = beta[n_free:]
        if identified.any():
            low[identified], high[identified] = _percentile_interval(rounds[:, n_free:])
        coefficients = pd.DataFrame(
            {"criterion": criterion, "feature": list(features), "estimate": estimate, "ci_low": low, "ci_high": high}
        )
        results.append((board, coefficients, how))
    return results


# ----------------------------------------------------------------------------------------------------------------
# Outlier annotators
# ----------------------------------------------------------------------------------------------------------------

OUTLIER_COLUMNS = [
    "annotator_id",
    "n_decisive",
    "mean_log_likelihood",
    "expected_mean_log_likelihood",
    "z",
    "p_value",
    "p_holm",
    "outlier",
]
# Fewer decisive votes than this and the test has no power worth reporting: the annotator is not tested.
OUTLIER_MIN_DECISIVE = 10
_PROBABILITY_FLOOR = 1e-12


def annotator_outliers(
    votes: pd.DataFrame, *, alpha: float = ALPHA, min_decisive: int = OUTLIER_MIN_DECISIVE
) -> pd.DataFrame:
    """Does each annotator vote like the others? A leave-one-out likelihood test on the decisive *overall* votes.

    For annotator j, Bradley-Terry is fit on the reference annotators' overall votes other than j's (ties half a
    win), giving pᵢ = P(a beats b) for each of j's decisive votes. The statistic is the log-likelihood of j's
    choices under that fit, L = Σ log p(choice). Under the null "j chooses as the others' model predicts" every vote
    is an independent Bernoulli(pᵢ), so L has mean Σ [pᵢ log pᵢ + (1 − pᵢ) log(1 − pᵢ)] and variance
    Σ pᵢ(1 − pᵢ)·logit(pᵢ)²; z = (L − mean)/sd, and the one-sided p-value Φ(z) is small when j agrees with the
    others *less* than chance would explain (a random clicker, or one voting against the consensus). Ties are left
    out: the model says nothing about when to tie. p_holm adjusts over the annotators tested.

    The reference starts as everybody. While some annotator outside it has p_holm < alpha, the one with the lowest
    z is flagged and leaves the reference, and every annotator is tested again: one strong contrarian would
    otherwise drag the others' fit towards itself and make honest annotators look deviant. `outlier` marks the
    flagged; the reported figures are those of the last round (each annotator against the unflagged others).
    Annotators with fewer than `min_decisive` decisive votes get NaN and are never flagged. mean_log_likelihood
    and expected_mean_log_likelihood are L and its null mean per vote. Each round is one batched Newton solve over
    the annotators. Needs criterion, annotator_id, variant_a, variant_b, outcome.
    """
    overall = _overall(votes, ["annotator_id", "variant_a", "variant_b", "outcome"])
    overall = overall[overall["annotator_id"] >= 0]  # prompt-level majorities have no annotator
    if overall.empty:
        return pd.DataFrame(columns=OUTLIER_COLUMNS)
    annotator, annotators = _factorize(overall["annotator_id"])
    variant_a = overall["variant_a"].to_numpy(dtype=np.int64)
    variant_b = overall["variant_b"].to_numpy(dtype=np.int64)
    pair, pairs = _factorize(pd.Series(variant_a * (int(variant_b.max()) + 1) + variant_b))
    n_annotators, n_pairs = len(annotators), len(pairs)
    key = (annotator * n_pairs + pair) * 3 + outcome_codes(overall["outcome"])
    own = np.bincount(key, minlength=n_annotators * n_pairs * 3).reshape(n_annotators, n_pairs, 3).astype(float)
    first = np.unique(pair, return_index=True)[1]
    design = bradley_terry_cells(variant_a[first], variant_b[first], own.sum(axis=0)).design()
    flagged = np.zeros(n_annotators, dtype=bool)
    while True:
        test = _likelihood_test(own, flagged, design, min_decisive=min_decisive)
        candidates = np.flatnonzero(~flagged & (np.nan_to_num(test["p_holm"], nan=1.0) < alpha))
        if candidates.size == 0:
            break
        flagged[candidates[np.argmin(test["z"][candidates])]] = True
    return pd.DataFrame({"annotator_id": annotators, **test, "outlier": flagged})[OUTLIER_COLUMNS]


def _likelihood_test(
    own: np.ndarray, flagged: np.ndarray, design: np.ndarray, *, min_decisive: int
) -> dict[str, np.ndarray]:
    """`annotator_outliers`' statistics of every annotator against the unflagged others (annotators × pairs × 3)."""
    reference = own[~flagged].sum(axis=0)
    # An unflagged annotator is part of the reference and is taken out of it; a flagged one is not in it.
    others = reference[None] - np.where(flagged[:, None, None], 0.0, own)
    successes, trials = _successes_and_trials(others)
    free, _ = fit_weighted_logistic(design, successes, trials)
    probability = np.clip(expit(free @ design.T), _PROBABILITY_FLOOR, 1.0 - _PROBABILITY_FLOOR)
    log_p, log_q = np.log(probability), np.log1p(-probability)
    wins_a, wins_b = own[..., WIN_A], own[..., WIN_B]
    decisive = wins_a + wins_b
    observed = (wins_a * log_p + wins_b * log_q).sum(axis=1)
    expected = (decisive * (probability * log_p + (1.0 - probability) * log_q)).sum(axis=1)
    variance = (decisive * probability * (1.0 - probability) * (log_p - log_q) ** 2).sum(axis=1)
    n_decisive = decisive.sum(axis=1)
    tested = (n_decisive >= min_decisive) & (variance > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(tested, (observed - expected) / np.sqrt(variance), np.nan)
        mean_observed = np.where(n_decisive > 0, observed / n_decisive, np.nan)
        mean_expected = np.where(n_decisive > 0, expected / n_decisive, np.nan)
    p_value = np.where(tested, norm.cdf(z), np.nan)
    return {
        "n_decisive": n_decisive.astype(np.int64),
        "mean_log_likelihood": mean_observed,
        "expected_mean_log_likelihood": mean_expected,
        "z": z,
        "p_value": p_value,
        "p_holm": holm(p_value),
    }


def outlier_annotator_ids(outliers: pd.DataFrame) -> list[int]:
    """The ids `annotator_outliers` flagged, in order."""
    return sorted(int(value) for value in outliers.loc[outliers["outlier"].astype(bool), "annotator_id"])


# ----------------------------------------------------------------------------------------------------------------
# Prompt categories
# ----------------------------------------------------------------------------------------------------------------

CATEGORY_LEADERBOARD_COLUMNS = ["category", *LEADERBOARD_COLUMNS, "n"]


def category_leaderboards(votes: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The overall Bradley-Terry leaderboard of each prompt category (prompts without a category left out).

    One `leaderboard` per category on its overall votes, with n the category's overall votes. Needs category,
    criterion, variant_a, variant_b, outcome.
    """
    if "category" not in votes or votes.empty:
        return pd.DataFrame(columns=CATEGORY_LEADERBOARD_COLUMNS)
    overall = _overall(votes, ["category", "criterion", "variant_a", "variant_b", "outcome"])
    overall = overall[overall["category"].astype(str) != ""]
    boards = []
    for category, rows in overall.groupby(overall["category"].astype(str), sort=True):
        board = leaderboard(rows.astype({"criterion": "str"}), n_boot=n_boot, seed=seed)
        board.insert(0, "category", category)
        board["n"] = len(rows)
        boards.append(board)
    if not boards:
        return pd.DataFrame(columns=CATEGORY_LEADERBOARD_COLUMNS)
    return pd.concat(boards, ignore_index=True)[CATEGORY_LEADERBOARD_COLUMNS]


# ----------------------------------------------------------------------------------------------------------------
# Prompt-level view
# ----------------------------------------------------------------------------------------------------------------


def prompt_majority(votes: pd.DataFrame) -> pd.DataFrame:
    """The prompt-level view: one row per (prompt, variant pair, criterion) with its majority outcome.

    The majority is the outcome with strictly more votes than each of the other two, else "tie" (a 2–2 split or a
    three-way draw is no verdict). The result is a votes frame, so every function here runs on it: judgement_id
    numbers the (prompt, pair) verdicts, comparison_id is the smallest comparison of the group, annotator_id −1
    (a majority has no single annotator, so agreement on this view has no units), left_is_a the majority side,
    lengths and style counts the rounded means, category the prompt's, time_on_task_ms the sum and created_at the
    latest. Needs prompt_id, criterion, variant_a, variant_b, outcome.
    """
    if votes.empty:
        return pd.DataFrame(columns=[column for column in VOTE_COLUMNS if column in votes or column == "judgement_id"])
    cells = _pair_cells(votes)
    prompt, prompts = _factorize(votes["prompt_id"])
    n_pairs = len(cells.keys)
    # One integer per (prompt, criterion, pair); everything below is a bincount or a groupby on that one key.
    group, unique_keys = _factorize(pd.Series(prompt * n_pairs + cells.group))
    n_groups = len(unique_keys)
    counts = np.bincount(group * 3 + cells.outcome, minlength=n_groups * 3).reshape(-1, 3)
    wins_a, ties, wins_b = (counts[:, code] for code in (WIN_A, TIE, WIN_B))
    majority = np.where(
        (wins_a > wins_b) & (wins_a > ties), "a", np.where((wins_b > wins_a) & (wins_b > ties), "b", "tie")
    )
    result = cells.keys.iloc[unique_keys % n_pairs].reset_index(drop=True)
    result.insert(0, "prompt_id", prompts[unique_keys // n_pairs])
    result["outcome"] = majority
    size = np.bincount(group, minlength=n_groups)

    def group_mean(column: str) -> np.ndarray:
        return np.bincount(group, weights=votes[column].to_numpy(dtype=float), minlength=n_groups) / size

    if "left_is_a" in votes:
        result["left_is_a"] = group_mean("left_is_a") >= 0.5
    for column in ("length_a", "length_b", *STYLE_COLUMNS):
        if column in votes and column not in result:
            result[column] = np.round(group_mean(column)).astype(np.int64)
    if "time_on_task_ms" in votes:
        result["time_on_task_ms"] = (group_mean("time_on_task_ms") * size).round().astype(np.int64)
    # A prompt has one category, so any row's is the group's.
    extremes = {
        name: how
        for name, how in (("comparison_id", "min"), ("created_at", "max"), ("category", "first"))
        if name in votes
    }
    if extremes:
        grouped = votes[list(extremes)].groupby(group, sort=True).agg(extremes)
        for name in extremes:
            result[name] = grouped[name].to_numpy()
    # One verdict per (prompt, pair) spans every criterion, as one judgement does.
    verdict = pd.MultiIndex.from_frame(result[["prompt_id", "variant_a", "variant_b"]])
    result["judgement_id"] = verdict.factorize()[0] + 1
    result["annotator_id"] = -1
    extra = [column for column in ("category", *STYLE_COLUMNS) if column in result and column not in VOTE_COLUMNS]
    return result[[column for column in VOTE_COLUMNS if column in result] + extra]


# ----------------------------------------------------------------------------------------------------------------
# Everything together
# ----------------------------------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    """A plain JSON value: numpy scalars unwrapped, NaN and infinities → None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    return [
        {column: _json_value(value) for column, value in zip(columns, row, strict=True)}
        for row in frame[columns].itertuples(index=False, name=None)
    ]


@dataclass
class CampaignStatistics:
    """Every statistic of a votes frame; `to_json()` is the export format (docs/formats.md)."""

    n_votes: int
    pairs: pd.DataFrame
    leaderboard: pd.DataFrame
    agreement: pd.DataFrame
    position_bias: dict[str, float]
    length_bias: dict[str, float]
    annotator_left_rates: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    # None when the votes carry no style columns (STYLE_COLUMNS).
    style_control: StyleControl | None = None
    annotator_outliers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=OUTLIER_COLUMNS))
    # Annotators whose votes were left out as outliers before everything above was computed.
    excluded_annotators: list[int] = field(default_factory=list)
    category_leaderboards: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=CATEGORY_LEADERBOARD_COLUMNS)
    )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (ints, floats, strings, None for NaN)."""
        return {
            "pairs": _json_records(
                self.pairs,
                [
                    *PAIR_KEYS,
                    "wins_a",
                    "wins_b",
                    "ties",
                    "win_rate_a",
                    "ci_low",
                    "ci_high",
                    "p_value",
                    "p_holm",
                    "cohens_h",
                ],
            ),
            "leaderboard": _json_records(self.leaderboard, LEADERBOARD_COLUMNS),
            "agreement": _json_records(self.agreement, ["criterion", "krippendorff_alpha", "n_units"]),
            "position_bias": {key: _json_value(value) for key, value in self.position_bias.items()},
            "style_control": self.style_control.to_json() if self.style_control is not None else None,
            "annotator_outliers": _json_records(self.annotator_outliers, OUTLIER_COLUMNS),
            "excluded_annotators": list(self.excluded_annotators),
            "category_leaderboards": _json_records(self.category_leaderboards, CATEGORY_LEADERBOARD_COLUMNS),
        }


def _as_categories(votes: pd.DataFrame) -> pd.DataFrame:
    """Criterion and outcome as categoricals: every later step then maps a handful of categories, not 6M strings."""
    conversions = {
        column: "category"
        for column in ("criterion", "outcome")
        if column in votes and not isinstance(votes[column].dtype, pd.CategoricalDtype)
    }
    return votes.astype(conversions) if conversions else votes


def campaign_statistics(
    votes: pd.DataFrame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    outliers: pd.DataFrame | None = None,
    exclude_outliers: bool = False,
) -> CampaignStatistics:
    """Pairs, leaderboard, agreement, position and length bias, per-annotator left rates, style control (when the
    votes carry STYLE_COLUMNS), outlier annotators and per-category leaderboards (with a category column).

    `outliers` is `annotator_outliers` computed elsewhere (on the judgements before they were reduced to prompt-level
    majorities, which have no annotator); without it they are computed here. With `exclude_outliers` the flagged
    annotators' votes are dropped before anything else is computed. `timings` records the seconds each part took
    (for the benchmark and for anyone wondering why a page is slow).
    """
    timings: dict[str, float] = {}

    def timed(name: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = function(*args, **kwargs)
        timings[name] = time.perf_counter() - started
        return result

    votes = timed("encode", _as_categories, votes)
    if outliers is None:
        outliers = timed("annotator_outliers", annotator_outliers, votes)
    excluded = outlier_annotator_ids(outliers) if exclude_outliers else []
    if excluded:
        votes = votes[~votes["annotator_id"].isin(excluded)]
    n_votes = int(votes["judgement_id"].nunique()) if "judgement_id" in votes else len(votes)
    if votes.empty:
        pairs, board = pairwise_table(votes), leaderboard(votes)
    else:
        # Both tables start from the same (criterion, pair, outcome) counts: reduce the rows once.
        cells = timed("pair_cells", _pair_cells, votes)
        clusters = votes["prompt_id"] if "prompt_id" in votes else pd.Series(np.arange(len(votes)))
        pairs = timed("pairs", _pairwise_table_of, cells, clusters, n_boot=n_boot, seed=seed)
        board = timed("leaderboard", _leaderboard_from, cells, n_boot=n_boot, seed=seed)
    # Agreement and style control both start from the outcome counts per (criterion, comparison): count them once.
    comparisons = None if votes.empty else timed("comparison_counts", _comparison_counts, votes)
    return CampaignStatistics(
        n_votes=n_votes,
        pairs=pairs,
        leaderboard=board,
        agreement=(
            timed("agreement", _agreement_of, comparisons)
            if comparisons is not None and "comparison_id" in votes
            else timed("agreement", agreement, votes)
        ),
        position_bias=timed("position_bias", position_bias, votes),
        length_bias=timed("length_bias", length_bias, votes),
        annotator_left_rates=timed("annotator_left_rates", annotator_left_rates, votes),
        timings=timings,
        style_control=(
            timed(
                "style_control",
                _style_control_from,
                votes,
                comparisons,
                features=STYLE_FEATURES,
                n_boot=n_boot,
                seed=seed,
            )
            if comparisons is not None and has_style_columns(votes)
            else style_controlled_leaderboard(votes)
            if has_style_columns(votes)
            else None
        ),
        annotator_outliers=outliers,
        excluded_annotators=excluded,
        category_leaderboards=timed("category_leaderboards", category_leaderboards, votes, n_boot=n_boot, seed=seed),
    )


# ----------------------------------------------------------------------------------------------------------------
# Synthetic campaigns with planted strengths (tests and the benchmark)
# ----------------------------------------------------------------------------------------------------------------


def synthetic_votes(
    n_judgements: int,
    *,
    n_variants: int = 4,
    criteria: tuple[str, ...] = (OVERALL,),
    strengths: Any = None,
    n_prompts: int = 50,
    n_annotators: int = 10,
    raters_per_comparison: int = 3,
    left_bias: float = 0.0,
    length_bias: float = 0.0,
    tie_rate: float = 0.1,
    style_effects: dict[str, float] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A votes frame drawn from a Bradley-Terry model with planted natural-log strengths.

    Variants are 1..n_variants with log-strengths `strengths` (default evenly spaced from −1 to 1). Each comparison
    (a random pair on a random prompt) is judged by `raters_per_comparison` distinct annotators; each judgement is a
    tie with probability `tie_rate`, else a wins with probability σ(β_a − β_b + left_bias·[±1 a shown left] +
    length_bias·(length_a − length_b)/1000 + Σ_f style_effects[f]·x_f), independently per criterion, where x_f are
    the standardized style covariates of `style_features` computed on the judgements. Every row carries the style
    columns (STYLE_COLUMNS): random markdown counts per answer, drawn from their own generator so that the rest of
    the frame does not depend on them.
    """
    rng = np.random.default_rng(seed)
    log_strengths = np.linspace(-1.0, 1.0, n_variants) if strengths is None else np.asarray(strengths, float)
    n_comparisons = -(-n_judgements // raters_per_comparison)
    first = rng.integers(0, n_variants, n_comparisons)
    second = (first + rng.integers(1, n_variants, n_comparisons)) % n_variants  # never the same variant
    low, high = np.minimum(first, second), np.maximum(first, second)
    comparison_prompt = rng.integers(0, n_prompts, n_comparisons)
    comparison_lengths = rng.integers(200, 2000, (n_comparisons, 2))
    first_annotator = rng.integers(0, n_annotators, n_comparisons)

    comparison = np.arange(n_judgements) // raters_per_comparison
    seat = np.arange(n_judgements) % raters_per_comparison
    variant_a, variant_b = low[comparison], high[comparison]
    length_a, length_b = comparison_lengths[comparison, 0], comparison_lengths[comparison, 1]
    left_is_a = rng.random(n_judgements) < 0.5

    style_rng = np.random.default_rng([seed, 1])
    markdown = {
        f"{feature}_{side}": style_rng.poisson(mean, (n_comparisons, 2))[comparison, column]
        for feature, mean in (("headers", 1.0), ("lists", 4.0), ("bold", 2.0))
        for column, side in enumerate(("a", "b"))
    }
    style_counts = {"length_a": length_a, "length_b": length_b} | markdown

    n_criteria = len(criteria)
    logit = (
        log_strengths[variant_a]
        - log_strengths[variant_b]
        + left_bias * np.where(left_is_a, 1.0, -1.0)
        + length_bias * (length_a - length_b) / 1000.0
    )
    if style_effects:
        unknown = sorted(set(style_effects) - set(STYLE_FEATURES))
        if unknown:
            raise ValueError(f"unknown style feature(s) {', '.join(unknown)}; known: {', '.join(STYLE_FEATURES)}")
        planted = tuple(style_effects)
        covariates, _ = style_features(pd.DataFrame(style_counts), planted)
        logit = logit + covariates @ np.array([style_effects[feature] for feature in planted])
    a_wins = rng.random((n_criteria, n_judgements)) < expit(logit)
    tie = rng.random((n_criteria, n_judgements)) < tie_rate
    outcome = np.where(tie, OUTCOME_CODES["tie"], np.where(a_wins, WIN_A, WIN_B)).ravel()
    category_of_code = np.array([0, 2, 1])  # ordinal code (a, tie, b) → position in the categories (a, b, tie)

    def per_criterion(values: np.ndarray) -> np.ndarray:
        return np.tile(values, n_criteria)

    judgement = np.arange(1, n_judgements + 1)
    created = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(per_criterion(judgement), unit="s")
    return pd.DataFrame(
        {
            "judgement_id": per_criterion(judgement),
            "comparison_id": per_criterion(comparison + 1),
            "prompt_id": per_criterion(comparison_prompt[comparison] + 1),
            "annotator_id": per_criterion((first_annotator[comparison] + seat) % n_annotators + 1),
            "criterion": pd.Categorical.from_codes(
                np.repeat(np.arange(n_criteria), n_judgements), pd.Index(list(criteria))
            ),
            "variant_a": per_criterion(variant_a + 1),
            "variant_b": per_criterion(variant_b + 1),
            "outcome": pd.Categorical.from_codes(category_of_code[outcome], categories=pd.Index(["a", "b", "tie"])),
            "left_is_a": per_criterion(left_is_a),
            "length_a": per_criterion(length_a),
            "length_b": per_criterion(length_b),
            "time_on_task_ms": per_criterion(rng.integers(5_000, 120_000, n_judgements)),
            "created_at": created,
            **{column: per_criterion(markdown[column]) for column in STYLE_COLUMNS if column in markdown},
        }
    )
