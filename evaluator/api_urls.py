from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from evaluator import api

urlpatterns = [
    path("campaigns/", api.CampaignList.as_view(), name="api_campaigns"),
    path("campaigns/<int:campaign_id>/statistics/", api.CampaignStatistics.as_view(), name="api_statistics"),
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
]
