"""Export downloads; the project includes these under stats/<int:campaign_id>/export/."""

from django.urls import path

from evaluator.views.exports import dpo_download, judgements_download, summary_download

urlpatterns = [
    path("judgements.<str:file_format>", judgements_download, name="export_judgements"),
    path("statistics.<str:file_format>", summary_download, name="export_statistics"),
    path("dpo.jsonl", dpo_download, name="export_dpo"),
]
