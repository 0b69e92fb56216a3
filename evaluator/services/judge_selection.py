"""A judge steering which pairs people rate: each pair's outcome by the campaign's selection judge, kept on the pair.

A campaign may name a *selection judge* (``Campaign.selection_judge``). Its overall verdicts on a pair, in both
orders, become the pair's ``Comparison.judge_outcome`` (``JudgeOutcome``): the variant it preferred in both orders
alike, a tie in both, ``split`` when the orders disagree (one of them a tie included), ``unread`` when a reply
named no side; None while the pair lacks either order. The claim (evaluator/services/rating.py) reads that column
from the row it already reads, so a judge costs the rating cycle no statement:

- active selection serves first the pairs the judge split or could not read, and those whose human votes so far
  lean against the judge's side (``judge_priority``), then as before: fewest judgements, closest split;
- a judge-screened campaign (``Campaign.judge_screening``) serves only the pairs whose outcome is close
  (``JUDGE_CLOSE``: a tie, split or unread); pairs the judge found decisive, and pairs it has not judged yet, are
  not served. Gold items are served at the campaign's gold rate as before: they measure the annotators.

The column is written when a judge's verdicts are stored (``verdicts_store``, for the campaigns that use that
judge) and rewritten for the whole campaign when its selection judge changes; never by a claim or a submission.
"""

from collections import defaultdict
from collections.abc import Iterable

from django.db.models import Case, F, IntegerField, Q, QuerySet, Value, When

from evaluator.batching import batched
from evaluator.models import OVERALL, Campaign, Comparison, JudgeOutcome, JudgeVerdict

# The variant a parsed choice names, by the order it was asked in ("ab": candidate a shown first).
_CHOICE_OUTCOME = {
    ("ab", "left"): JudgeOutcome.A,
    ("ab", "right"): JudgeOutcome.B,
    ("ba", "left"): JudgeOutcome.B,
    ("ba", "right"): JudgeOutcome.A,
    ("ab", "tie"): JudgeOutcome.TIE,
    ("ba", "tie"): JudgeOutcome.TIE,
}


def judge_outcome_of(choices: dict[str, str | None]) -> JudgeOutcome | None:
    """The pair's outcome from its verdicts' choices by order ({"ab": "left", "ba": None}, …); None unless both
    orders are there."""
    if set(choices) != {"ab", "ba"}:
        return None
    if choices["ab"] is None or choices["ba"] is None:
        return JudgeOutcome.UNREAD
    first, second = (_CHOICE_OUTCOME[order, str(choices[order])] for order in ("ab", "ba"))
    return first if first == second else JudgeOutcome.SPLIT


def judge_priority() -> Case:
    """1 for a pair active selection serves first (the judge split, could not read, or the humans' overall votes
    so far lean against its side), else 0: an expression over the comparison row alone."""
    return Case(
        When(judge_outcome__in=[JudgeOutcome.SPLIT, JudgeOutcome.UNREAD], then=Value(1)),
        When(Q(judge_outcome=JudgeOutcome.A, votes_b__gt=F("votes_a")), then=Value(1)),
        When(Q(judge_outcome=JudgeOutcome.B, votes_a__gt=F("votes_b")), then=Value(1)),
        default=Value(0),
        output_field=IntegerField(),
    )


def comparison_judge_outcomes_refresh(*, campaign: Campaign, comparison_ids: Iterable[int] | None = None) -> int:
    """Set ``judge_outcome`` of the campaign's pairs (`comparison_ids`, else all) from its selection judge's overall
    verdicts (None everywhere when it has none); returns how many pairs changed. One read of the verdicts and one
    UPDATE per outcome and batch of pairs; rows already right are not written."""
    pairs = Comparison.objects.filter(campaign=campaign)
    if comparison_ids is not None:
        pairs = pairs.filter(pk__in=list(comparison_ids))
    wanted = _outcomes(campaign, pairs)
    current = dict(pairs.values_list("pk", "judge_outcome"))
    by_outcome: dict[str | None, list[int]] = defaultdict(list)
    for pk, outcome in current.items():
        new = wanted.get(pk)
        if new != outcome:
            by_outcome[new].append(pk)
    for outcome, ids in by_outcome.items():
        for batch in batched(sorted(ids)):  # sorted: two writers lock shared rows in the same order
            Comparison.objects.filter(pk__in=batch).update(judge_outcome=outcome)
    return sum(len(ids) for ids in by_outcome.values())


def _outcomes(campaign: Campaign, pairs: QuerySet[Comparison]) -> dict[int, str]:
    if campaign.selection_judge_id is None:
        return {}
    verdicts = JudgeVerdict.objects.filter(
        judge_id=campaign.selection_judge_id, criterion=OVERALL, comparison__in=pairs
    ).values_list("comparison_id", "order", "choice")
    choices: dict[int, dict[str, str | None]] = defaultdict(dict)
    for pk, order, choice in verdicts.iterator(chunk_size=20_000):
        choices[pk][order] = choice
    outcomes = {pk: judge_outcome_of(by_order) for pk, by_order in choices.items()}
    return {pk: str(outcome) for pk, outcome in outcomes.items() if outcome is not None}


def judge_outcomes_stored(*, judge_id: int, comparison_ids: Iterable[int]) -> int:
    """After a judge's verdicts on `comparison_ids` are stored: refresh those pairs in every campaign that has the
    judge as its selection judge (usually none: then one query)."""
    ids = list(comparison_ids)
    changed = 0
    for campaign in Campaign.objects.filter(selection_judge_id=judge_id, comparisons__pk__in=ids).distinct():
        changed += comparison_judge_outcomes_refresh(campaign=campaign, comparison_ids=ids)
    return changed
