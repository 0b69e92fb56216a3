"""Each annotator's rated pairs per campaign (models.Participation), kept where assignments are completed: a
submission through the engine (services/rating.py) and a judgement import (services/imports.py); recounted where
completed assignments are deleted (the Django admin)."""

from collections.abc import Iterable, Mapping

from django.db import connection, transaction
from django.db.models import Count

from evaluator.models import Assignment, Participation


def participation_rated_add(*, campaign_id: int, annotator_id: int, rated: int = 1) -> None:
    """`rated` more pairs rated by the annotator in the campaign, in one statement: an upsert, so the first
    judgement creates the row and concurrent ones add up (the row lock orders them)."""
    participations_rated_add({(campaign_id, annotator_id): rated})


def participations_rated_add(rated: Mapping[tuple[int, int], int]) -> None:
    """More rated pairs for each (campaign id, annotator id), one upsert per row, in a fixed order (so two
    transactions adding to the same rows take their locks alike)."""
    table = connection.ops.quote_name(Participation._meta.db_table)
    # INSERT … ON CONFLICT … DO UPDATE: PostgreSQL and SQLite alike; the ORM has no upsert that adds.
    # The table name is the model's, quoted; the values are parameters.
    sql = (
        f"INSERT INTO {table} (campaign_id, annotator_id, rated) VALUES (%s, %s, %s) "  # noqa: S608
        f"ON CONFLICT (annotator_id, campaign_id) DO UPDATE SET rated = {table}.rated + excluded.rated"
    )
    rows = [(campaign_id, annotator_id, count) for (campaign_id, annotator_id), count in sorted(rated.items())]
    if rows:
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)


def participations_recount(*, campaign_ids: Iterable[int]) -> None:
    """The campaigns' rows set again from their completed assignments: after rows were deleted around the engine
    (a prompt or comparison deleted in the Django admin takes its assignments with it)."""
    ids = sorted(set(campaign_ids))
    counts = (
        Assignment.objects.filter(comparison__campaign_id__in=ids, completed_at__isnull=False)
        .values_list("comparison__campaign_id", "annotator_id")
        .annotate(rated=Count("pk"))
        .order_by()
    )
    with transaction.atomic():
        Participation.objects.filter(campaign_id__in=ids).delete()
        participations_rated_add({(campaign, annotator): rated for campaign, annotator, rated in counts})
