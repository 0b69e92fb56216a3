"""Review decisions on flagged answers and skipped pairs, and adjudicated outcomes of disputed comparisons."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("evaluator", "0017_variant_archive"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations: list[migrations.operations.base.Operation] = [
        migrations.CreateModel(
            name="ReviewResolution",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(choices=[("resolved", "Resolved"), ("dismissed", "Dismissed")], max_length=9),
                ),
                ("note", models.CharField(max_length=1000)),
                ("resolved_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "answer_flag",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="resolution",
                        to="evaluator.answerflag",
                    ),
                ),
                (
                    "resolved_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
                (
                    "skipped_assignment",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="skip_resolution",
                        to="evaluator.assignment",
                    ),
                ),
            ],
            options={
                "ordering": ["-resolved_at", "-id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("answer_flag__isnull", False), ("skipped_assignment__isnull", True)),
                            models.Q(("answer_flag__isnull", True), ("skipped_assignment__isnull", False)),
                            _connector="OR",
                        ),
                        name="reviewresolution_one_item",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("status__in", ["resolved", "dismissed"])),
                        name="reviewresolution_status_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("note", ""), _negated=True), name="reviewresolution_says_why"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Adjudication",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("criterion", models.CharField(max_length=64)),
                (
                    "outcome",
                    models.CharField(choices=[("a", "Variant a"), ("b", "Variant b"), ("tie", "Tie")], max_length=3),
                ),
                ("note", models.CharField(blank=True, max_length=2000)),
                ("decided_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "comparison",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="adjudications",
                        to="evaluator.comparison",
                    ),
                ),
                (
                    "decided_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
            options={
                "ordering": ["comparison_id", "criterion"],
                "constraints": [
                    models.UniqueConstraint(fields=("comparison", "criterion"), name="adjudication_once_per_criterion"),
                    models.CheckConstraint(
                        condition=models.Q(("outcome__in", ["a", "b", "tie"])), name="adjudication_outcome_valid"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("criterion", ""), _negated=True), name="adjudication_criterion_not_empty"
                    ),
                ],
            },
        ),
    ]
