"""Reads about a campaign's versioned guidelines."""

from django.db.models import Count, QuerySet

from evaluator.models import Campaign, GuidelineVersion


def guideline_versions(*, campaign: Campaign) -> QuerySet[GuidelineVersion]:
    """The campaign's guideline versions, newest first, with their authors and how many judgements each has."""
    return (
        GuidelineVersion.objects.filter(campaign=campaign)
        .select_related("author")
        .annotate(judged=Count("judgements"))
        .order_by("-number")
    )
