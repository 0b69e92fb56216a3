"""The rating hot path: what one rating cycle costs in queries, and comparison updates PostgreSQL makes in place."""

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from evaluator.models import Assignment, Comparison, Judgement
from evaluator.services.campaigns import campaign_update
from evaluator.services.rating import assignment_next, judgement_submit
from tests import factories

HTMX = {"HTTP_HX_REQUEST": "true"}
# One rating cycle (an HTMX submission: store the judgement, claim the next pair, render it), in statements sent to
# the database: the session user with their roles (1: evaluator.roles.RolesBackend); the assignment the form is
# checked against (1); the submission: complete the assignment, insert the judgement and its choices, add to the
# comparison's counters and to the annotator's rated pairs (5); the claim: lock the annotator, read the served
# campaigns with their open lease and the annotator's rated pairs, lock and read the best candidate, take its slot,
# insert the lease (5). Besides them, the submission and the
# claim are one transaction each (BEGIN and COMMIT: 4 more round trips). Raise these only knowingly: every one of
# them runs for every judgement of every annotator.
QUERIES_PER_CYCLE = 12
TRANSACTION_CONTROL = 4


def all_sides(campaign, side: str) -> dict[str, str]:
    return {slug: side for slug in campaign.criterion_slugs}


@pytest.mark.django_db(transaction=True)
def test_one_rating_cycle_costs_twelve_queries(client, annotator, settings) -> None:
    # As deployed with CACHE_URL (prefloop/settings.py): sessions are read from the shared cache, written through
    # to the database. (Without a cache the session read is one more SELECT per request.)
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    campaign = factories.campaign(overlap=3)
    for i in range(6):
        factories.comparison(campaign, texts=(f"answer a{i}", f"answer b{i}"))
    client.force_login(annotator)
    client.get(reverse("rate"))
    first = Assignment.objects.get()

    with CaptureQueriesContext(connection) as queries:
        response = client.post(reverse("rate_submit", args=[first.token]), all_sides(campaign, "left"), **HTMX)

    assert response.status_code == 200
    second = Assignment.objects.exclude(pk=first.pk).get()
    assert str(second.token) in response.content.decode()
    assert "1 rated" in response.content.decode()
    assert Judgement.objects.get().assignment == first
    sent = [query["sql"] for query in queries.captured_queries]
    statements = [sql for sql in sent if sql.split()[0] not in ("BEGIN", "COMMIT")]
    listing = "\n".join(sql[:160] for sql in sent)
    assert len(statements) == QUERIES_PER_CYCLE, listing
    assert len(sent) - len(statements) == TRANSACTION_CONTROL, listing


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="HOT updates and table statistics are PostgreSQL's")
def test_claims_and_submissions_update_comparisons_in_place() -> None:
    campaign = factories.campaign(overlap=4)
    for i in range(6):
        factories.comparison(campaign, texts=(f"answer a{i}", f"answer b{i}"))
    annotators = [factories.user(f"rater{i}", "annotator") for i in range(4)]
    before = _comparison_updates()

    cycles = 0
    for _ in range(6):
        for annotator in annotators:
            assignment = assignment_next(annotator=annotator)
            assert assignment is not None
            judgement_submit(token=str(assignment.token), annotator=annotator, choices=all_sides(campaign, "left"))
            cycles += 1

    updated, hot = (after - earlier for after, earlier in zip(_comparison_updates(), before, strict=True))
    full = Comparison.objects.filter(claimable=False).count()
    assert cycles == 24 and full == 6
    # Every claim and submission updates its comparison once; only the claim that takes the last slot changes an
    # indexed column (claimable): every other update is HOT.
    assert updated == 2 * cycles
    assert hot == updated - full, f"{hot} of {updated} updates were HOT"
    assert hot / updated >= 0.85


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="storage parameters are PostgreSQL's")
def test_the_comparison_table_keeps_room_for_updates_in_place_and_vacuums_early() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'evaluator_comparison'")
        options = set(cursor.fetchone()[0])
    assert {"fillfactor=80", "autovacuum_vacuum_scale_factor=0.02"} <= options


@pytest.mark.django_db
def test_a_raised_overlap_makes_full_comparisons_claimable_again(annotator, second_annotator) -> None:
    campaign = factories.campaign(overlap=1)
    comparison = factories.comparison(campaign)
    first = assignment_next(annotator=annotator)
    judgement_submit(token=str(first.token), annotator=annotator, choices=all_sides(campaign, "left"))
    assert assignment_next(annotator=second_annotator) is None
    assert not Comparison.objects.get(pk=comparison.pk).claimable

    campaign_update(campaign=campaign, overlap=2)

    assert assignment_next(annotator=second_annotator).comparison_id == comparison.pk


@pytest.mark.django_db
def test_the_counters_follow_each_judgement_and_a_late_one(annotator, second_annotator) -> None:
    campaign = factories.campaign(overlap=3)
    comparison = factories.comparison(campaign)
    now = timezone.now()
    on_time = assignment_next(annotator=annotator, now=now)
    late = assignment_next(annotator=second_annotator, now=now)
    judgement_submit(token=str(on_time.token), annotator=annotator, choices=all_sides(campaign, "left"), now=now)
    later = now + timedelta(minutes=30)  # past the lease: re-counted under the lock, with room left
    judgement_submit(token=str(late.token), annotator=second_annotator, choices=all_sides(campaign, "left"), now=later)

    comparison.refresh_from_db()
    # "left" is side a where a was shown on the left.
    wins_a = sum(assignment.left_is_a for assignment in (on_time, late))
    assert (comparison.live_assignments, comparison.judgement_count, comparison.claimable) == (2, 2, True)
    assert (comparison.votes_a, comparison.votes_b) == (wins_a, 2 - wins_a)
    assert comparison.vote_margin == abs(2 * wins_a - 2) / 2


def _comparison_updates() -> tuple[int, int]:
    """(n_tup_upd, n_tup_hot_upd) of the comparison table, this backend's pending counts flushed first."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # flushed when this statement's transaction ends
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'evaluator_comparison'"
        )
        return cursor.fetchone()


@pytest.mark.django_db
def test_the_migration_fills_the_vote_counts_and_the_claimable_flag_from_the_stored_rows(
    annotator, second_annotator
) -> None:
    from django.apps import apps

    fill = importlib.import_module("evaluator.migrations.0016_comparison_hot_updates").counters_fill
    campaign = factories.campaign(overlap=2)
    comparison = factories.comparison(campaign)
    for judge in (annotator, second_annotator):
        assignment = assignment_next(annotator=judge)
        judgement_submit(token=str(assignment.token), annotator=judge, choices=all_sides(campaign, "left"))
    expected = Comparison.objects.values_list("votes_a", "votes_b", "vote_margin", "claimable").get(pk=comparison.pk)
    Comparison.objects.update(votes_a=0, votes_b=0, claimable=True)  # as before the migration

    fill(apps, None)

    assert Comparison.objects.values_list("votes_a", "votes_b", "vote_margin", "claimable").get() == expected
    assert expected[0] + expected[1] == 2 and expected[3] is False
