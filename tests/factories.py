"""Small factories for test data; every value can be overridden by keyword."""

import itertools
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.utils import timezone

from evaluator.models import Assignment, Campaign, Candidate, Comparison, ModelVariant, Prompt
from evaluator.services.accounts import role_groups_ensure

PASSWORD = "correct-horse-battery-staple"
_counter = itertools.count(1)


def user(username: str, *roles: str) -> AbstractUser:
    groups = role_groups_ensure()
    account = get_user_model().objects.create_user(username=username, password=PASSWORD)
    account.groups.set([groups[role] for role in roles])
    return account


def campaign(*, members: tuple[str, ...] = ("annotator",), **fields: Any) -> Campaign:
    """An active campaign, rated by everyone in the `members` groups (the annotator role by default), as every
    campaign was before campaigns had a lifecycle and members; `state=…` and `members=()` say otherwise."""
    from django.contrib.auth.models import Group

    from evaluator.models import CampaignMember, CampaignState

    made = Campaign.objects.create(
        **{"name": f"Campaign {next(_counter)}", "overlap": 2, "state": CampaignState.ACTIVE, **fields}
    )
    for name in members:
        CampaignMember.objects.create(campaign=made, group=Group.objects.get_or_create(name=name)[0])
    return made


def variant(**fields: Any) -> ModelVariant:
    return ModelVariant.objects.create(**{"name": f"variant-{next(_counter)}", "base_model": "tiny", **fields})


def prompt(campaign: Campaign, **fields: Any) -> Prompt:
    number = next(_counter)
    return Prompt.objects.create(
        **{"campaign": campaign, "external_id": f"p{number}", "text": f"Question {number}?", **fields}
    )


def candidate(prompt: Prompt, variant: ModelVariant, **fields: Any) -> Candidate:
    defaults = {
        "text": f"Answer from {variant.name}",
        "seed": 1,
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "latency_ms": 12,
    }
    return Candidate.objects.create(prompt=prompt, variant=variant, **{**defaults, **fields})


def comparison(
    campaign: Campaign,
    *,
    variants: tuple[ModelVariant, ModelVariant] | None = None,
    texts: tuple[str, str] | None = None,
) -> Comparison:
    first, second = variants or (variant(), variant())
    if first.pk > second.pk:
        first, second = second, first
    question = prompt(campaign)
    text_a, text_b = texts or (f"Answer from {first.name}", f"Answer from {second.name}")
    return Comparison.objects.create(
        campaign=campaign,
        prompt=question,
        candidate_a=candidate(question, first, text=text_a),
        candidate_b=candidate(question, second, text=text_b),
        variant_a=first,
        variant_b=second,
    )


def assignment(comparison: Comparison, annotator: AbstractUser, **fields: Any) -> Assignment:
    defaults = {"left_is_a": True, "lease_expires_at": timezone.now() + timedelta(minutes=20)}
    return Assignment.objects.create(comparison=comparison, annotator=annotator, **{**defaults, **fields})


def judgement(
    comparison: Comparison,
    annotator: AbstractUser,
    outcomes: str | dict[str, str] = "a",
    *,
    left_is_a: bool = True,
    time_on_task_ms: int = 1000,
    simulated: bool = False,
) -> Any:
    """A completed assignment and its judgement. `outcomes` is one outcome for every criterion of the campaign
    (a, b or tie: which *variant* won), or a mapping of criterion slug to outcome for only those criteria.
    `simulated` marks it a scripted annotator's (evaluator/services/simulation.py)."""
    from evaluator.models import CriterionChoice, Judgement
    from evaluator.services.participation import participation_rated_add

    slugs = comparison.campaign.criterion_slugs
    choices = {slug: outcomes for slug in slugs} if isinstance(outcomes, str) else dict(outcomes)
    task = assignment(comparison, annotator, left_is_a=left_is_a, completed_at=timezone.now())
    participation_rated_add(campaign_id=comparison.campaign_id, annotator_id=annotator.pk)
    made = Judgement.objects.create(
        assignment=task,
        comparison=comparison,
        annotator=annotator,
        time_on_task_ms=time_on_task_ms,
        simulated=simulated,
    )
    CriterionChoice.objects.bulk_create(
        CriterionChoice(judgement=made, criterion=slug, outcome=outcome) for slug, outcome in choices.items()
    )
    return made


def judge_verdicts(judge: Any, pair: Comparison, choices: tuple[str | None, str | None]) -> None:
    """The judge's two overall verdicts on `pair`: `choices` for the order a-then-b and for b-then-a ("left":
    the answer shown first; None: a reply that named no side)."""
    from evaluator.models import JudgeVerdict

    JudgeVerdict.objects.bulk_create(
        JudgeVerdict(
            judge=judge,
            comparison=pair,
            criterion="overall",
            order=order,
            raw_output=f"VERDICT: {choice}" if choice else "I cannot say.",
            choice=choice,
            parse_status="ok" if choice else "no_verdict",
            latency_ms=5,
        )
        for order, choice in zip(("ab", "ba"), choices, strict=True)
    )
