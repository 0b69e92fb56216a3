"""Campaigns: creation and the settings an admin may change."""

from collections.abc import Mapping, Sequence
from typing import Any

from evaluator.errors import ServiceError
from evaluator.models import (
    Campaign,
    Selection,
    default_criteria,
)
from evaluator.rubric import rubric_problems

# Campaigns and prompts -------------------------------------------------------------------------------------


def campaign_create(
    *,
    name: str,
    description: str = "",
    overlap: int = 3,
    quota_per_annotator: int | None = None,
    gold_rate: float = 0.0,
    selection: str = Selection.RANDOM,
    guidelines: str = "",
    allow_both_bad: bool = False,
    show_reference: bool = False,
    show_retrieved: bool = False,
    criteria: Sequence[Mapping[str, str]] | None = None,
) -> Campaign:
    """A new campaign; `criteria` is its rubric ({slug, label, definition} each), the five defaults when None."""
    if Campaign.objects.filter(name=name).exists():
        raise ServiceError(f"A campaign named {name!r} already exists.")
    rubric = default_criteria() if criteria is None else [dict(criterion) for criterion in criteria]
    problems = rubric_problems(rubric)
    if problems:
        raise ServiceError(" ".join(problems))
    return Campaign.objects.create(
        name=name,
        description=description,
        criteria=rubric,
        overlap=overlap,
        quota_per_annotator=quota_per_annotator,
        gold_rate=gold_rate,
        selection=selection,
        guidelines=guidelines,
        allow_both_bad=allow_both_bad,
        show_reference=show_reference,
        show_retrieved=show_retrieved,
    )


# What an admin may change on an existing campaign; criteria stay fixed once judgements refer to them.
CAMPAIGN_SETTINGS = (
    "name",
    "description",
    "overlap",
    "quota_per_annotator",
    "gold_rate",
    "selection",
    "guidelines",
    "allow_both_bad",
    "show_reference",
    "show_retrieved",
)


def campaign_update(*, campaign: Campaign, **changes: Any) -> Campaign:
    """Change a campaign's settings (the names in CAMPAIGN_SETTINGS); saves only the fields that changed."""
    unknown = sorted(set(changes) - set(CAMPAIGN_SETTINGS))
    if unknown:
        raise ServiceError(f"Unknown campaign settings: {', '.join(unknown)}.")
    name = changes.get("name", campaign.name)
    if Campaign.objects.filter(name=name).exclude(pk=campaign.pk).exists():
        raise ServiceError(f"A campaign named {name!r} already exists.")
    changed = [field for field, value in changes.items() if getattr(campaign, field) != value]
    for field in changed:
        setattr(campaign, field, changes[field])
    if changed:
        campaign.save(update_fields=changed)
    return campaign
