from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("evaluator", "0016_comparison_hot_updates"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelvariant",
            name="archived_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
