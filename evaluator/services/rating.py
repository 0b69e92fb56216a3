"""The assignment engine: who rates which comparison next, and how a judgement is recorded.

Invariants, and what holds each:

- A comparison has at most k (``Campaign.overlap``) *live* assignments, live meaning completed or with an
  unexpired lease that was not released (a skip releases its lease at once). A claim locks the comparison row
  (``SELECT … FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL), re-counts its live assignments under that lock
  and only then inserts; a late submission on an expired lease locks the same row and re-counts before it
  counts. So two claimers can never both take the last slot.
- An annotator never gets one comparison twice: ``UniqueConstraint(comparison, annotator)`` on Assignment (and
  on Judgement), and candidates exclude the annotator's comparisons.
- One judgement per assignment: ``OneToOneField`` plus the assignment row lock taken by ``judgement_submit``,
  so a double submit of one token waits for the first and returns its judgement.
- A per-annotator quota per campaign and "one open lease at a time": every claim first locks the annotator's
  user row, so one annotator's claims (two tabs, a double click) run one after the other.
- Only an *active* campaign the annotator is assigned to (``CampaignMember``, by user or group) is served, in
  priority order (``selectors.rating.campaigns_servable``): the open lease, the campaign list and every claim are
  read through it. A judgement is stored only while its campaign is active and the annotator still assigned,
  checked in the submitting transaction; a lease open when its campaign is paused or closed is refused on
  submission (nothing is stored) and simply expires. A claim that races a pause commits before it in effect:
  its lease exists but can never be submitted while the campaign is paused.
- A pair whose two answers read the same (``selectors.rating.answers_identical``) is never served: pairing does
  not create one (evaluator/services/generation.py) and the claim passes over one made before that rule.

Candidates come from indexed range scans over denormalised columns of Comparison (``live_assignments``,
``judgement_count``, ``vote_margin``, ``rank_key``; partial indexes split gold from ordinary items), never from
a count over all comparisons nor ``ORDER BY random()``: a claim costs the same with 10k or 1M comparisons. The
columns are refreshed from the assignment/judgement rows under the row lock whenever the engine touches a
comparison; they only rank candidates, so a stale value (rows written by a factory or an import) costs at most
a skipped candidate, never a broken cap. Expired leases are handed back in bounded batches by
``leases_release``, which each claim runs in its own transaction (after the annotator's open lease is looked up),
through a partial index on unfinished, unreleased leases.

SQLite fallback: ``select_for_update`` is a no-op there, but settings open every SQLite transaction with
``BEGIN IMMEDIATE`` (``transaction_mode``), which takes the database's single write lock at the start of
``transaction.atomic()``. Every claim, release and submission therefore runs serialized, reads what the previous
one committed, and the same re-count and unique constraints hold every invariant above.
"""

import random
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q, QuerySet, Subquery
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import (
    OVERALL,
    AnswerFlag,
    Assignment,
    Campaign,
    CampaignState,
    Comparison,
    CriterionChoice,
    Judgement,
    Outcome,
    Selection,
)
from evaluator.selectors.rating import (
    answers_identical,
    campaign_judgement_counted,
    campaign_state_for,
    campaigns_servable,
)

SIDES = ("left", "right", "tie")
# "Both bad" is stored as a tie with CriterionChoice.both_bad set; only offered where the campaign allows it.
BOTH_BAD = "both_bad"
SKIP_REASON_MAX = 500
CLAIM_ATTEMPTS = 5


# Claiming --------------------------------------------------------------------------------------------------


def assignment_next(
    *, annotator: User, campaign: Campaign | None = None, now: datetime | None = None
) -> Assignment | None:
    """The annotator's open assignment, or a newly claimed comparison that still needs judgements.

    Only active campaigns the annotator is assigned to are served: `campaign` alone when given (the one the
    annotator picked; ServiceError when it is not active or not theirs), else each in turn, highest priority first
    and then oldest first. Within one, gold items are drawn at the campaign's ``gold_rate`` and the rest follow its
    ``selection``. An open lease in a served campaign comes first, whichever campaign was picked (one open lease
    at a time). None when nothing is left for this annotator (all done, or quota reached).
    """
    now = now or timezone.now()
    # One transaction for the whole claim (each BEGIN/COMMIT is a round trip on the hottest path of the app).
    with transaction.atomic():
        # One annotator's claims run one at a time: the quota and "one open lease" checks below stay true.
        get_user_model().objects.select_for_update(no_key=True).filter(pk=annotator.pk).exists()
        servable = campaigns_servable(annotator=annotator)
        current = _open_assignment(annotator, now, servable)
        if current:
            return current
        if campaign is not None:
            servable = servable.filter(pk=campaign.pk)
            if not servable.exists():
                raise ServiceError(_not_served(campaign))
        _leases_release(now, settings.PREFLOOP_LEASE_RELEASE_BATCH)
        for served in servable:
            quota = served.quota_per_annotator
            if quota is not None and _quota_used(served, annotator, now) >= quota:
                continue
            claimed = _claim_in_campaign(served, annotator, now)
            if claimed:
                return claimed
    return None


