"""Export downloads; the project includes these under stats/<int:campaign_id>/export/."""

from django.urls import path

from evaluator import export_views

urlpatterns = [
    path("judgements.<str:file_format>", export_views.judgements_download, name="export_judgements"),
    path("statistics.<str:file_format>", export_views.summary_download, name="export_statistics"),
    path("dpo.jsonl", export_views.dpo_download, name="export_dpo"),
]
