from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("evaluator", "0019_qualification_guidelines")]

    operations: list[migrations.operations.base.Operation] = [
        migrations.AddField(
            model_name="prompt",
            name="category",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddIndex(
            model_name="prompt",
            index=models.Index(fields=["campaign", "category"], name="prompt_campaign_category"),
        ),
    ]
