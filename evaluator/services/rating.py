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
- A campaign that asks for a qualification serves its pairs only to annotators who passed it (where they stand is
  read by the query that reads the served campaigns; evaluator/services/qualification.py), and a judgement is
  stored only for them (``campaign_served``).
- A pair whose two answers read the same (``selectors.rating.answers_identical``) is never served: pairing does
  not create one (evaluator/services/generation.py) and the claim passes over one made before that rule.

Candidates come from range scans of one index, ``(campaign, rank_key)`` over comparisons with room
(``claimable``), never from a count over all comparisons nor ``ORDER BY random()``: a claim costs the same with
10k or 1M comparisons. The ranking counters (``live_assignments``, ``judgement_count``, ``votes_a``/``votes_b``,
``vote_margin``) are denormalised on Comparison and in no index, so a claim or a submission updates the row in
place (a HOT update: no index entry written, nothing left in the indexes for VACUUM; docs/deployment.md); only
``claimable``, which flips when the last slot is taken or one is freed, is indexed. A claim sets
``live_assignments`` from a re-count taken by the very UPDATE that takes the slot (under the row lock); a submission
adds to the counters with F expressions in one UPDATE; the rare paths (a late submission, a skip, a release)
re-count them under the lock. They only rank candidates, so a stale value (rows written by a factory or an import)
costs at most a skipped candidate, never a broken cap. Expired leases are handed back in bounded batches by
``leases_release``, which a claim runs in its own transaction when its first query saw one waiting, through a
partial index on unfinished, unreleased leases.

A rating cycle (submit, claim the next pair, show it) is twelve statements with the view's reads
(tests/evaluator/test_rating_cycle_queries.py): each of them runs for every judgement of every annotator. None of
them reads the annotator's history: their rated pairs per campaign (for the quota and the page) are one row,
``Participation``, added to by the submission. The hot statements are built and compiled by the ORM once per
process and shape, then sent again with new values (evaluator/compiled.py): compiling them cost more CPU than
running them.

SQLite fallback: ``select_for_update`` is a no-op there, but settings open every SQLite transaction with
``BEGIN IMMEDIATE`` (``transaction_mode``), which takes the database's single write lock at the start of
``transaction.atomic()``. Every claim, release and submission therefore runs serialized, reads what the previous
one committed, and the same re-count and unique constraints hold every invariant above.
"""

import random
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import (
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.expressions import Combinable, OrderBy
from django.db.models.functions import Cast, Coalesce
from django.db.models.lookups import GreaterThan, LessThan
from django.utils import timezone

from evaluator.compiled import Compiled, CompiledUpdate
from evaluator.errors import QualificationDue, ServiceError
from evaluator.models import (
    JUDGE_CLOSE,
    OVERALL,
    AnswerFlag,
    Assignment,
    Campaign,
    CampaignState,
    Comparison,
    CriterionChoice,
    Judgement,
    Outcome,
    Participation,
    Selection,
)
from evaluator.selectors.qualification import (
    DUE,
    FAILED,
    campaign_is_qualified,
    campaign_qualified,
    qualification_standing,
)
from evaluator.selectors.rating import (
    answers_identical,
    campaign_judgement_counted,
    campaign_served,
    campaign_state_for,
    campaigns_servable,
)
from evaluator.services.judge_selection import judge_priority
from evaluator.services.participation import participation_rated_add

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

    A campaign that asks for a qualification the annotator has not passed serves none of its pairs: when it is
    the next in turn (or the one picked), ``QualificationDue`` names it (evaluator/services/qualification.py);
    one whose every attempt they failed is passed over (refused with a message when it is the one picked).
    """
    now = now or timezone.now()
    # One transaction for the whole claim (each BEGIN/COMMIT is a round trip on the hottest path of the app).
    with transaction.atomic():
        # One annotator's claims run one at a time: the quota and "one open lease" checks below stay true.
        _annotator_locked.fetch(annotator=annotator.pk)
        served = _campaigns_served(annotator, now)
        open_id = served[0].open_id if served else None
        if open_id is not None:
            return _assignment_shown(open_id)
        if campaign is not None:
            served = [candidate for candidate in served if candidate.campaign.pk == campaign.pk]
            if not served:
                raise ServiceError(_not_served(campaign))
            if served[0].qualification == FAILED:
                raise ServiceError(f"You did not pass the qualification of “{campaign.name}”: it serves you no pairs.")
        if served and served[0].leases_expired:
            _leases_release(now, settings.PREFLOOP_LEASE_RELEASE_BATCH)
        due = None
        for candidate in served:
            if candidate.qualification == DUE:
                due = candidate.campaign
                break
            quota = candidate.campaign.quota_per_annotator
            # No lease of the annotator's is live in a served campaign here (it would have been returned above):
            # the pairs rated are all that counts against the quota.
            if candidate.qualification == FAILED or (quota is not None and candidate.rated >= quota):
                continue
            claimed = _claim_in_campaign(candidate.campaign, annotator, now)
            if claimed:
                claimed.rated_in_campaign = candidate.rated
                return claimed
    if due is not None:  # raised after the commit: the leases released above stay released
        raise QualificationDue(due)
    return None


