"""Pure preference statistics: pandas in, DataFrames out, no ORM.

A *votes* frame has one row per judgement × criterion with columns
`criterion`, `variant_a`, `variant_b` (a < b, the comparison's variants) and `outcome` in {"a", "b", "tie"}.
"""

import pandas as pd
from scipy.stats import binomtest

VOTE_COLUMNS = ["criterion", "variant_a", "variant_b", "outcome"]
PAIR_COLUMNS = ["criterion", "variant_a", "variant_b", "wins_a", "wins_b", "ties", "n", "win_rate_a", "p_value"]


def sign_test_p_value(wins_a: int, wins_b: int) -> float:
    """Exact two-sided binomial sign test on the decisive votes (ties excluded); 1.0 with none."""
    decisive = wins_a + wins_b
    if decisive == 0:
        return 1.0
    return float(binomtest(wins_a, decisive, 0.5, alternative="two-sided").pvalue)


def pairwise_table(votes: pd.DataFrame) -> pd.DataFrame:
    """Wins, ties and the sign test for every (criterion, variant pair) present in `votes`."""
    if votes.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    counts = votes.groupby(["criterion", "variant_a", "variant_b", "outcome"]).size().unstack("outcome", fill_value=0)
    counts = counts.reindex(columns=["a", "b", "tie"], fill_value=0).reset_index()
    table = counts.rename(columns={"a": "wins_a", "b": "wins_b", "tie": "ties"})
    table["n"] = table["wins_a"] + table["wins_b"] + table["ties"]
    # Ties count half a win: the net win rate a reader expects from a pairwise table.
    table["win_rate_a"] = (table["wins_a"] + 0.5 * table["ties"]) / table["n"]
    table["p_value"] = [
        sign_test_p_value(int(a), int(b)) for a, b in zip(table["wins_a"], table["wins_b"], strict=True)
    ]
    return table[PAIR_COLUMNS].sort_values(["variant_a", "variant_b", "criterion"], ignore_index=True)
