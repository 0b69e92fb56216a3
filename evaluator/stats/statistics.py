"""Pure preference statistics: pandas in, DataFrames and dataclasses out, no ORM, no Django.

A *votes* frame has one row per judgement × criterion with the columns of VOTE_COLUMNS:
judgement_id, comparison_id, prompt_id, annotator_id (ints); criterion (str; the rubric slugs and "overall");
variant_a < variant_b (ints, the comparison's two variants); outcome in {"a", "b", "tie"} (which *variant* won);
left_is_a (bool, candidate a was shown on the left); length_a, length_b (ints, answer lengths in characters);
time_on_task_ms (int); created_at (timezone-aware datetime).

Every function needs only the columns it reads, so tests can pass small frames. The heavy parts work on aggregated
counts rather than on rows, which is what keeps a million judgements × six criteria in the low seconds:

- the clustered bootstrap of the pairwise table multiplies one matrix of prompt weights (rounds × prompts) by one
  matrix of per-prompt outcome counts (prompts × cells);
- Bradley-Terry is a weighted logistic regression on the unique (variant pair, outcome) cells, and its bootstrap
  draws those cells' counts from one multinomial per round and refits all rounds at once with a batched Newton solve.

Run the benchmark with `.venv/bin/python bench/statistics.py` (see its docstring).
"""

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.special import expit
from scipy.stats import binomtest, norm
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
# Newton on a (nearly) separated round can overshoot; a step cap keeps it monotone at the cost of a few iterations.
NEWTON_MAX_STEP = 4.0
# Bootstrap rounds are processed in chunks so the weight matrix stays below ~this many entries.
BOOTSTRAP_CHUNK_ENTRIES = 20_000_000


# ----------------------------------------------------------------------------------------------------------------
# Tests and corrections
# ----------------------------------------------------------------------------------------------------------------


def sign_test_p_value(wins_a: int, wins_b: int) -> float:
    """Exact two-sided binomial sign test on the decisive votes (ties excluded); 1.0 with none."""
    decisive = wins_a + wins_b
    if decisive == 0:
        return 1.0
    return float(binomtest(wins_a, decisive, 0.5, alternative="two-sided").pvalue)


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
    """Dense integer codes and the sorted unique values they index."""
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


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

    table["p_value"] = [sign_test_p_value(int(a), int(b)) for a, b in zip(wins_a, wins_b, strict=True)]
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
    for _ in range(NEWTON_MAX_ITERATIONS):
        probability = expit(beta @ design.T)
        gradient = (successes - trials * probability) @ design - ridge * beta
        weight = trials * probability * (1.0 - probability)
        information = np.einsum("kp,rk,kq->rpq", design, weight, design, optimize=True) + prior
        step = np.linalg.solve(information, gradient[..., None])[..., 0]
        step = np.clip(step, -NEWTON_MAX_STEP, NEWTON_MAX_STEP)
        beta += step
        if np.max(np.abs(step), initial=0.0) < NEWTON_TOLERANCE:
            break
    probability = expit(beta @ design.T)
    weight = trials * probability * (1.0 - probability)
    information = np.einsum("kp,rk,kq->rpq", design, weight, design, optimize=True) + prior
    return beta, information


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
    raters = value_counts.sum(axis=1)
    if value_counts.shape[0] == 0 or raters.min() != raters.max() or raters[0] < 2:
        return math.nan
    m = float(raters[0])
    per_unit = ((value_counts**2).sum(axis=1) - m) / (m * (m - 1.0))
    shares = value_counts.sum(axis=0) / value_counts.sum()
    expected = float((shares**2).sum())
    if expected == 1.0:
        return math.nan  # one category throughout: agreement is undefined, not perfect
    return float((per_unit.mean() - expected) / (1.0 - expected))


def ordinal_alpha(value_counts: np.ndarray) -> float:
    """Krippendorff's ordinal α from units × (a, tie, b) counts; NaN when no unit has two judgements.

    Passes value counts rather than the annotators × units reliability matrix: it is the same computation in the
    `krippendorff` package, and the matrix would be mostly empty (each annotator sees few comparisons).
    """
    pairable = value_counts[value_counts.sum(axis=1) >= 2]
    if pairable.shape[0] == 0:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(krippendorff.alpha(value_counts=pairable, value_domain=[0, 1, 2], level_of_measurement="ordinal"))
    return value if math.isfinite(value) else math.nan


