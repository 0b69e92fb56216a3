"""The assignment engine under real concurrency: real threads, one PostgreSQL connection each, real commits."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection, connections
from django.db.models import Count

from evaluator.errors import ServiceError
from evaluator.models import Assignment, CampaignState, CriterionChoice, Judgement
from evaluator.services.campaigns import campaign_state_change
from evaluator.services.rating import assignment_next, judgement_submit
from tests import factories

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL (SQLite serializes)"),
]


def all_sides(campaign, side: str) -> dict[str, str]:
    return {slug: side for slug in campaign.criterion_slugs}


def run_in_threads(targets: list[Callable[[], Any]]) -> list[Any]:
    """Start every target at once (behind a barrier), each on its own thread and DB connection; return results."""
    barrier = threading.Barrier(len(targets))
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def run(index: int, target: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = target()
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, target)) for i, target in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def test_fifty_annotators_at_once_never_push_a_comparison_past_k_nor_judge_one_twice() -> None:
    campaign = factories.campaign(overlap=3)
    comparisons = [factories.comparison(campaign) for _ in range(10)]
    annotators = [factories.user(f"crowd{i}", "annotator") for i in range(50)]

    def work(annotator) -> Callable[[], list[int]]:
        def claim_and_judge() -> list[int]:
            stored = []
            while (task := assignment_next(annotator=annotator)) is not None:
                judgement = judgement_submit(
                    token=str(task.token), annotator=annotator, choices=all_sides(campaign, "left")
                )
                stored.append(judgement.pk)
            return stored

        return claim_and_judge

    submitted = [pk for stored in run_in_threads([work(annotator) for annotator in annotators]) for pk in stored]

    assert len(submitted) == len(set(submitted)) == Judgement.objects.count() == 10 * 3  # each stored exactly once
    per_comparison = dict(Judgement.objects.values_list("comparison").annotate(n=Count("pk")))
    assert per_comparison == {comparison.pk: 3 for comparison in comparisons}
    assert Assignment.objects.count() == 30
    assert not Judgement.objects.values("comparison", "annotator").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert CriterionChoice.objects.count() == 30 * len(campaign.criterion_slugs)
    for comparison in comparisons:
        comparison.refresh_from_db()
        assert (comparison.live_assignments, comparison.judgement_count) == (3, 3)


def test_two_simultaneous_submissions_of_one_token_store_one_judgement(annotator) -> None:
    campaign = factories.campaign()
    factories.comparison(campaign)
    task = assignment_next(annotator=annotator)

    def submit(side: str) -> Callable[[], int]:
        return lambda: (
            judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(campaign, side)).pk
        )

    first, second = run_in_threads([submit("left"), submit("right")])
    assert first == second
    assert Judgement.objects.count() == 1
    assert CriterionChoice.objects.count() == len(campaign.criterion_slugs)
    assert len(set(CriterionChoice.objects.values_list("outcome", flat=True))) == 1


def test_one_annotator_claiming_from_two_tabs_at_once_gets_one_assignment(annotator) -> None:
    campaign = factories.campaign(overlap=1, quota_per_annotator=1)
    for _ in range(5):
        factories.comparison(campaign)
    first, second = run_in_threads([lambda: assignment_next(annotator=annotator)] * 2)
    assert first.pk == second.pk
    assert Assignment.objects.count() == 1


def test_a_quota_holds_when_many_annotators_race_for_few_comparisons() -> None:
    campaign = factories.campaign(overlap=2, quota_per_annotator=1)
    for _ in range(3):
        factories.comparison(campaign)
    annotators = [factories.user(f"racer{i}", "annotator") for i in range(12)]
    claims = run_in_threads(
        [lambda annotator=annotator: assignment_next(annotator=annotator) for annotator in annotators]
    )
    assert sum(claim is not None for claim in claims) == 6  # 3 comparisons × k = 2
    assert not Assignment.objects.values("comparison").annotate(n=Count("pk")).filter(n__gt=2).exists()
    assert not Assignment.objects.values("annotator").annotate(n=Count("pk")).filter(n__gt=1).exists()


def test_concurrent_claims_across_campaigns_serve_only_assigned_active_ones_by_priority() -> None:
    team = Group.objects.create(name="team-rag")
    urgent = factories.campaign(name="Urgent", priority=10, overlap=2, members=("team-rag",))
    common = factories.campaign(name="Common", priority=1, overlap=2)  # every annotator
    unassigned = factories.campaign(name="Unassigned", priority=99, members=())
    paused = factories.campaign(name="Paused", priority=50, state="paused")
    drafted = factories.campaign(name="Drafted", priority=50, state="draft")
    for campaign in (urgent, common, unassigned, paused, drafted):
        for _ in range(4):
            factories.comparison(campaign)
    annotators = [factories.user(f"worker{i}", "annotator") for i in range(16)]
    for annotator in annotators[:8]:
        annotator.groups.add(team)

    def work(annotator) -> Callable[[], list[str]]:
        def claim_and_judge() -> list[str]:
            served = []
            while (task := assignment_next(annotator=annotator)) is not None:
                campaign = task.comparison.campaign
                judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(campaign, "left"))
                served.append(campaign.name)
            return served

        return claim_and_judge

    served = run_in_threads([work(annotator) for annotator in annotators])

    names = {name for sequence in served for name in sequence}
    assert names == {"Urgent", "Common"}  # never an unassigned, paused or draft campaign
    assert not Assignment.objects.filter(comparison__campaign__in=[unassigned, paused, drafted]).exists()
    # Only the team rated the urgent campaign, and each of its comparisons got its k judgements; so did Common's.
    # (Priority order itself is shown without threads in test_campaign_lifecycle.py: under load a claim may pass
    # over a higher campaign whose free slots are all row-locked by other claims at that instant.)
    assert set(Judgement.objects.filter(comparison__campaign=urgent).values_list("annotator", flat=True)) <= {
        annotator.pk for annotator in annotators[:8]
    }
    per_comparison = Judgement.objects.values("comparison__campaign__name", "comparison").annotate(n=Count("pk"))
    assert {(row["comparison__campaign__name"], row["n"]) for row in per_comparison} == {("Urgent", 2), ("Common", 2)}
    assert Judgement.objects.count() == 16 and Assignment.objects.count() == 16


def test_a_pause_racing_many_submissions_leaves_each_judgement_whole_or_absent() -> None:
    campaign = factories.campaign(name="Raced", overlap=1)
    for _ in range(12):
        factories.comparison(campaign)
    annotators = [factories.user(f"mid{i}", "annotator") for i in range(12)]
    tasks = [assignment_next(annotator=annotator) for annotator in annotators]  # everyone mid-pair

    def submit(annotator, task) -> Callable[[], str]:
        def attempt() -> str:
            try:
                judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(campaign, "right"))
            except ServiceError as error:
                return str(error)
            return "stored"

        return attempt

    def pause() -> str:
        campaign_state_change(campaign=campaign, state=CampaignState.PAUSED)
        return "paused"

    results = run_in_threads([pause] + [submit(a, t) for a, t in zip(annotators, tasks, strict=True)])

    refused = [text for text in results[1:] if text != "stored"]
    expected = "“Raced” was paused while you rated this pair, so your choices were not stored."
    assert set(refused) <= {expected}, refused
    stored = len(results) - 1 - len(refused)
    assert Judgement.objects.count() == stored
    assert Assignment.objects.filter(completed_at__isnull=False).count() == stored
    assert CriterionChoice.objects.count() == stored * len(campaign.criterion_slugs)  # nothing half-stored
    for task, result in zip(tasks, results[1:], strict=True):
        task.refresh_from_db()
        assert (task.completed_at is not None) == (result == "stored")
    # After the pause nothing is served, the open leases included.
    assert all(assignment_next(annotator=annotator) is None for annotator in annotators)