@Compiled
def _annotator_locked(*, annotator: int) -> QuerySet[User]:
    return get_user_model().objects.select_for_update(no_key=True).filter(pk=annotator).only("pk")


@dataclass(frozen=True)
class _Served:
    campaign: Campaign
    open_id: int | None
    leases_expired: bool
    rated: int
    qualification: int  # selectors.qualification: QUALIFIED, DUE or FAILED


def _campaigns_served(annotator: User, now: datetime) -> list[_Served]:
    """The campaigns served to `annotator` (selectors.rating.campaigns_servable), each read with what the claim
    needs, in this one query: ``open_id``, the annotator's oldest open lease in any of them (the same on every
    row); ``leases_expired``, whether any lease anywhere waits to be handed back; ``rated``, the annotator's rated
    pairs in the campaign (models.Participation: one row read, however long their history); ``qualification``,
    where the annotator stands in its qualification (read only where it asks for one). An open lease counts only
    in a campaign whose qualification (if any) the annotator passed."""
    rows: list[Any] = _served_campaigns.fetch(annotator=annotator.pk, now=now)  # with the annotations below
    return [_Served(row, row.open_id, row.leases_expired, row.rated, row.qualification) for row in rows]


@Compiled
def _served_campaigns(*, annotator: int, now: datetime) -> QuerySet[Campaign]:
    """The query of ``_campaigns_served``, compiled once (evaluator/compiled.py): the hottest query of the app."""
    servable = campaigns_servable(annotator=annotator)
    open_leases = (
        Assignment.objects.filter(
            annotator=annotator,
            completed_at__isnull=True,
            released=False,
            comparison__campaign__in=servable.filter(campaign_qualified(annotator=annotator)).values("pk"),
        )
        .filter(_unexpired(now))
        .order_by("created_at")
    )
    expired = Assignment.objects.filter(completed_at__isnull=True, released=False, lease_expires_at__lte=now)
    # The current guidelines' version rides along (a join): the pair page shows its number.
    return servable.select_related("guidelines_version").annotate(
        open_id=Subquery(open_leases.values("pk")[:1]),
        leases_expired=Exists(expired),
        rated=_rated(annotator, OuterRef("pk")),
        qualification=qualification_standing(annotator=annotator),
    )


def _unexpired(now: datetime) -> GreaterThan:
    """The lease runs past `now`, for the statements that read one annotator's or one assignment's lease: written
    on an expression of the column, so that PostgreSQL reads them through the annotator's or the primary key's
    index, never through the lease index. That partial index serves the sweep of expired leases; read for one
    lease, it is scanned across every open lease and, until a vacuum, the entries every completed assignment left
    behind: a cost that grew with the judgements of a run."""
    expires = ExpressionWrapper(F("lease_expires_at") + Value(timedelta(0)), output_field=DateTimeField())
    return GreaterThan(expires, now)


def _live(now: datetime) -> Q:
    """An assignment that holds one of its comparison's k slots: completed, or leased and neither expired nor
    released."""
    return Q(completed_at__isnull=False) | Q(lease_expires_at__gt=now, released=False)