def _not_served(campaign: Campaign) -> str:
    state = Campaign.objects.filter(pk=campaign.pk).values_list("state", flat=True).first()
    if state is not None and state != CampaignState.ACTIVE:
        return f"“{campaign.name}” is {CampaignState(state).in_words}: no pairs are served from it."
    return f"You are not assigned to “{campaign.name}”."


def _open_assignment(annotator: User, now: datetime, servable: QuerySet[Campaign]) -> Assignment | None:
    # Its id first: usually there is none (the last pair was just submitted), and the five-table select that the
    # pair page needs costs more to build than to run. A lease in a campaign no longer served (paused, closed,
    # unassigned) is passed over; it expires on its own.
    open_id = (
        Assignment.objects.filter(
            annotator=annotator,
            completed_at__isnull=True,
            released=False,
            lease_expires_at__gt=now,
            comparison__campaign__in=servable.values("pk"),
        )
        .order_by("created_at")
        .values_list("pk", flat=True)
        .first()
    )
    if open_id is None:
        return None
    return Assignment.objects.select_related(
        "comparison__campaign", "comparison__prompt", "comparison__candidate_a", "comparison__candidate_b"
    ).get(pk=open_id)


def _quota_used(campaign: Campaign, annotator: User, now: datetime) -> int:
    return (
        Assignment.objects.filter(annotator=annotator, comparison__campaign=campaign)
        .filter(Q(completed_at__isnull=False) | Q(lease_expires_at__gt=now, released=False))
        .count()
    )


def _claim_in_campaign(campaign: Campaign, annotator: User, now: datetime) -> Assignment | None:
    rate = campaign.gold_rate
    pools = [True, False] if rate > 0 and random.random() < rate else [False, True]  # noqa: S311 - sampling
    if rate <= 0:
        pools.remove(True)  # gold items only ever come at the campaign's rate: none at 0
    elif rate >= 1:
        pools.remove(False)
    # A candidate locked by another claim is skipped, not waited on; when that was all that stood in the way,
    # look again shortly (the other claim commits within milliseconds) before telling the annotator "done".
    for attempt in range(CLAIM_ATTEMPTS):
        skipped = 0
        for gold in pools:
            for candidate_ids in _candidate_batches(campaign, annotator, gold=gold):
                claimed, skipped_now = _claim_first_free(campaign, annotator, candidate_ids, now)
                if claimed:
                    return claimed
                skipped += skipped_now
        if not skipped:
            return None
        time.sleep(0.005 * (attempt + 1))
    return None


def _candidate_batches(campaign: Campaign, annotator: User, *, gold: bool) -> Iterator[list[int]]:
    """Lists of candidate comparison ids, best first, each from one indexed ``ORDER BY … LIMIT`` scan."""
    size = settings.PREFLOOP_CLAIM_CANDIDATES
    pool = Comparison.objects.filter(campaign=campaign, gold_outcome__isnull=not gold).exclude(
        pk__in=Assignment.objects.filter(annotator=annotator).values("comparison_id")
    )
    if campaign.selection == Selection.ACTIVE and not gold:
        least_settled_first = pool.filter(live_assignments__lt=campaign.overlap).order_by(
            "judgement_count", "vote_margin", "rank_key"
        )
        ids = _pks(_rows(least_settled_first, size))
        if ids:
            yield ids
        return
    # Random: the emptiest comparisons first (breadth before depth), in rank_key order from a random point.
    # Each fill level is one range of the (campaign, live_assignments, rank_key) index, found by the same query
    # (a subquery asks the index for the lowest level above the last one that has rows).
    open_pool = pool.filter(live_assignments__lt=campaign.overlap)
    level = -1
    while True:
        lowest = open_pool.filter(live_assignments__gt=level).order_by("live_assignments", "rank_key")
        same_level = pool.filter(live_assignments=Subquery(lowest.values("live_assignments")[:1]))
        start = random.random()  # noqa: S311 - a shuffle, not a secret
        rows = _rows(same_level.filter(rank_key__gte=start).order_by("rank_key"), size)
        if len(rows) < size:
            rows += _rows(same_level.filter(rank_key__lt=start).order_by("rank_key"), size - len(rows))
        if not rows:
            return
        level = rows[0][1]
        yield _pks(rows)


