"""Shared by the import commands (a leading underscore keeps Django from listing it as a command)."""

from pathlib import Path

from django.core.management.base import CommandError

from evaluator.models import Campaign
from evaluator.services.campaigns import campaign_create


def campaign_by_name(name: str, *, create: bool) -> Campaign:
    """The named campaign; with `create`, a new one when there is none.

    Call it inside the import's transaction: a refused file must not leave a campaign made for it behind.
    """
    campaign = Campaign.objects.filter(name=name).first()
    if campaign is not None:
        return campaign
    if not create:
        raise CommandError(f"no campaign named {name!r} (use --create)")
    return campaign_create(name=name)


def import_refused(path: Path, error: Exception) -> CommandError:
    """The error a refused file ends an import command with: the file, the problem, and that nothing was stored."""
    # Service messages are sentences ("… already has prompt id(s): a."); their full stop would clash with the tail.
    return CommandError(f"{path}: {str(error).rstrip('.')}; nothing was imported")