def _count(queryset: QuerySet[Assignment]) -> Subquery:
    """COUNT(*) of `queryset` as a scalar subquery (one row, 0 when empty: no GROUP BY)."""
    counted = queryset.order_by().annotate(n=Func(F("pk"), function="COUNT", output_field=IntegerField()))
    return Subquery(counted.values("n"), output_field=IntegerField())


def _assignment_shown(assignment_id: int) -> Assignment:
    """One assignment with everything the pair page shows, in one five-table select."""
    rated = _rated(OuterRef("annotator_id"), OuterRef("comparison__campaign_id"))
    assignment = (
        Assignment.objects.select_related(
            "comparison__campaign__guidelines_version",
            "comparison__prompt",
            "comparison__candidate_a",
            "comparison__candidate_b",
        )
        .annotate(rated=rated)
        .get(pk=assignment_id)
    )
    assignment.rated_in_campaign = assignment.rated
    return assignment


def _rated(annotator: int | OuterRef, campaign: int | OuterRef) -> Coalesce:
    """How many pairs the annotator has rated in the campaign (ids or OuterRefs), as a scalar subquery: their
    Participation row (by its unique index), 0 when they have none yet."""
    participation = Participation.objects.filter(annotator=annotator, campaign=campaign).values("rated")[:1]
    return Coalesce(Subquery(participation), Value(0))


def _not_served(campaign: Campaign) -> str:
    state = Campaign.objects.filter(pk=campaign.pk).values_list("state", flat=True).first()
    if state is not None and state != CampaignState.ACTIVE:
        return f"“{campaign.name}” is {CampaignState(state).in_words}: no pairs are served from it."
    return f"You are not assigned to “{campaign.name}”."


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
        blocked = False
        for gold in pools:
            claimed, pool_blocked = _claim_from_pool(campaign, annotator, now, gold=gold)
            if claimed:
                return claimed
            blocked = blocked or pool_blocked
        if not blocked:
            return None
        time.sleep(0.005 * (attempt + 1))
    return None


def _claim_from_pool(
    campaign: Campaign, annotator: User, now: datetime, *, gold: bool
) -> tuple[Assignment | None, bool]:
    """A comparison of one pool (gold or not) claimed; else None and whether rows locked by other claims were all
    that stood in the way.

    Each try is one query that picks, locks and reads (with what the pair page shows) the best of a batch of
    candidates: the first PREFLOOP_CLAIM_CANDIDATES comparisons with room from a random point of rank_key, and as
    many from its start (two range scans of the claim index, which holds no counter). Random selection serves the
    least filled of them first (breadth before depth), active selection the fewest judged, then the closest to a
    50/50 split. A candidate another claim holds is skipped (``FOR NO KEY UPDATE SKIP LOCKED``), not waited on.
    A campaign's selection judge ranks first, under active selection, the pairs it split or the humans contradict;
    a judge-screened campaign draws its non-gold candidates only from the pairs its judge found close (both read
    from the candidate rows: evaluator/services/judge_selection.py)."""
    shape = {
        "gold": gold,
        "selection": campaign.selection,
        "judged": campaign.selection_judge_id is not None,
        "screened": campaign.judge_screening,
        "size": settings.PREFLOOP_CLAIM_CANDIDATES,
    }
    values = {"campaign": campaign.pk, "annotator": annotator.pk, "overlap": campaign.overlap}
    start = random.random()  # noqa: S311 - a shuffle, not a secret
    passed: tuple[int, ...] = ()  # locked but not claimable: full once re-counted, or two identical answers
    # First the batch alone, the annotator's own pairs probed in it; past them only when it held nothing else.
    probe = True
    while True:
        found = _candidate_locked.fetch(shape={**shape, "passed": passed, "probe": probe}, start=start, **values)
        if not found and probe:
            probe = False
            continue
        if not found:
            return None, _pool(**values, gold=gold, screened=campaign.judge_screening, passed=passed).exists()
        assignment = _claim(found[0], campaign, annotator, now)
        if assignment is not None:
            return assignment, False
        passed = (*passed, found[0].pk)


