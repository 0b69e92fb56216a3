"""Versioned guidelines: every edit of a campaign's guidelines adds a version, and judgements record theirs."""

from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from evaluator.models import Campaign, GuidelineVersion


def guideline_version_create(
    *, campaign: Campaign, text: str, author: User | None = None, now: datetime | None = None
) -> GuidelineVersion:
    """A new version of the campaign's guidelines (the last number plus one), made current: the campaign's
    ``guidelines`` text and ``guidelines_version`` follow it, so judgements submitted from now on record it.

    The campaign row is locked while the number is chosen, so two edits at once get consecutive numbers (and the
    unique (campaign, number) constraint holds whatever happens)."""
    with transaction.atomic():
        Campaign.objects.select_for_update(no_key=True).filter(pk=campaign.pk).exists()
        last = GuidelineVersion.objects.filter(campaign=campaign).aggregate(last=Max("number"))["last"] or 0
        version = GuidelineVersion.objects.create(
            campaign=campaign, number=last + 1, text=text, author=author, created_at=now or timezone.now()
        )
        Campaign.objects.filter(pk=campaign.pk).update(guidelines=text, guidelines_version=version)
    campaign.guidelines, campaign.guidelines_version = text, version
    return version
