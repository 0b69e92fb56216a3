"""Campaigns: creation, the settings an admin may change, the lifecycle and who may rate them."""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import (
    Campaign,
    CampaignMember,
    CampaignState,
    Comparison,
    QualificationItem,
    Selection,
    default_criteria,
)
from evaluator.rubric import rubric_problems
from evaluator.services.guidelines import guideline_version_create
from evaluator.services.judge_selection import comparison_judge_outcomes_refresh
from evaluator.services.qualification import qualification_items_set, qualification_settings_check
from evaluator.services.rating import comparison_claimable_refresh

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
    priority: int = 0,
    criteria: Sequence[Mapping[str, str]] | None = None,
    author: User | None = None,
) -> Campaign:
    """A new campaign, a draft with no members; `criteria` is its rubric ({slug, label, definition} each), the
    five defaults when None. Nothing is served until annotators are assigned and the campaign is activated.
    Guidelines given here are their version 1, written by `author`."""
    if Campaign.objects.filter(name=name).exists():
        raise ServiceError(f"A campaign named {name!r} already exists.")
    rubric = default_criteria() if criteria is None else [dict(criterion) for criterion in criteria]
    problems = rubric_problems(rubric)
    if problems:
        raise ServiceError(" ".join(problems))
    campaign = Campaign.objects.create(
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
        priority=priority,
        state=CampaignState.DRAFT,
    )
    if guidelines:
        guideline_version_create(campaign=campaign, text=guidelines, author=author)
    return campaign


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
    "priority",
    "qualification_required",
    "qualification_threshold",
    "qualification_attempts",
    "selection_judge",
    "judge_screening",
)


def campaign_update(
    *,
    campaign: Campaign,
    qualification_items: Iterable[Comparison] | None = None,
    author: User | None = None,
    **changes: Any,
) -> Campaign:
    """Change a campaign's settings (the names in CAMPAIGN_SETTINGS); saves only the fields that changed.

    Changed guidelines become a new version by `author` (services.guidelines); `qualification_items`, when given,
    replaces the qualification set (services.qualification). All or nothing: a refused change writes nothing."""
    unknown = sorted(set(changes) - set(CAMPAIGN_SETTINGS))
    if unknown:
        raise ServiceError(f"Unknown campaign settings: {', '.join(unknown)}.")
    name = changes.get("name", campaign.name)
    if Campaign.objects.filter(name=name).exclude(pk=campaign.pk).exists():
        raise ServiceError(f"A campaign named {name!r} already exists.")
    with transaction.atomic():
        items = (
            QualificationItem.objects.filter(campaign=campaign).count()
            if qualification_items is None
            else qualification_items_set(campaign=campaign, comparisons=qualification_items)
        )
        qualification_settings_check(
            required=changes.get("qualification_required", campaign.qualification_required),
            threshold=changes.get("qualification_threshold", campaign.qualification_threshold),
            attempts=changes.get("qualification_attempts", campaign.qualification_attempts),
            items=items,
        )
        if changes.get("judge_screening", campaign.judge_screening) and not changes.get(
            "selection_judge", campaign.selection_judge
        ):
            raise ServiceError("Screening pairs needs a selection judge: choose one.")
        changed = [field for field, value in changes.items() if getattr(campaign, field) != value]
        if "guidelines" in changed:
            changed.remove("guidelines")
            guideline_version_create(campaign=campaign, text=changes["guidelines"], author=author)
        for field in changed:
            setattr(campaign, field, changes[field])
        if changed:
            campaign.save(update_fields=changed)
        if "selection_judge" in changed:  # each pair's outcome is the new judge's (or none)
            comparison_judge_outcomes_refresh(campaign=campaign)
    if "overlap" in changed:  # the claim index holds only comparisons with room under the overlap
        comparison_claimable_refresh(campaign=campaign)
    return campaign


# Lifecycle -------------------------------------------------------------------------------------------------

# Which states each state may move to: draft → active ⇄ paused → closed; a draft may also be closed unused.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    CampaignState.DRAFT: (CampaignState.ACTIVE, CampaignState.CLOSED),
    CampaignState.ACTIVE: (CampaignState.PAUSED, CampaignState.CLOSED),
    CampaignState.PAUSED: (CampaignState.ACTIVE, CampaignState.CLOSED),
    CampaignState.CLOSED: (),
}
STATE_VERBS = {
    CampaignState.ACTIVE: "activated",
    CampaignState.PAUSED: "paused",
    CampaignState.CLOSED: "closed",
    CampaignState.DRAFT: "made a draft again",
}


def campaign_state_change(*, campaign: Campaign, state: str, now: datetime | None = None) -> Campaign:
    """Move the campaign to `state` along TRANSITIONS, by a conditional update whose row count is checked.

    Open leases are left as they are: the claim never serves a pair of a campaign that is not active, and
    judgement_submit refuses a judgement for one, so a lease open when the campaign is paused or closed simply
    expires (or counts again if the campaign is resumed before it does).
    """
    if state not in CampaignState.values:
        raise ServiceError(f"Unknown campaign state {state!r}; one of {', '.join(CampaignState.values)}.")
    sources = [source for source, targets in TRANSITIONS.items() if state in targets]
    now = now or timezone.now()
    updated = Campaign.objects.filter(pk=campaign.pk, state__in=sources).update(state=state, state_changed_at=now)
    if updated != 1:
        current = Campaign.objects.filter(pk=campaign.pk).values_list("state", flat=True).first()
        if current is None:
            raise ServiceError("This campaign no longer exists.")
        raise ServiceError(
            f"“{campaign.name}” is {CampaignState(current).in_words}, so it cannot be "
            f"{STATE_VERBS[CampaignState(state)]}."
        )
    campaign.state, campaign.state_changed_at = state, now
    return campaign


# Members ---------------------------------------------------------------------------------------------------


def campaign_member_add(
    *, campaign: Campaign, user: User | None = None, group: Group | None = None, added_by: User | None = None
) -> CampaignMember:
    """Assign one user or one group to the campaign; assigning one already assigned is refused by name."""
    if (user is None) == (group is None):
        raise ServiceError("Assign either one user or one group.")
    what = f"“{user.username}”" if user is not None else f"group “{group.name}”"  # type: ignore[union-attr]
    try:
        with transaction.atomic():
            return CampaignMember.objects.create(campaign=campaign, user=user, group=group, added_by=added_by)
    except IntegrityError:
        # The unique constraints on (campaign, user) and (campaign, group): a double post or two admins at once.
        raise ServiceError(f"{what} is already assigned to “{campaign.name}”.") from None


def campaign_member_remove(*, campaign: Campaign, member_id: int) -> None:
    """Unassign a member; their open leases are not served any more and their submissions are refused."""
    deleted, _ = CampaignMember.objects.filter(campaign=campaign, pk=member_id).delete()
    if not deleted:
        raise ServiceError("That member is no longer assigned to this campaign.")