def _pool(
    *, campaign: int, annotator: int | None, overlap: int, gold: bool, screened: bool, passed: tuple[int, ...]
) -> QuerySet[Comparison]:
    """The campaign's comparisons of one pool (gold or not) with room; with `annotator`, those they have not had."""
    pool = Comparison.objects.filter(
        campaign=campaign, gold_outcome__isnull=not gold, claimable=True, live_assignments__lt=overlap
    )
    if annotator is not None:
        # Read as a hashed list of the annotator's whole history (NOT IN): a cost that grows with it, paid only
        # when a batch held none but their own pairs. NOT EXISTS here is planned as a scan of the whole range.
        pool = pool.exclude(pk__in=Assignment.objects.filter(annotator=annotator).values("comparison_id"))
    if screened and not gold:  # only the pairs its judge found close (the screened claim index)
        pool = pool.filter(judge_outcome__in=JUDGE_CLOSE)
    return pool.exclude(pk__in=passed) if passed else pool


@Compiled
def _candidate_locked(
    *,
    campaign: int,
    annotator: int,
    overlap: int,
    start: float,
    gold: bool,
    selection: str,
    judged: bool,
    screened: bool,
    size: int,
    passed: tuple[int, ...],
    probe: bool,
) -> QuerySet[Comparison]:
    """The claim's one query (compiled once per shape: evaluator/compiled.py): the best unlocked candidate of the
    batch, locked, with its prompt and both answers. With `probe`, the batch is taken from all the pairs with room
    and the annotator's own are left out of it by an index look-up of each of its rows' assignments: a cost that
    stays the same however many pairs they rated. Without, the batch is taken from the pairs they have not had."""
    pool = _pool(
        campaign=campaign,
        annotator=None if probe else annotator,
        overlap=overlap,
        gold=gold,
        screened=screened,
        passed=passed,
    )
    after = pool.filter(rank_key__gte=start).order_by("rank_key").values("pk")[:size]
    # The nearest below the point, not the lowest: the lowest ranks are where every annotator's earlier claims
    # were, and a scan from there would step over more of their own pairs the more they have rated.
    before = pool.filter(rank_key__lt=start).order_by("-rank_key").values("pk")[:size]
    active = selection == Selection.ACTIVE
    order: tuple[str | OrderBy, ...] = (
        ("judgement_count", "vote_margin", "rank_key") if active else ("live_assignments", "rank_key")
    )
    if active and judged:
        # The pairs the judge split, could not read, or the humans so far contradict come first: read from the
        # candidate rows themselves, so the claim stays one query (evaluator/services/judge_selection.py).
        order = (judge_priority().desc(), *order)
    batch = Comparison.objects.filter(_either(after, before))
    if probe:
        batch = batch.exclude(Exists(Assignment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)))
    return (
        batch.order_by(*order)
        # The first candidate no other claim holds; one another claim holds is skipped, not waited on.
        .select_for_update(skip_locked=True, no_key=True, of=("self",))
        .select_related("prompt", "candidate_a", "candidate_b")[:1]
    )


def _either(first: QuerySet[Comparison, Any], second: QuerySet[Comparison, Any]) -> Q:
    """The comparisons in either of two sliced id subqueries. On PostgreSQL one IN over their UNION ALL: two IN
    lists joined by OR make it scan the whole comparison table (160 ms at a million rows against 2 ms). SQLite
    allows no LIMIT inside a compound statement, and looks each IN list up by key anyway."""
    if connection.features.supports_slicing_ordering_in_compound:
        return Q(pk__in=first.union(second, all=True))
    return Q(pk__in=first) | Q(pk__in=second)