def agreement(votes: pd.DataFrame) -> pd.DataFrame:
    """Krippendorff's ordinal α and Fleiss' κ per criterion: units are comparisons, coders annotators.

    Values are the outcome seen from variant a (a → 0, tie → 1, b → 2). n_units counts the comparisons with at least
    two judgements (the only ones that carry agreement information). Needs criterion, comparison_id, outcome.
    """
    if votes.empty:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    criterion, criteria = _factorize(votes["criterion"])
    unit, units = _factorize(votes["comparison_id"])
    cell = (criterion * len(units) + unit) * 3 + outcome_codes(votes["outcome"])
    all_counts = np.bincount(cell, minlength=len(criteria) * len(units) * 3).reshape(len(criteria), len(units), 3)
    rows = []
    for index, name in enumerate(criteria):
        per_unit = all_counts[index]
        counts = per_unit[per_unit.sum(axis=1) > 0]  # comparisons judged on this criterion
        rows.append(
            {
                "criterion": str(name),
                "krippendorff_alpha": ordinal_alpha(counts),
                "fleiss_kappa": fleiss_kappa(counts),
                "n_units": int((counts.sum(axis=1) >= 2).sum()),
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
    bt = BradleyTerryCells(variants, pair // variants.size, pair % variants.size, counts.astype(float))
    design = np.column_stack([bt.design(), np.asarray(values, dtype=float)[value_of_cell]])
    successes, trials = _successes_and_trials(bt.counts)
    beta, information = fit_weighted_logistic(design, successes, trials)
    return _wald(float(beta[0, -1]), information[0], design.shape[1] - 1)


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
    per_annotator["p_value"] = [
        sign_test_p_value(int(k), int(n - k))
        for k, n in zip(per_annotator["left_wins"], per_annotator["decisive"], strict=True)
    ]
    return per_annotator[ANNOTATOR_COLUMNS]


# ----------------------------------------------------------------------------------------------------------------
# Prompt-level view
# ----------------------------------------------------------------------------------------------------------------


def prompt_majority(votes: pd.DataFrame) -> pd.DataFrame:
    """The prompt-level view: one row per (prompt, variant pair, criterion) with its majority outcome.

    The majority is the outcome with strictly more votes than each of the other two, else "tie" (a 2–2 split or a
    three-way draw is no verdict). The result is a votes frame, so every function here runs on it: judgement_id
    numbers the (prompt, pair) verdicts, comparison_id is the smallest comparison of the group, annotator_id −1
    (a majority has no single annotator, so agreement on this view has no units), left_is_a the majority side,
    lengths the rounded means, time_on_task_ms the sum and created_at the latest. Needs prompt_id, criterion,
    variant_a, variant_b, outcome.
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
    for column in ("length_a", "length_b"):
        if column in votes:
            result[column] = np.round(group_mean(column)).astype(np.int64)
    if "time_on_task_ms" in votes:
        result["time_on_task_ms"] = (group_mean("time_on_task_ms") * size).round().astype(np.int64)
    extremes = {name: how for name, how in (("comparison_id", "min"), ("created_at", "max")) if name in votes}
    if extremes:
        grouped = votes[list(extremes)].groupby(group, sort=True).agg(extremes)
        for name in extremes:
            result[name] = grouped[name].to_numpy()
    # One verdict per (prompt, pair) spans every criterion, as one judgement does.
    verdict = pd.MultiIndex.from_frame(result[["prompt_id", "variant_a", "variant_b"]])
    result["judgement_id"] = verdict.factorize()[0] + 1
    result["annotator_id"] = -1
    return result[[column for column in VOTE_COLUMNS if column in result]]


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
        }


def _as_categories(votes: pd.DataFrame) -> pd.DataFrame:
    """Criterion and outcome as categoricals: every later step then maps a handful of categories, not 6M strings."""
    conversions = {
        column: "category"
        for column in ("criterion", "outcome")
        if column in votes and not isinstance(votes[column].dtype, pd.CategoricalDtype)
    }
    return votes.astype(conversions) if conversions else votes


def campaign_statistics(votes: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> CampaignStatistics:
    """Pairs, leaderboard, agreement, position and length bias and per-annotator left rates of `votes`.

    `timings` records the seconds each part took (for the benchmark and for anyone wondering why a page is slow).
    """
    timings: dict[str, float] = {}

    def timed(name: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = function(*args, **kwargs)
        timings[name] = time.perf_counter() - started
        return result

    votes = timed("encode", _as_categories, votes)
    n_votes = int(votes["judgement_id"].nunique()) if "judgement_id" in votes else len(votes)
    if votes.empty:
        pairs, board = pairwise_table(votes), leaderboard(votes)
    else:
        # Both tables start from the same (criterion, pair, outcome) counts: reduce the rows once.
        cells = timed("pair_cells", _pair_cells, votes)
        clusters = votes["prompt_id"] if "prompt_id" in votes else pd.Series(np.arange(len(votes)))
        pairs = timed("pairs", _pairwise_table_of, cells, clusters, n_boot=n_boot, seed=seed)
        board = timed("leaderboard", _leaderboard_from, cells, n_boot=n_boot, seed=seed)
    return CampaignStatistics(
        n_votes=n_votes,
        pairs=pairs,
        leaderboard=board,
        agreement=timed("agreement", agreement, votes),
        position_bias=timed("position_bias", position_bias, votes),
        length_bias=timed("length_bias", length_bias, votes),
        annotator_left_rates=timed("annotator_left_rates", annotator_left_rates, votes),
        timings=timings,
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
    seed: int = 0,
) -> pd.DataFrame:
    """A votes frame drawn from a Bradley-Terry model with planted natural-log strengths.

    Variants are 1..n_variants with log-strengths `strengths` (default evenly spaced from −1 to 1). Each comparison
    (a random pair on a random prompt) is judged by `raters_per_comparison` distinct annotators; each judgement is a
    tie with probability `tie_rate`, else a wins with probability σ(β_a − β_b + left_bias·[±1 a shown left] +
    length_bias·(length_a − length_b)/1000), independently per criterion.
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

    n_criteria = len(criteria)
    logit = (
        log_strengths[variant_a]
        - log_strengths[variant_b]
        + left_bias * np.where(left_is_a, 1.0, -1.0)
        + length_bias * (length_a - length_b) / 1000.0
    )
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
        }
    )
