"""Shared by the import commands (a leading underscore keeps Django from listing it as a command)."""

from django.core.management.base import CommandError

from evaluator import services
from evaluator.models import Campaign


def campaign_by_name(name: str, *, create: bool) -> Campaign:
    """The named campaign; with `create`, a new one when there is none."""
    campaign = Campaign.objects.filter(name=name).first()
    if campaign is not None:
        return campaign
    if not create:
        raise CommandError(f"no campaign named {name!r} (use --create)")
    return services.campaign_create(name=name)