def _claim(comparison: Comparison, campaign: Campaign, annotator: User, now: datetime) -> Assignment | None:
    """A lease on a locked comparison when it still has room; None when full or its two answers read the same."""
    # A pair of identical answers (one paired before they were left out, or imported) is passed over.
    if answers_identical(comparison.candidate_a.text, comparison.candidate_b.text):
        return None
    # The cap, re-counted from the assignment rows by the statement that takes the slot: under the row lock, this
    # statement sees every commit of the transactions that held it. The counter is set from the same count.
    if not _slot_taken.run(comparison=comparison.pk, now=now, overlap=campaign.overlap):  # a stale counter
        live = _count(Assignment.objects.filter(comparison_id=comparison.pk).filter(_live(now)))
        Comparison.objects.filter(pk=comparison.pk).update(live_assignments=live, claimable=False)  # put right
        return None
    assignment = Assignment.objects.create(
        comparison=comparison,
        annotator=annotator,
        left_is_a=left_is_a_draw(),
        lease_expires_at=now + timedelta(minutes=settings.PREFLOOP_LEASE_MINUTES),
    )
    comparison.live_assignments += 1  # as read under the lock; exact unless rows were written around the engine
    comparison.campaign = campaign
    return assignment


@CompiledUpdate
def _slot_taken(*, comparison: int, now: datetime, overlap: int) -> tuple[QuerySet[Comparison], dict[str, Any]]:
    """One slot of a comparison taken, in one UPDATE, if the live assignments re-counted by it leave room."""
    live = _count(Assignment.objects.filter(comparison_id=comparison).filter(_live(now)))
    changes = {"live_assignments": live + 1, "claimable": LessThan(live + 1, overlap)}
    return Comparison.objects.filter(pk=comparison).filter(LessThan(live, overlap)), changes


def left_is_a_draw() -> bool:
    """Which side candidate a is shown on: a fair coin from the OS's CSPRNG, so placement cannot be predicted."""
    return secrets.randbelow(2) == 0


def _live_count(comparison_id: int, now: datetime, *, excluding: int | None = None) -> int:
    live = Assignment.objects.filter(comparison_id=comparison_id).filter(_live(now))
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
        _live_set(comparison_id, _live_count(comparison_id, now))
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
    assignment: Assignment | None = None,
) -> Judgement:
    """Record a judgement for an assignment; a repeated submission returns the stored one unchanged.

    `choices` maps each criterion slug (plus "overall") to the screen side chosen: left, right or tie, or
    both_bad where the campaign allows it (stored as a tie with ``both_bad`` set). `assignment` is the caller's
    copy of the token's assignment with ``comparison__campaign`` (the rating view has read it for its form): it
    saves a read; it is trusted only for what never changes (annotator, comparison, side placement, start).

    The usual submission (an open lease, an active campaign) is five statements: a conditional UPDATE completes
    the assignment, and with it takes its row lock, only while the lease is open and the campaign active with
    the annotator assigned (checked by that statement, so a pause or unassignment that committed before it
    refuses it); the judgement and its choices are inserted; one UPDATE adds to the comparison's counters, and
    one upsert to the annotator's rated pairs in the campaign. Every other case (a repeat, a skip, an expired
    lease, a refusal) goes through ``_submit_checked``, under the lock.
    """
    now = now or timezone.now()
    if assignment is None or str(assignment.token) != str(token):
        assignment = Assignment.objects.select_related("comparison__campaign").filter(token=token).first()
    if assignment is None or assignment.annotator_id != annotator.pk:
        raise PermissionDenied("This task is not yours.")
    campaign = assignment.comparison.campaign
    valid = _choices_problem(choices, campaign.criterion_slugs, allow_both_bad=campaign.allow_both_bad) is None
    with transaction.atomic():
        completed = valid and (
            _assignment_completed.run(assignment=assignment.pk, now=now, campaign=campaign.pk, annotator=annotator.pk)
        )
        if completed:
            judgement = _judgement_store(assignment, choices, rationale, now)
            _counters_add(assignment.comparison_id, choices["overall"], left_is_a=assignment.left_is_a)
            participation_rated_add(campaign_id=campaign.pk, annotator_id=annotator.pk)
        else:
            existing = _submit_checked(token, annotator, campaign, choices, now)
            if existing is not None:
                return existing
            judgement = _judgement_store(assignment, choices, rationale, now)
            _comparison_refresh(assignment.comparison_id, now)
            participation_rated_add(campaign_id=campaign.pk, annotator_id=annotator.pk)
    campaign_judgement_counted(campaign=campaign)
    return judgement


