import uuid

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.db.models import F, Q


def guidelines_version_one(apps, schema_editor):
    """Version 1 of every campaign's guidelines that has any, written by nobody known, as of the campaign's start;
    judgements made before versions existed keep no version (which one they saw is not known)."""
    Campaign = apps.get_model("evaluator", "Campaign")
    GuidelineVersion = apps.get_model("evaluator", "GuidelineVersion")
    for campaign in Campaign.objects.exclude(guidelines="").only("pk", "guidelines", "created_at"):
        version = GuidelineVersion.objects.create(
            campaign_id=campaign.pk, number=1, text=campaign.guidelines, created_at=campaign.created_at
        )
        Campaign.objects.filter(pk=campaign.pk).update(guidelines_version=version)


class Migration(migrations.Migration):
    dependencies = [
        ("evaluator", "0018_review_adjudication"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations: list[migrations.operations.base.Operation] = [
        migrations.CreateModel(
            name="GuidelineVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveIntegerField()),
                ("text", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "author",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "campaign",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="guideline_versions",
                        to="evaluator.campaign",
                    ),
                ),
            ],
            options={
                "ordering": ["campaign", "-number"],
                "constraints": [
                    models.UniqueConstraint(fields=("campaign", "number"), name="guidelineversion_number_once"),
                    models.CheckConstraint(condition=Q(number__gte=1), name="guidelineversion_number_positive"),
                ],
            },
        ),
        migrations.AddField(
            model_name="campaign",
            name="qualification_required",
            field=models.BooleanField(
                default=False, help_text="Annotators pass a qualification set of gold comparisons before rating."
            ),
        ),
        migrations.AddField(
            model_name="campaign",
            name="qualification_threshold",
            field=models.FloatField(
                default=0.8, help_text="Share of qualification items an attempt must get right to pass (0–1)."
            ),
        ),
        migrations.AddField(
            model_name="campaign",
            name="qualification_attempts",
            field=models.PositiveSmallIntegerField(default=2, help_text="Attempts each annotator gets."),
        ),
        migrations.AddField(
            model_name="campaign",
            name="guidelines_version",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="evaluator.guidelineversion",
            ),
        ),
        migrations.AddConstraint(
            model_name="campaign",
            constraint=models.CheckConstraint(
                condition=Q(qualification_threshold__gt=0, qualification_threshold__lte=1),
                name="campaign_qualification_threshold_share",
            ),
        ),
        migrations.AddConstraint(
            model_name="campaign",
            constraint=models.CheckConstraint(
                condition=Q(qualification_attempts__gte=1), name="campaign_qualification_attempts_positive"
            ),
        ),
        migrations.AddField(
            model_name="judgement",
            name="guideline_version",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.RESTRICT,
                related_name="judgements",
                to="evaluator.guidelineversion",
            ),
        ),
        migrations.CreateModel(
            name="QualificationItem",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "campaign",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="qualification_items",
                        to="evaluator.campaign",
                    ),
                ),
                (
                    "comparison",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="qualification_items",
                        to="evaluator.comparison",
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
                "constraints": [
                    models.UniqueConstraint(fields=("campaign", "comparison"), name="qualificationitem_once"),
                ],
            },
        ),
        migrations.CreateModel(
            name="QualificationAttempt",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveSmallIntegerField()),
                (
                    "allowed",
                    models.PositiveSmallIntegerField(help_text="Attempts the campaign allowed when this one started."),
                ),
                (
                    "threshold",
                    models.FloatField(help_text="Share right needed to pass, as the campaign said when it started."),
                ),
                ("total", models.PositiveSmallIntegerField(help_text="Items asked.")),
                ("correct", models.PositiveSmallIntegerField(default=0)),
                (
                    "passed",
                    models.BooleanField(blank=True, help_text="Empty while the attempt is under way.", null=True),
                ),
                ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "annotator",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="qualification_attempts",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "campaign",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="qualification_attempts_made",
                        to="evaluator.campaign",
                    ),
                ),
            ],
            options={
                "ordering": ["campaign", "annotator", "number"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("campaign", "annotator", "number"), name="qualificationattempt_number_once"
                    ),
                    models.CheckConstraint(
                        condition=Q(number__gte=1, number__lte=F("allowed")), name="qualificationattempt_within_limit"
                    ),
                    models.CheckConstraint(condition=Q(total__gte=1), name="qualificationattempt_asks_something"),
                    models.CheckConstraint(
                        condition=Q(correct__lte=F("total")), name="qualificationattempt_correct_capped"
                    ),
                    models.CheckConstraint(
                        condition=Q(finished_at__isnull=True, passed__isnull=True)
                        | Q(finished_at__isnull=False, passed__isnull=False),
                        name="qualificationattempt_result_when_finished",
                    ),
                    models.UniqueConstraint(
                        condition=Q(finished_at__isnull=True),
                        fields=("campaign", "annotator"),
                        name="qualificationattempt_one_open",
                    ),
                    models.UniqueConstraint(
                        condition=Q(passed=True), fields=("campaign", "annotator"), name="qualificationattempt_one_pass"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="QualificationAnswer",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("token", models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ("position", models.PositiveSmallIntegerField()),
                ("left_is_a", models.BooleanField()),
                (
                    "outcome",
                    models.CharField(
                        blank=True,
                        choices=[("a", "Variant a"), ("b", "Variant b"), ("tie", "Tie")],
                        max_length=3,
                    ),
                ),
                ("correct", models.BooleanField(blank=True, null=True)),
                ("answered_at", models.DateTimeField(blank=True, null=True)),
                (
                    "attempt",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="answers",
                        to="evaluator.qualificationattempt",
                    ),
                ),
                (
                    "comparison",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="qualification_answers",
                        to="evaluator.comparison",
                    ),
                ),
            ],
            options={
                "ordering": ["attempt", "position"],
                "constraints": [
                    models.UniqueConstraint(fields=("attempt", "comparison"), name="qualificationanswer_item_once"),
                    models.UniqueConstraint(fields=("attempt", "position"), name="qualificationanswer_position_once"),
                    models.CheckConstraint(
                        condition=Q(answered_at__isnull=True, outcome="", correct__isnull=True)
                        | Q(answered_at__isnull=False, outcome__in=["a", "b", "tie"], correct__isnull=False),
                        name="qualificationanswer_complete_when_answered",
                    ),
                ],
            },
        ),
        migrations.RunPython(guidelines_version_one, migrations.RunPython.noop),
    ]
