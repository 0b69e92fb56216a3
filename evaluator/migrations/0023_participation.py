"""Participation: each annotator's rated pairs per campaign as a row, filled from the completed assignments."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import Count

BATCH = 5_000


def participations_fill(apps, schema_editor) -> None:
    """One row per (annotator, campaign) with completed assignments, counting them (as the engine will keep it)."""
    assignment = apps.get_model("evaluator", "Assignment")
    participation = apps.get_model("evaluator", "Participation")
    counts = (
        assignment.objects.filter(completed_at__isnull=False)
        .values("annotator_id", "comparison__campaign_id")
        .annotate(rated=Count("pk"))
        .order_by()
    )
    rows = [
        participation(annotator_id=row["annotator_id"], campaign_id=row["comparison__campaign_id"], rated=row["rated"])
        for row in counts.iterator()
    ]
    participation.objects.bulk_create(rows, batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [
        ("evaluator", "0022_judge_screening"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Participation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("rated", models.PositiveIntegerField(default=0)),
                (
                    "annotator",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="participations",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "campaign",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="participations",
                        to="evaluator.campaign",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("annotator", "campaign"), name="participation_once"),
                    models.CheckConstraint(
                        condition=models.Q(("rated__gte", 0)), name="participation_rated_not_negative"
                    ),
                ],
            },
        ),
        migrations.RunPython(participations_fill, migrations.RunPython.noop),
    ]