def _rows(queryset: QuerySet[Comparison], limit: int) -> list[tuple[int, int]]:
    """(id, live_assignments) of the first `limit` comparisons."""
    return list(queryset.values_list("pk", "live_assignments")[:limit])


def _pks(rows: list[tuple[int, int]]) -> list[int]:
    return [pk for pk, _ in rows]


def _claim_first_free(
    campaign: Campaign, annotator: User, candidate_ids: list[int], now: datetime
) -> tuple[Assignment | None, int]:
    """The first candidate with room, claimed; and how many candidates were skipped as locked by others."""
    # Lock the candidates; one another annotator is claiming right now is skipped, not waited on.
    locked = set(
        Comparison.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(pk__in=candidate_ids)
        .values_list("pk", flat=True)
    )
    for pk in candidate_ids:
        if pk not in locked:
            continue
        live = _live_count(pk, now)
        if live >= campaign.overlap:
            Comparison.objects.filter(pk=pk).update(live_assignments=live)  # a stale counter, put right
            continue
        # What the pair page shows, in one query rather than one per relation; read before claiming, so that a
        # pair of identical answers (one paired before they were left out, or imported) is passed over.
        comparison = Comparison.objects.select_related("prompt", "candidate_a", "candidate_b").get(pk=pk)
        if answers_identical(comparison.candidate_a.text, comparison.candidate_b.text):
            continue
        assignment = Assignment.objects.create(
            comparison_id=pk,
            annotator=annotator,
            left_is_a=left_is_a_draw(),
            lease_expires_at=now + timedelta(minutes=settings.PREFLOOP_LEASE_MINUTES),
        )
        Comparison.objects.filter(pk=pk).update(live_assignments=live + 1)
        comparison.live_assignments = live + 1
        assignment.comparison = comparison
        assignment.comparison.campaign = campaign
        return assignment, 0
    return None, len(candidate_ids) - len(locked)


def left_is_a_draw() -> bool:
    """Which side candidate a is shown on: a fair coin from the OS's CSPRNG, so placement cannot be predicted."""
    return secrets.randbelow(2) == 0


def _live_count(comparison_id: int, now: datetime, *, excluding: int | None = None) -> int:
    live = Assignment.objects.filter(comparison_id=comparison_id).filter(
        Q(completed_at__isnull=False) | Q(lease_expires_at__gt=now, released=False)
    )
    if excluding is not None:
        live = live.exclude(pk=excluding)
    return live.count()


def leases_release(*, now: datetime | None = None, limit: int | None = None) -> int:
    """Hand expired, unfinished leases back to the pool (at most `limit` per call); returns how many."""
    with transaction.atomic():
        return _leases_release(now or timezone.now(), limit or settings.PREFLOOP_LEASE_RELEASE_BATCH)


def _leases_release(now: datetime, limit: int) -> int:
    """leases_release inside the caller's transaction (a claim runs it in its own)."""
    expired = list(
        Assignment.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(completed_at__isnull=True, released=False, lease_expires_at__lte=now)
        .order_by("lease_expires_at")
        .values_list("pk", "comparison_id")[:limit]
    )
    if not expired:
        return 0
    Assignment.objects.filter(pk__in=[pk for pk, _ in expired]).update(released=True)
    # Sorted, so that two releasing transactions lock shared comparisons in the same order.
    for comparison_id in sorted({comparison_id for _, comparison_id in expired}):
        _lock(comparison_id)
        Comparison.objects.filter(pk=comparison_id).update(live_assignments=_live_count(comparison_id, now))
    return len(expired)


# Judging ---------------------------------------------------------------------------------------------------


def side_to_outcome(side: str, *, left_is_a: bool) -> Outcome:
    if side in ("tie", BOTH_BAD):
        return Outcome.TIE
    shown_a = (side == "left") == left_is_a
    return Outcome.A if shown_a else Outcome.B


