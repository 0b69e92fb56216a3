"""The newest lines of a training job's log on its row, so that the job page shows them from any machine."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("evaluator", "0023_participation"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingjob",
            name="log_tail",
            field=models.TextField(blank=True, default=""),
        ),
    ]