@CompiledUpdate
def _assignment_completed(
    *, assignment: int, now: datetime, campaign: int, annotator: int
) -> tuple[QuerySet[Assignment], dict[str, Any]]:
    """The submission's conditional UPDATE: the assignment completed if its lease is open and the campaign serves
    the annotator, as the statement runs."""
    open_lease = Assignment.objects.filter(
        _unexpired(now), pk=assignment, completed_at__isnull=True, skipped_at__isnull=True, released=False
    )
    return open_lease.filter(campaign_served(campaign_id=campaign, annotator=annotator)), {"completed_at": now}


def _submit_checked(
    token: str, annotator: User, campaign: Campaign, choices: Mapping[str, str], now: datetime
) -> Judgement | None:
    """A submission the conditional update did not take (or was not tried: choices that will be refused), under
    the assignment's row lock, checked in order: the stored judgement of a repeat, else a clear refusal (skipped,
    campaign no longer served, bad choices, lease expired with no room), else None: a late submission that still
    has room, its assignment completed."""
    assignment = Assignment.objects.select_for_update(no_key=True).get(token=token)
    # A judgement completes its assignment in the same transaction: only a completed one can have one.
    existing = Judgement.objects.filter(assignment=assignment).first() if assignment.completed_at else None
    if existing:
        return existing
    if assignment.skipped_at is not None:
        raise ServiceError("You skipped this pair, so it can no longer be rated.")
    _check_still_served(campaign, annotator)
    _check_choices(choices, campaign.criterion_slugs, allow_both_bad=campaign.allow_both_bad)
    if assignment.lease_expires_at <= now:
        _check_room_after_expiry(assignment, now)
    assignment.completed_at = now
    assignment.released = False  # a late judgement that still had room takes its slot back
    assignment.save(update_fields=["completed_at", "released"])
    return None