def judgement_submit(
    *,
    token: str,
    annotator: User,
    choices: Mapping[str, str],
    rationale: str = "",
    now: datetime | None = None,
) -> Judgement:
    """Record a judgement for an assignment; a repeated submission returns the stored one unchanged.

    `choices` maps each criterion slug (plus "overall") to the screen side chosen: left, right or tie, or
    both_bad where the campaign allows it (stored as a tie with ``both_bad`` set). The assignment row lock makes
    concurrent submissions of one token store one judgement.
    """
    now = now or timezone.now()
    with transaction.atomic():
        assignment = (
            Assignment.objects.select_for_update(no_key=True, of=("self",))
            .select_related("comparison__campaign")
            .filter(token=token)
            .first()
        )
        if assignment is None or assignment.annotator_id != annotator.pk:
            raise PermissionDenied("This task is not yours.")
        # A judgement completes its assignment in the same transaction: only a completed one can have one.
        existing = Judgement.objects.filter(assignment=assignment).first() if assignment.completed_at else None
        if existing:
            return existing
        if assignment.skipped_at is not None:
            raise ServiceError("You skipped this pair, so it can no longer be rated.")
        campaign = assignment.comparison.campaign
        _check_still_served(campaign, annotator)
        _check_choices(choices, campaign.criterion_slugs, allow_both_bad=campaign.allow_both_bad)
        if assignment.lease_expires_at <= now:
            _check_room_after_expiry(assignment, now)
        judgement = Judgement.objects.create(
            assignment=assignment,
            comparison=assignment.comparison,
            annotator=annotator,
            rationale=rationale.strip()[:5000],
            time_on_task_ms=max(0, int((now - assignment.created_at).total_seconds() * 1000)),
        )
        CriterionChoice.objects.bulk_create(
            CriterionChoice(
                judgement=judgement,
                criterion=slug,
                outcome=side_to_outcome(choices[slug], left_is_a=assignment.left_is_a),
                both_bad=choices[slug] == BOTH_BAD,
            )
            for slug in campaign.criterion_slugs
        )
        assignment.completed_at = now
        assignment.released = False  # a late judgement that still had room takes its slot back
        assignment.save(update_fields=["completed_at", "released"])
        _comparison_refresh(assignment.comparison_id, now)
    campaign_judgement_counted(campaign=campaign)
    return judgement


def _check_still_served(campaign: Campaign, annotator: User) -> None:
    """A judgement counts only while its campaign is active and the annotator assigned to it (read together in the
    submitting transaction: a pause, close or unassignment that committed before it refuses it; nothing is stored)."""
    state, assigned = campaign_state_for(campaign_id=campaign.pk, annotator=annotator)
    if state != CampaignState.ACTIVE:
        raise ServiceError(
            f"“{campaign.name}” was {CampaignState(state).in_words} while you rated this pair, so your choices were "
            "not stored."
        )
    if not assigned:
        raise ServiceError(
            f"You are no longer assigned to “{campaign.name}”, so your choices for this pair were not stored."
        )


def _check_choices(choices: Mapping[str, str], slugs: list[str], *, allow_both_bad: bool = False) -> None:
    missing = [slug for slug in slugs if slug not in choices]
    if missing:
        raise ServiceError(f"Choose left, right or tie for: {', '.join(missing)}.")
    unknown = sorted(set(choices) - set(slugs))
    if unknown:
        raise ServiceError(f"Unknown criteria: {', '.join(unknown)}.")
    sides = (*SIDES, BOTH_BAD) if allow_both_bad else SIDES
    bad = [slug for slug in slugs if choices[slug] not in sides]
    if bad:
        allowed = "left, right, tie or both bad" if allow_both_bad else "left, right or tie"
        raise ServiceError(f"Choices must be {allowed}; got something else for: {', '.join(bad)}.")


def _check_room_after_expiry(assignment: Assignment, now: datetime) -> None:
    """A late submission counts only while the comparison still has fewer than k live assignments."""
    comparison = (
        Comparison.objects.select_for_update(no_key=True).select_related("campaign").get(pk=assignment.comparison_id)
    )
    if _live_count(comparison.pk, now, excluding=assignment.pk) >= comparison.campaign.overlap:
        raise ServiceError("This task's time ran out and it went to someone else.")


def assignment_skip(*, token: str, annotator: User, reason: str, now: datetime | None = None) -> Assignment:
    """Skip an open assignment with a reason: its slot goes back to the pool at once; a repeat changes nothing.

    The comparison never comes back to this annotator (one assignment per comparison and annotator) and the skip
    does not count against the campaign's quota. A completed assignment cannot be skipped.
    """
    now = now or timezone.now()
    reason = reason.strip()
    with transaction.atomic():
        assignment = Assignment.objects.select_for_update(no_key=True).filter(token=token).first()
        if assignment is None or assignment.annotator_id != annotator.pk:
            raise PermissionDenied("This task is not yours.")
        if assignment.skipped_at is not None:
            return assignment
        if assignment.completed_at is not None:
            raise ServiceError("This pair is already rated, so it can no longer be skipped.")
        if not reason:
            raise ServiceError("Say why you skip this pair.")
        if len(reason) > SKIP_REASON_MAX:
            raise ServiceError(f"The reason is {len(reason)} characters long; at most {SKIP_REASON_MAX} are allowed.")
        assignment.skipped_at = now
        assignment.skip_reason = reason
        assignment.released = True
        assignment.save(update_fields=["skipped_at", "skip_reason", "released"])
        # Same lock order as judgement_submit: the assignment row first, then the comparison row.
        _comparison_refresh(assignment.comparison_id, now)
    return assignment


