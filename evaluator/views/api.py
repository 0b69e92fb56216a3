"""REST API for researchers: campaigns, statistics and exports. Token or session authentication.

Get a token on the statistics page (or `manage.py drf_create_token USERNAME`), then:
`curl -H "Authorization: Token $TOKEN" http://127.0.0.1:8000/api/campaigns/`
"""

from typing import Any

from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluator.models import Campaign
from evaluator.selectors.campaigns import VoteFilters, campaign_list_with_counts, campaign_statistics_json
from evaluator.views.exports import dpo_download, judgements_download, summary_download


class CampaignSerializer(serializers.ModelSerializer[Campaign]):
    prompt_count = serializers.IntegerField(read_only=True)
    comparison_count = serializers.IntegerField(read_only=True)
    criteria = serializers.SerializerMethodField()

    class Meta:
        model = Campaign
        fields = ["id", "name", "description", "overlap", "criteria", "prompt_count", "comparison_count", "created_at"]

    def get_criteria(self, campaign: Campaign) -> list[str]:
        return campaign.criterion_slugs


class StatisticsQuery(serializers.Serializer[Any]):
    view = serializers.ChoiceField(choices=["judgement", "prompt"], default="judgement")
    annotator_group = serializers.CharField(required=False)
    since = serializers.DateField(required=False)
    until = serializers.DateField(required=False)
    exclude_flagged = serializers.BooleanField(default=False)
    include_gold = serializers.BooleanField(default=False)
    include_simulated = serializers.BooleanField(
        default=False, help_text="Count the judgements of scripted annotators (bench/loop.py) too."
    )
    adjudicated = serializers.BooleanField(
        default=False, help_text="Count researchers' adjudicated outcomes where a comparison has one."
    )
    guideline_version = serializers.IntegerField(
        required=False, min_value=1, help_text="Only judgements made under this version of the guidelines."
    )
    category = serializers.CharField(
        required=False, max_length=64, help_text="Only judgements of prompts tagged with this category."
    )
    exclude_outliers = serializers.BooleanField(
        default=False, help_text="Leave out annotators the leave-one-out likelihood test flags as outliers."
    )
    n_boot = serializers.IntegerField(default=1000, min_value=100, max_value=10_000)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError("since is after until")
        return data

    def vote_filters(self) -> VoteFilters:
        data = self.validated_data
        return VoteFilters(
            annotator_group=data.get("annotator_group"),
            since=data.get("since"),
            until=data.get("until"),
            exclude_flagged=data["exclude_flagged"],
            exclude_gold=not data["include_gold"],
            include_simulated=data["include_simulated"],
            adjudicated=data["adjudicated"],
            guideline_version=data.get("guideline_version"),
            category=data.get("category"),
            exclude_outliers=data["exclude_outliers"],
        )


class CampaignList(generics.ListAPIView[Campaign]):
    """Every campaign with its prompt and comparison counts."""

    serializer_class = CampaignSerializer

    def get_queryset(self) -> Any:
        return campaign_list_with_counts().order_by("pk")


class CampaignStatistics(APIView):
    """The campaign's statistics: pairwise table, leaderboard, agreement and position bias (docs/formats.md)."""

    @extend_schema(parameters=[StatisticsQuery], responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        query = StatisticsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = campaign_statistics_json(
            campaign=campaign,
            filters=query.vote_filters(),
            prompt_level=query.validated_data["view"] == "prompt",
            n_boot=query.validated_data["n_boot"],
        )
        return Response(report)


class _Download(APIView):
    """An export download behind the API's token authentication; the file is the web page's download."""

    download: Any = None

    def get(self, request: Request, **kwargs: Any) -> HttpResponseBase:
        # DRF has authenticated the token and set the user on the underlying request too.
        return type(self).download(request._request, **kwargs)


@extend_schema(parameters=[StatisticsQuery], responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
class JudgementsDownload(_Download):
    """Every judgement × criterion as CSV, JSONL or Parquet, streamed (docs/formats.md)."""

    download = staticmethod(judgements_download)


@extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
class StatisticsDownload(_Download):
    """The statistics as JSON, or one table (?table=pairs|leaderboard|agreement) as CSV."""

    download = staticmethod(summary_download)


@extend_schema(responses={(200, "application/jsonl"): OpenApiTypes.BINARY})
class DPODatasetDownload(_Download):
    """The DPO preference dataset in TRL's conversational format (?criterion=, ?min_agreement=)."""

    download = staticmethod(dpo_download)
