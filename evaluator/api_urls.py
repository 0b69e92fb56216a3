from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from evaluator.views import api

urlpatterns = [
    path("campaigns/", api.CampaignList.as_view(), name="api_campaigns"),
    path("campaigns/<int:campaign_id>/statistics/", api.CampaignStatistics.as_view(), name="api_statistics"),
    path(
        "campaigns/<int:campaign_id>/judgements.<str:file_format>",
        api.JudgementsDownload.as_view(),
        name="api_judgements",
    ),
    path(
        "campaigns/<int:campaign_id>/statistics.<str:file_format>",
        api.StatisticsDownload.as_view(),
        name="api_statistics_download",
    ),
    path("campaigns/<int:campaign_id>/dpo.jsonl", api.DPODatasetDownload.as_view(), name="api_dpo"),
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
]