def _lock(comparison_id: int) -> None:
    """Lock one comparison row; counts taken after it see every commit of the transactions that held it."""
    Comparison.objects.select_for_update(no_key=True).filter(pk=comparison_id).exists()


def _comparison_refresh(comparison_id: int, now: datetime) -> None:
    """Re-count the ranking columns of one comparison from its rows, under its row lock."""
    _lock(comparison_id)
    votes = CriterionChoice.objects.filter(judgement__comparison_id=comparison_id, criterion=OVERALL).aggregate(
        a=Count("pk", filter=Q(outcome=Outcome.A)), b=Count("pk", filter=Q(outcome=Outcome.B))
    )
    Comparison.objects.filter(pk=comparison_id).update(
        live_assignments=_live_count(comparison_id, now),
        judgement_count=Judgement.objects.filter(comparison_id=comparison_id).count(),
        vote_margin=_margin(votes["a"], votes["b"]),
    )


def comparison_counters_refresh(*, comparison_ids: Iterable[int], now: datetime | None = None) -> int:
    """Re-count the ranking columns of many comparisons at once, for rows written outside the engine (imports).

    Three aggregate queries and one bulk update, whatever the number of comparisons.
    """
    now = now or timezone.now()
    ids = list(set(comparison_ids))
    live = dict(
        Assignment.objects.filter(comparison_id__in=ids)
        .filter(Q(completed_at__isnull=False) | Q(lease_expires_at__gt=now, released=False))
        .values_list("comparison_id")
        .annotate(count=Count("pk"))
    )
    judged = dict(
        Judgement.objects.filter(comparison_id__in=ids).values_list("comparison_id").annotate(count=Count("pk"))
    )
    votes = {
        row["judgement__comparison_id"]: (row["a"], row["b"])
        for row in CriterionChoice.objects.filter(judgement__comparison_id__in=ids, criterion=OVERALL)
        .values("judgement__comparison_id")
        .annotate(a=Count("pk", filter=Q(outcome=Outcome.A)), b=Count("pk", filter=Q(outcome=Outcome.B)))
    }
    comparisons = [
        Comparison(
            pk=pk,
            live_assignments=live.get(pk, 0),
            judgement_count=judged.get(pk, 0),
            vote_margin=_margin(*votes.get(pk, (0, 0))),
        )
        for pk in ids
    ]
    Comparison.objects.bulk_update(comparisons, ["live_assignments", "judgement_count", "vote_margin"], batch_size=2000)
    return len(comparisons)


def _margin(wins_a: int, wins_b: int) -> float:
    decisive = wins_a + wins_b
    return abs(wins_a - wins_b) / decisive if decisive else 0.0


FLAG_NOTE_MAX = 1000


def answer_flag(*, token: str, annotator: User, side: str, reason: str, note: str = "") -> AnswerFlag:
    """Flag the answer shown on `side` (left or right) of the annotator's pair; a repeat returns the stored flag.

    The screen side is turned into the candidate through the assignment's placement, so the flag names the
    answer, never the side it happened to be shown on.
    """
    assignment = Assignment.objects.select_related("comparison").filter(token=token).first()
    if assignment is None or assignment.annotator_id != annotator.pk:
        raise PermissionDenied("This task is not yours.")
    if side not in ("left", "right"):
        raise ServiceError(f"Side must be left or right, not {side!r}.")
    if reason not in AnswerFlag.Reason.values:
        raise ServiceError(f"Reason must be one of {', '.join(AnswerFlag.Reason.values)}, not {reason!r}.")
    note = note.strip()
    if len(note) > FLAG_NOTE_MAX:
        raise ServiceError(f"The note is {len(note)} characters long; at most {FLAG_NOTE_MAX} are allowed.")
    comparison = assignment.comparison
    shown_a = (side == "left") == assignment.left_is_a
    flag, _ = AnswerFlag.objects.get_or_create(
        assignment=assignment,
        candidate_id=comparison.candidate_a_id if shown_a else comparison.candidate_b_id,
        reason=reason,
        defaults={"note": note},
    )
    return flag
