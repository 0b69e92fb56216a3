"""The campaign's "x% complete" on every pair page, without counting the campaign's rows on every page.

Counting a campaign's comparisons and judgements costs time in proportion to the campaign (a million comparisons:
tens of milliseconds), on the most frequent page of the app. The two counts are kept in Django's cache for
PROGRESS_SECONDS instead; a judgement stored through the engine adds itself to the cached count at once. With the
shared cache (CACHE_URL) every process sees that count; with the default per-process cache another process's page
may lag by the judgements of the last PROGRESS_SECONDS: fine for a progress line, which is all this is used for.
"""

import re
import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core.cache import cache
from django.db.models import Count, Exists, F, Func, Max, OuterRef, Q, QuerySet, Sum, TextField, Value
from django.db.models.functions import Coalesce, Replace, Trim

from evaluator.compiled import Compiled
from evaluator.models import Assignment, Campaign, CampaignMember, CampaignState, Comparison, Participation
from evaluator.selectors.qualification import campaign_qualified

PROGRESS_SECONDS = 30


def _keys(campaign: Campaign) -> tuple[str, str]:
    # The creation time in the key: a new campaign that reuses an id (SQLite after a rollback) starts afresh.
    stamp = f"{campaign.pk}:{campaign.created_at.timestamp() if campaign.created_at else 0}"
    return f"prefloop:progress:judged:{stamp}", f"prefloop:progress:wanted:{stamp}"


def campaign_percent_done(*, campaign: Campaign) -> int:
    """Share of the campaign's wanted judgements (comparisons × k) already given, 0–100, at most PROGRESS_SECONDS
    old. The judgements are summed from the annotators' Participation rows (one per annotator, kept with every
    judgement, imported ones too), not counted row by row: a count of the campaign's judgements grew with them
    (a quarter of a second at 80,000). Comparisons of two identical answers (never served) and their judgements
    are left out."""
    judged_key, wanted_key = _keys(campaign)
    counts = cache.get_many([judged_key, wanted_key])
    if len(counts) < 2:
        # Pairs of identical answers are never served: their wanted judgements would never come.
        identical = campaign_identical_pairs(campaign=campaign)
        judged = Participation.objects.filter(campaign=campaign).aggregate(n=Coalesce(Sum("rated"), 0))["n"]
        counts = {
            judged_key: judged - identical.judgements,
            wanted_key: (identical.of_comparisons - identical.comparisons) * campaign.overlap,
        }
        cache.set_many(counts, PROGRESS_SECONDS)
    wanted = counts[wanted_key]
    return min(100, round(100 * counts[judged_key] / wanted)) if wanted else 0


def campaign_judgement_counted(*, campaign: Campaign) -> None:
    """One more judgement in the campaign: the cached count follows at once (no-op when not cached)."""
    with suppress(ValueError):  # not cached: the next page counts afresh
        cache.incr(_keys(campaign)[0])


def assignment_with_pair(*, token: uuid.UUID | str) -> Assignment | None:
    """The assignment of `token` with everything the pair page shows (its campaign and the campaign's guidelines
    version, the prompt, both answers), in one five-table select; None for an unknown token."""
    found = _assignment_with_pair.fetch(token=uuid.UUID(str(token)))
    return found[0] if found else None


@Compiled
def _assignment_with_pair(*, token: uuid.UUID) -> QuerySet[Assignment]:
    # Compiled once (evaluator/compiled.py): every submission, skip and flag reads it.
    return Assignment.objects.select_related(
        "comparison__campaign__guidelines_version",
        "comparison__prompt",
        "comparison__candidate_a",
        "comparison__candidate_b",
    ).filter(token=token)


def campaigns_servable(*, annotator: User | int) -> QuerySet[Campaign]:
    """The active campaigns `annotator` is assigned to (by user or through one of their groups), in the order
    the claim serves them: highest priority first, then oldest first. One query, or a subquery of another."""
    return Campaign.objects.filter(Exists(_assigned(annotator)), state=CampaignState.ACTIVE).order_by(
        "-priority", "created_at", "pk"
    )


def _assigned(annotator: User | int) -> QuerySet[CampaignMember]:
    return CampaignMember.objects.filter(campaign=OuterRef("pk")).filter(Q(user=annotator) | Q(group__user=annotator))


