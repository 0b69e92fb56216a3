"""A campaign's selection judge and judge screening; each pair's outcome by that judge, and the screened claim index.

The new column `judge_outcome` is written only when a judge's verdicts are stored or the campaign's judge changes,
never by a claim or a submission: the index whose condition reads it leaves the rating loop's updates HOT
(migration 0016)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("evaluator", "0021_judges"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="selection_judge",
            field=models.ForeignKey(
                blank=True,
                help_text="Its verdicts steer which pairs are served (active selection, screening).",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="evaluator.judge",
            ),
        ),
        migrations.AddField(
            model_name="campaign",
            name="judge_screening",
            field=models.BooleanField(
                default=False,
                help_text="Serve only the pairs the selection judge found close (split across orders, or a tie).",
            ),
        ),
        migrations.AddField(
            model_name="comparison",
            name="judge_outcome",
            field=models.CharField(blank=True, max_length=6, null=True),
        ),
        migrations.AddConstraint(
            model_name="campaign",
            constraint=models.CheckConstraint(
                condition=models.Q(("judge_screening", False), ("selection_judge__isnull", False), _connector="OR"),
                name="campaign_screening_has_judge",
            ),
        ),
        migrations.AddConstraint(
            model_name="comparison",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("judge_outcome__isnull", True),
                    ("judge_outcome__in", ["a", "b", "tie", "split", "unread"]),
                    _connector="OR",
                ),
                name="comparison_judge_outcome_valid",
            ),
        ),
        migrations.AddIndex(
            model_name="comparison",
            index=models.Index(
                condition=models.Q(
                    ("claimable", True),
                    ("gold_outcome__isnull", True),
                    ("judge_outcome__in", ("tie", "split", "unread")),
                ),
                fields=["campaign", "rank_key"],
                name="comparison_screened_claim_idx",
            ),
        ),
    ]
