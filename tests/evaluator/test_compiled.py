"""Statements compiled once and run again with new values (evaluator/compiled.py): the same rows as the queryset
they come from, one compilation per shape, and a clear refusal of a builder whose SQL would replay a stale value."""

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db.models import Count, F, OuterRef, QuerySet, Subquery
from django.utils import timezone

from evaluator.compiled import SHAPES_KEPT, Compiled, CompiledUpdate
from evaluator.models import Assignment, Comparison
from tests import factories

pytestmark = pytest.mark.django_db


def _pairs(*, campaign: int, after: datetime, first: bool) -> QuerySet[Comparison]:
    """Comparisons of a campaign made after a time, with their prompt, and how many assignments each has."""
    assigned = Assignment.objects.filter(comparison=OuterRef("pk")).order_by().values("comparison")
    counted = assigned.annotate(n=Count("pk")).values("n")
    pairs = (
        Comparison.objects.filter(campaign=campaign, created_at__gt=after)
        .select_related("prompt", "candidate_a")
        .annotate(assigned=Subquery(counted))
        .order_by("pk")
    )
    return pairs[:1] if first else pairs


def _rows(comparisons: list[Comparison]) -> list[tuple[Any, ...]]:
    return [(c.pk, c.prompt.text, c.candidate_a.text, c.assigned, c.created_at) for c in comparisons]


def test_a_compiled_query_reads_what_its_queryset_reads_whatever_the_values(annotator) -> None:
    compiled = Compiled(_pairs)
    campaigns = [factories.campaign(name=f"Study {i}") for i in range(2)]
    made = [factories.comparison(campaign) for campaign in campaigns for _ in range(3)]
    factories.assignment(made[1], annotator)
    start = timezone.now() - timedelta(days=1)

    for campaign in campaigns:
        for after in (start, made[1].created_at, timezone.now()):
            for first in (True, False):
                values = {"campaign": campaign.pk, "after": after}
                expected = _rows(list(_pairs(**values, first=first)))
                assert _rows(compiled.fetch(shape={"first": first}, **values)) == expected
    assert _rows(compiled.fetch(shape={"first": False}, campaign=campaigns[0].pk, after=start))[1][3] == 1


def test_a_statement_is_built_and_compiled_once_per_shape() -> None:
    built: list[bool] = []

    def pairs(*, campaign: int, after: datetime, first: bool) -> QuerySet[Comparison]:
        built.append(first)
        return _pairs(campaign=campaign, after=after, first=first)

    compiled = Compiled(pairs)
    campaign = factories.campaign()
    for _ in range(5):
        compiled.fetch(shape={"first": True}, campaign=campaign.pk, after=timezone.now())
    once = len(built)
    for _ in range(5):
        compiled.fetch(shape={"first": True}, campaign=campaign.pk + 1, after=timezone.now())
    assert len(built) == once  # the first shape: built for its model and compiled twice, then only replayed
    compiled.fetch(shape={"first": False}, campaign=campaign.pk, after=timezone.now())
    assert len(built) == once + 2 and built[-1] is False


def test_only_the_most_recent_shapes_are_kept() -> None:
    built: list[int] = []

    def pairs(*, campaign: int, limit: int) -> QuerySet[Comparison]:
        built.append(limit)
        return Comparison.objects.filter(campaign=campaign).order_by("pk")[:limit]

    compiled = Compiled(pairs)
    for limit in range(1, SHAPES_KEPT + 2):
        compiled.fetch(shape={"limit": limit}, campaign=1)
    built.clear()
    compiled.fetch(shape={"limit": SHAPES_KEPT + 1}, campaign=1)
    assert built == []  # kept
    compiled.fetch(shape={"limit": 1}, campaign=1)
    assert built == [1, 1]  # the oldest went first: compiled again


def test_an_update_is_replayed_with_its_values_and_says_how_many_rows_it_changed(annotator) -> None:
    def taken(*, comparison: int, overlap: int) -> tuple[QuerySet[Comparison], dict[str, Any]]:
        # live_assignments is a small integer field: psycopg is handed its values wrapped (Int2).
        room = Comparison.objects.filter(pk=comparison, live_assignments__lt=overlap)
        return room, {"live_assignments": F("live_assignments") + 1}

    compiled = CompiledUpdate(taken)
    campaign = factories.campaign()
    pair, other = factories.comparison(campaign), factories.comparison(campaign)

    assert [compiled.run(comparison=pair.pk, overlap=2) for _ in range(3)] == [1, 1, 0]
    assert compiled.run(comparison=other.pk, overlap=1) == 1
    assert list(Comparison.objects.order_by("pk").values_list("live_assignments", flat=True)) == [2, 1]


def test_a_uuid_value_finds_its_row(annotator) -> None:
    def by_token(*, token: uuid.UUID) -> QuerySet[Assignment]:
        return Assignment.objects.filter(token=token).select_related("comparison__campaign")

    compiled = Compiled(by_token)
    campaign = factories.campaign(name="Tokens")
    leases = [factories.assignment(factories.comparison(campaign), annotator) for _ in range(2)]

    for lease in leases:
        (found,) = compiled.fetch(token=lease.token)
        assert found.pk == lease.pk and found.comparison.campaign.name == "Tokens"
    assert compiled.fetch(token=uuid.uuid4()) == []


def test_a_value_computed_inside_the_builder_is_refused_not_replayed_stale() -> None:
    def leased_before(*, now: datetime) -> QuerySet[Assignment]:
        return Assignment.objects.filter(lease_expires_at__lt=now + timedelta(minutes=20))

    with pytest.raises(ValueError, match="leased_before: a parameter is computed from the values"):
        Compiled(leased_before).fetch(now=timezone.now())


def test_a_value_used_in_the_sql_text_must_be_passed_as_the_shape() -> None:
    def first_ones(*, campaign: int, size: int) -> QuerySet[Comparison]:
        return Comparison.objects.filter(campaign=campaign)[:size]

    with pytest.raises(ValueError, match="first_ones: the SQL changes with the values; pass what changes it in"):
        Compiled(first_ones).fetch(campaign=1, size=16)


def test_a_value_the_statement_does_not_send_is_refused() -> None:
    def ignoring(*, campaign: int, annotator: int) -> QuerySet[Comparison]:
        return Comparison.objects.filter(campaign=campaign)

    with pytest.raises(ValueError, match="ignoring: annotator are not parameters; pass them in `shape`"):
        Compiled(ignoring).fetch(campaign=1, annotator=2)


def test_a_flag_must_be_passed_as_the_shape() -> None:
    def gold(*, campaign: int, gold: bool) -> QuerySet[Comparison]:
        return Comparison.objects.filter(campaign=campaign, gold_outcome__isnull=not gold)

    with pytest.raises(TypeError, match="gold: a bool is no statement value; pass it in `shape`"):
        Compiled(gold).fetch(campaign=1, gold=True)
