"""Judges: models that rate pairs beside the people, their jobs, and their verdicts in both orders."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("evaluator", "0020_prompt_category"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Judge",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=120, unique=True)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("local", "Local model (run by a GPU worker)"),
                            ("endpoint", "OpenAI-compatible endpoint"),
                        ],
                        max_length=8,
                    ),
                ),
                (
                    "base_model",
                    models.CharField(blank=True, help_text="Hugging Face model id, folder or GGUF.", max_length=500),
                ),
                ("adapter_path", models.CharField(blank=True, max_length=500)),
                (
                    "quantization",
                    models.CharField(
                        choices=[("none", "Full precision"), ("4bit", "4-bit NF4"), ("8bit", "8-bit")],
                        default="none",
                        max_length=8,
                    ),
                ),
                (
                    "batch_size",
                    models.PositiveSmallIntegerField(default=8, help_text="Prompts a local model answers at once."),
                ),
                (
                    "base_url",
                    models.CharField(
                        blank=True, help_text="Up to /v1, e.g. https://api.example.com/v1", max_length=500
                    ),
                ),
                ("model_name", models.CharField(blank=True, max_length=200)),
                (
                    "api_key_env",
                    models.CharField(blank=True, help_text="The environment variable holding the key.", max_length=100),
                ),
                ("timeout_seconds", models.FloatField(default=60.0)),
                ("max_retries", models.PositiveSmallIntegerField(default=2)),
                ("concurrency", models.PositiveSmallIntegerField(default=4, help_text="Requests in flight at once.")),
                ("max_new_tokens", models.PositiveIntegerField(default=256)),
                ("templates", models.JSONField(blank=True, default=dict)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.CreateModel(
            name="JudgeJob",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("succeeded", "Succeeded"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="queued",
                        max_length=16,
                    ),
                ),
                ("error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "worker",
                    models.CharField(
                        blank=True, help_text="The process (host:pid) that took the job last.", max_length=200
                    ),
                ),
                ("claim", models.UUIDField(blank=True, editable=False, null=True)),
                ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                (
                    "max_attempts",
                    models.PositiveSmallIntegerField(default=3, help_text="Starts allowed, redeliveries included."),
                ),
                ("queued_at", models.DateTimeField(blank=True, default=django.utils.timezone.now, null=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                ("criteria", models.JSONField(default=list, help_text="Criterion slugs judged, in order.")),
                ("total", models.PositiveIntegerField(default=0)),
                ("done", models.PositiveIntegerField(default=0)),
                (
                    "unparseable",
                    models.PositiveIntegerField(default=0, help_text="Stored verdicts whose reply named no side."),
                ),
                ("cancel_requested", models.BooleanField(default=False)),
                (
                    "campaign",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="judge_jobs", to="evaluator.campaign"
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "judge",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="jobs", to="evaluator.judge"
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="JudgeVerdict",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("criterion", models.CharField(max_length=64)),
                ("order", models.CharField(choices=[("ab", "a first"), ("ba", "b first")], max_length=2)),
                ("raw_output", models.TextField()),
                (
                    "choice",
                    models.CharField(
                        blank=True,
                        choices=[("left", "First answer"), ("right", "Second answer"), ("tie", "Tie")],
                        max_length=5,
                        null=True,
                    ),
                ),
                (
                    "parse_status",
                    models.CharField(
                        choices=[
                            ("ok", "Parsed"),
                            ("no_verdict", "No verdict line"),
                            ("ambiguous", "Verdict lines disagree"),
                        ],
                        max_length=10,
                    ),
                ),
                ("prompt_tokens", models.PositiveIntegerField(blank=True, null=True)),
                ("completion_tokens", models.PositiveIntegerField(blank=True, null=True)),
                ("latency_ms", models.PositiveIntegerField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "comparison",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="judge_verdicts",
                        to="evaluator.comparison",
                    ),
                ),
                (
                    "job",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="verdicts",
                        to="evaluator.judgejob",
                    ),
                ),
                (
                    "judge",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="verdicts", to="evaluator.judge"
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
            },
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("kind__in", ["local", "endpoint"])), name="judge_kind_valid"
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("kind", "endpoint"), models.Q(("base_model", ""), _negated=True), _connector="OR"),
                name="judge_local_has_base_model",
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("kind", "local"),
                    models.Q(models.Q(("base_url", ""), _negated=True), models.Q(("model_name", ""), _negated=True)),
                    _connector="OR",
                ),
                name="judge_endpoint_has_url_and_model",
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("api_key_env__regex", "^([A-Za-z_][A-Za-z0-9_]*)?$")), name="judge_key_env_name"
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("timeout_seconds__gt", 0), ("timeout_seconds__lte", 3600)),
                name="judge_timeout_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("max_retries__lte", 10)), name="judge_retries_capped"
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("concurrency__gte", 1), ("concurrency__lte", 64)), name="judge_concurrency_range"
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("batch_size__gte", 1), ("batch_size__lte", 256)), name="judge_batch_size_range"
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("max_new_tokens__gte", 1), ("max_new_tokens__lte", 8192)),
                name="judge_max_new_tokens_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="judge",
            constraint=models.CheckConstraint(
                condition=models.Q(("quantization__in", ["none", "4bit", "8bit"])), name="judge_quantization_valid"
            ),
        ),
        migrations.AddIndex(
            model_name="judgejob",
            index=models.Index(
                condition=models.Q(("status", "running")), fields=["heartbeat_at"], name="judgejob_running_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="judgejob",
            index=models.Index(
                condition=models.Q(("status", "queued")), fields=["sent_at"], name="judgejob_queued_idx"
            ),
        ),
        migrations.AddConstraint(
            model_name="judgejob",
            constraint=models.CheckConstraint(
                condition=models.Q(("status__in", ["queued", "running", "succeeded", "failed", "cancelled"])),
                name="judgejob_status_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="judgejob",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("finished_at__isnull", True), ("status__in", ("succeeded", "failed", "cancelled")), _connector="OR"
                ),
                name="judgejob_finished_only_when_done",
            ),
        ),
        migrations.AddConstraint(
            model_name="judgejob",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "failed"), _negated=True),
                    models.Q(("error", ""), _negated=True),
                    _connector="OR",
                ),
                name="judgejob_failed_says_why",
            ),
        ),
        migrations.AddConstraint(
            model_name="judgejob",
            constraint=models.CheckConstraint(
                condition=models.Q(("attempts__lte", models.F("max_attempts"))), name="judgejob_attempts_capped"
            ),
        ),
        migrations.AddConstraint(
            model_name="judgejob",
            constraint=models.CheckConstraint(
                condition=models.Q(("done__lte", models.F("total"))), name="judgejob_done_within_total"
            ),
        ),
        migrations.AddIndex(
            model_name="judgeverdict",
            index=models.Index(fields=["judge", "comparison"], name="judgeverdict_judge_pair_idx"),
        ),
        migrations.AddConstraint(
            model_name="judgeverdict",
            constraint=models.UniqueConstraint(
                fields=("judge", "comparison", "criterion", "order"), name="judgeverdict_once_per_order"
            ),
        ),
        migrations.AddConstraint(
            model_name="judgeverdict",
            constraint=models.CheckConstraint(
                condition=models.Q(("order__in", ["ab", "ba"])), name="judgeverdict_order_valid"
            ),
        ),
        migrations.AddConstraint(
            model_name="judgeverdict",
            constraint=models.CheckConstraint(
                condition=models.Q(("parse_status__in", ["ok", "no_verdict", "ambiguous"])),
                name="judgeverdict_status_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="judgeverdict",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("choice__in", ["left", "right", "tie"]), ("parse_status", "ok")),
                    models.Q(models.Q(("parse_status", "ok"), _negated=True), ("choice__isnull", True)),
                    _connector="OR",
                ),
                name="judgeverdict_choice_only_when_parsed",
            ),
        ),
        migrations.AddConstraint(
            model_name="judgeverdict",
            constraint=models.CheckConstraint(
                condition=models.Q(("criterion", ""), _negated=True), name="judgeverdict_criterion_not_empty"
            ),
        ),
    ]