def _judgement_store(assignment: Assignment, choices: Mapping[str, str], rationale: str, now: datetime) -> Judgement:
    """The judgement of a completed assignment and one choice per criterion (two INSERTs)."""
    campaign = assignment.comparison.campaign
    judgement = Judgement.objects.create(
        assignment=assignment,
        comparison_id=assignment.comparison_id,
        annotator_id=assignment.annotator_id,
        rationale=rationale.strip()[:5000],
        time_on_task_ms=max(0, int((now - assignment.created_at).total_seconds() * 1000)),
        # The guidelines as the campaign row read for this submission had them (no query of its own).
        guideline_version_id=campaign.guidelines_version_id,
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
    return judgement


def _counters_add(comparison_id: int, overall: str, *, left_is_a: bool) -> None:
    """One judgement more on the comparison's counters, in one UPDATE of columns no index holds (a HOT update).

    Added to the stored values (F expressions), not re-counted: the row lock this UPDATE takes orders it after
    any other writer of the row, whose committed values it then adds to. The completed assignment was already
    live (its lease was open), so ``live_assignments`` stays as it is."""
    _counters_added.run(shape={"outcome": side_to_outcome(overall, left_is_a=left_is_a)}, comparison=comparison_id)


@CompiledUpdate
def _counters_added(*, comparison: int, outcome: Outcome) -> tuple[QuerySet[Comparison], dict[str, Combinable]]:
    changes: dict[str, Combinable] = {"judgement_count": F("judgement_count") + 1}
    if outcome != Outcome.TIE:  # a decisive vote: its side's count and the margin change
        winner = "votes_a" if outcome == Outcome.A else "votes_b"
        changes[winner] = F(winner) + 1
        votes = {"votes_a": F("votes_a"), "votes_b": F("votes_b"), winner: changes[winner]}
        changes["vote_margin"] = _margin_of(votes["votes_a"], votes["votes_b"])
    return Comparison.objects.filter(pk=comparison), changes


def _margin_of(votes_a: Combinable, votes_b: Combinable) -> Combinable:
    """|a − b| / (a + b) in SQL, for a and b of which at least one is positive."""
    difference = Func(votes_a - votes_b, function="ABS", output_field=FloatField())
    return Cast(difference, FloatField()) / Cast(votes_a + votes_b, FloatField())


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
    if not campaign_is_qualified(campaign_id=campaign.pk, annotator=annotator):
        raise ServiceError(
            f"“{campaign.name}” asks you to pass its qualification first, so your choices for this pair were not "
            "stored."
        )


def _check_choices(choices: Mapping[str, str], slugs: list[str], *, allow_both_bad: bool = False) -> None:
    problem = _choices_problem(choices, slugs, allow_both_bad=allow_both_bad)
    if problem is not None:
        raise ServiceError(problem)


def _choices_problem(choices: Mapping[str, str], slugs: list[str], *, allow_both_bad: bool = False) -> str | None:
    """What is wrong with `choices` for criteria `slugs`, in words; None when nothing is."""
    missing = [slug for slug in slugs if slug not in choices]
    if missing:
        return f"Choose left, right or tie for: {', '.join(missing)}."
    unknown = sorted(set(choices) - set(slugs))
    if unknown:
        return f"Unknown criteria: {', '.join(unknown)}."
    sides = (*SIDES, BOTH_BAD) if allow_both_bad else SIDES
    bad = [slug for slug in slugs if choices[slug] not in sides]
    if bad:
        allowed = "left, right, tie or both bad" if allow_both_bad else "left, right or tie"
        return f"Choices must be {allowed}; got something else for: {', '.join(bad)}."
    return None


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
    """Re-count the counters of one comparison from its rows, under its row lock (the engine's rare paths: a
    late submission, a skip, a release)."""
    _lock(comparison_id)
    votes = CriterionChoice.objects.filter(judgement__comparison_id=comparison_id, criterion=OVERALL).aggregate(
        a=Count("pk", filter=Q(outcome=Outcome.A)), b=Count("pk", filter=Q(outcome=Outcome.B))
    )
    live = _live_count(comparison_id, now)
    Comparison.objects.filter(pk=comparison_id).update(
        live_assignments=live,
        claimable=LessThan(Value(live), _overlap()),
        judgement_count=Judgement.objects.filter(comparison_id=comparison_id).count(),
        votes_a=votes["a"],
        votes_b=votes["b"],
        vote_margin=_margin(votes["a"], votes["b"]),
    )


def comparison_counters_refresh(*, comparison_ids: Iterable[int], now: datetime | None = None) -> int:
    """Re-count the counters of many comparisons at once, for rows written outside the engine (imports).

    Four reads and one bulk update, whatever the number of comparisons.
    """
    now = now or timezone.now()
    ids = list(set(comparison_ids))
    live = dict(
        Assignment.objects.filter(comparison_id__in=ids)
        .filter(_live(now))
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
    overlaps = dict(Comparison.objects.filter(pk__in=ids).values_list("pk", "campaign__overlap"))
    comparisons = []
    for pk, overlap in overlaps.items():
        wins_a, wins_b = votes.get(pk, (0, 0))
        comparisons.append(
            Comparison(
                pk=pk,
                live_assignments=live.get(pk, 0),
                claimable=live.get(pk, 0) < overlap,
                judgement_count=judged.get(pk, 0),
                votes_a=wins_a,
                votes_b=wins_b,
                vote_margin=_margin(wins_a, wins_b),
            )
        )
    Comparison.objects.bulk_update(
        comparisons,
        ["live_assignments", "claimable", "judgement_count", "votes_a", "votes_b", "vote_margin"],
        batch_size=2000,
    )
    return len(comparisons)


def comparison_claimable_refresh(*, campaign: Campaign) -> int:
    """Set the claim index's ``claimable`` flag of every comparison of `campaign` from its counter and the
    campaign's overlap (one UPDATE): to be run when the overlap changes; returns how many rows changed."""
    room = LessThan(F("live_assignments"), campaign.overlap)
    return Comparison.objects.filter(campaign=campaign).exclude(claimable=room).update(claimable=room)


def _overlap() -> Subquery:
    """The overlap of the comparison's campaign, for an UPDATE of comparisons."""
    return Subquery(Campaign.objects.filter(pk=OuterRef("campaign_id")).values("overlap")[:1])


def _live_set(comparison_id: int, live: int) -> None:
    Comparison.objects.filter(pk=comparison_id).update(
        live_assignments=live, claimable=LessThan(Value(live), _overlap())
    )


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
