"""Comparison updates that PostgreSQL can make in place (HOT): no index holds a counter any more (the claim's
index is on rank_key among `claimable` comparisons, a flag that flips once per k claims), vote counts are stored
so that a submission adds to them in one UPDATE, and each page keeps free room (fillfactor), with autovacuum
settings of the table's own (docs/deployment.md, "Autovacuum on the rating tables")."""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.db.models.lookups import LessThan

# Storage parameters of the two tables the rating loop writes on every judgement. fillfactor applies to pages
# written from now on; VACUUM FULL (or pg_repack) rewrites an existing table with it.
STORAGE = {
    "evaluator_comparison": (
        "fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 500, "
        "autovacuum_analyze_scale_factor = 0.05"
    ),
    "evaluator_assignment": "autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05",
}
RESET = {
    "evaluator_comparison": (
        "fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor"
    ),
    "evaluator_assignment": "autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor",
}


def counters_fill(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Comparison = apps.get_model("evaluator", "Comparison")
    CriterionChoice = apps.get_model("evaluator", "CriterionChoice")

    def votes(outcome: str) -> Coalesce:
        counted = (
            CriterionChoice.objects.filter(
                judgement__comparison_id=OuterRef("pk"), criterion="overall", outcome=outcome
            )
            .order_by()
            .values("judgement__comparison_id")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))

    Comparison.objects.filter(judgement_count__gt=0).update(votes_a=votes("a"), votes_b=votes("b"))
    Campaign = apps.get_model("evaluator", "Campaign")
    overlap = Subquery(Campaign.objects.filter(pk=OuterRef("campaign_id")).values("overlap")[:1])
    Comparison.objects.filter(live_assignments__gt=0).update(claimable=LessThan(F("live_assignments"), overlap))


def storage_set(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":  # SQLite has no per-table storage parameters
        for table, parameters in STORAGE.items():
            schema_editor.execute(f"ALTER TABLE {table} SET ({parameters})")


def storage_reset(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for table, parameters in RESET.items():
            schema_editor.execute(f"ALTER TABLE {table} RESET ({parameters})")


class Migration(migrations.Migration):
    dependencies = [
        ("evaluator", "0015_job_queued_at_optional"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="comparison", name="comparison_active_idx"),
        migrations.RemoveIndex(model_name="comparison", name="comparison_pool_idx"),
        migrations.RemoveIndex(model_name="comparison", name="comparison_gold_pool_idx"),
        migrations.AddField(
            model_name="comparison",
            name="claimable",
            field=models.BooleanField(db_default=True, default=True),
        ),
        migrations.AddField(
            model_name="comparison",
            name="votes_a",
            field=models.PositiveIntegerField(db_default=0, default=0, help_text="Overall votes for side a."),
        ),
        migrations.AddField(
            model_name="comparison",
            name="votes_b",
            field=models.PositiveIntegerField(db_default=0, default=0, help_text="Overall votes for side b."),
        ),
        migrations.RunPython(counters_fill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="comparison",
            index=models.Index(
                condition=models.Q(("claimable", True), ("gold_outcome__isnull", True)),
                fields=["campaign", "rank_key"],
                name="comparison_claim_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="comparison",
            index=models.Index(
                condition=models.Q(("claimable", True), ("gold_outcome__isnull", False)),
                fields=["campaign", "rank_key"],
                name="comparison_gold_claim_idx",
            ),
        ),
        migrations.RunPython(storage_set, storage_reset),
    ]
