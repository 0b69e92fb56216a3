import pandas as pd
import pytest

from evaluator.statistics import VOTE_COLUMNS, pairwise_table, sign_test_p_value


@pytest.mark.parametrize(
    ("wins_a", "wins_b", "expected"),
    [
        (8, 2, 112 / 1024),  # 2 · (C(10,8) + C(10,9) + C(10,10)) / 2^10
        (3, 7, 352 / 1024),  # 2 · (C(10,7) + … + C(10,10)) / 2^10
        (10, 0, 2 / 1024),
        (5, 5, 1.0),
        (1, 0, 1.0),
        (0, 0, 1.0),  # no decisive votes: no evidence either way
    ],
)
def test_the_sign_test_matches_hand_computed_binomial_p_values(wins_a: int, wins_b: int, expected: float) -> None:
    assert sign_test_p_value(wins_a, wins_b) == pytest.approx(expected, abs=1e-12)


def test_the_pairwise_table_counts_wins_and_ties_and_excludes_ties_from_the_test() -> None:
    votes = pd.DataFrame(
        [("overall", 1, 2, "a")] * 8
        + [("overall", 1, 2, "b")] * 2
        + [("overall", 1, 2, "tie")] * 5
        + [("safety", 1, 2, "tie")] * 3,
        columns=VOTE_COLUMNS,
    )
    table = pairwise_table(votes).set_index("criterion")

    overall = table.loc["overall"]
    assert (overall.wins_a, overall.wins_b, overall.ties, overall.n) == (8, 2, 5, 15)
    assert overall.win_rate_a == pytest.approx((8 + 2.5) / 15)
    assert overall.p_value == pytest.approx(112 / 1024)
    safety = table.loc["safety"]
    assert (safety.wins_a, safety.wins_b, safety.ties) == (0, 0, 3)
    assert safety.p_value == 1.0


def test_the_pairwise_table_of_no_votes_is_empty_with_its_columns() -> None:
    table = pairwise_table(pd.DataFrame(columns=VOTE_COLUMNS))
    assert table.empty
    assert "p_value" in table.columns