def campaign_is_servable(*, campaign_id: int, annotator: User) -> bool:
    """Whether the campaign is active and `annotator` is assigned to it, read now (one query)."""
    return campaigns_servable(annotator=annotator).filter(pk=campaign_id).exists()


def campaign_served(*, campaign_id: int, annotator: User | int) -> Exists:
    """An SQL condition, true while the campaign is active, `annotator` assigned to it and qualified (where it asks
    for a qualification): evaluated by the statement that uses it (the submission's conditional update), so it
    reads the state as that statement runs."""
    return Exists(
        Campaign.objects.filter(pk=campaign_id, state=CampaignState.ACTIVE)
        .filter(Exists(_assigned(annotator)))
        .filter(campaign_qualified(annotator=annotator))
    )


def campaign_state_for(*, campaign_id: int, annotator: User) -> tuple[str, bool]:
    """The campaign's state and whether `annotator` is assigned to it, read together now (one query)."""
    row = Campaign.objects.filter(pk=campaign_id).values_list("state", Exists(_assigned(annotator))).get()
    return row[0], row[1]


_WHITESPACE = re.compile(r"\s+")


def answer_normalised(text: str) -> str:
    """An answer's text with every run of whitespace made one space and none at either end: the form in which
    two answers are compared for being identical."""
    return _WHITESPACE.sub(" ", text).strip()


def answers_identical(first: str, second: str) -> bool:
    """Whether two answers read the same (equal after whitespace normalisation): such a pair is never served."""
    return answer_normalised(first) == answer_normalised(second)


class AnswerNormalised(Func):
    """``answer_normalised`` in SQL: every run of whitespace one space, none at either end. PostgreSQL's ``\\s``
    and the SQLite fallback's tab, newline, carriage return, vertical tab and form feed may differ from Python's
    on exotic Unicode spaces; the claim's own check (``answers_identical``) stays the one that decides."""

    function = "REGEXP_REPLACE"
    output_field = TextField()

    def __init__(self, expression: Any) -> None:
        super().__init__(expression, Value(r"\s+"), Value(" "), Value("g"))

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return compiler.compile(Trim(Func(*self.get_source_expressions(), function="REGEXP_REPLACE")))

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # SQLite has no regex replace: every whitespace character a space, then each run of spaces one space (mark
        # each space, drop a mark followed by a space, drop the last marks).
        text = self.get_source_expressions()[0]
        for space in "\t\n\r\x0b\x0c":
            text = Replace(text, Value(space), Value(" "))
        text = Replace(Replace(Replace(text, Value(" "), Value(" \x01")), Value("\x01 "), Value("")), Value("\x01"))
        return compiler.compile(Trim(text))


@dataclass(frozen=True)
class IdenticalPairs:
    comparisons: int
    judgements: int
    of_comparisons: int  # the campaign's comparisons, identical or not


IDENTICAL_SECONDS = 600


def comparisons_with_identical_answers(*, campaign: Campaign) -> QuerySet[Comparison]:
    """The campaign's comparisons whose two answers read the same: older data and imports may hold some; the claim
    passes them over, so they never get a judgement through the rating page."""
    return (
        Comparison.objects.filter(campaign=campaign)
        .alias(answer_a=AnswerNormalised("candidate_a__text"), answer_b=AnswerNormalised("candidate_b__text"))
        .filter(answer_a=F("answer_b"))
    )


def campaign_identical_pairs(*, campaign: Campaign) -> IdenticalPairs:
    """How many of the campaign's comparisons hold two identical answers, and the judgements they carry anyway.

    Normalising every answer costs time in proportion to the campaign, so the result is cached under the
    campaign's comparison count and newest id (new comparisons change the key) for IDENTICAL_SECONDS."""
    shape = Comparison.objects.filter(campaign=campaign).aggregate(count=Count("pk"), newest=Max("pk"))
    key = f"prefloop:identical:{_keys(campaign)[0]}:{shape['count']}:{shape['newest']}"
    cached = cache.get(key)
    if cached is None:
        # Both counts in one pass of the normalisation, which is what costs (a third of a second at 60,000 pairs).
        found = comparisons_with_identical_answers(campaign=campaign).aggregate(
            comparisons=Count("pk", distinct=True), judgements=Count("judgements")
        )
        cached = (found["comparisons"], found["judgements"])
        cache.set(key, cached, IDENTICAL_SECONDS)
    comparisons, judgements = cached
    return IdenticalPairs(comparisons, judgements, of_comparisons=shape["count"])
