"""The retrain form refuses what the worker would fail on: unbounded steps, a criterion the campaigns do not rate,
LoRA target modules the base model lacks, and a selection that leaves no decisive preference."""

from pathlib import Path

import pytest

from evaluator.models import TrainingJob
from tests import factories
from tests.evaluator.test_training_pages import RETRAIN

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated(annotator):
    """Four comparisons won by a on every criterion but relevance, a tie there."""
    campaign = factories.campaign(name="Rated")
    parent, other = factories.variant(name="parent"), factories.variant(name="other")
    for _ in range(4):
        comparison = factories.comparison(campaign, variants=(parent, other))
        outcomes = {slug: "a" for slug in campaign.criterion_slugs} | {"relevance": "tie"}
        factories.judgement(comparison, annotator, outcomes)
    return campaign, parent


def post(client, campaign, **change: object) -> str:
    response = client.post(f"/manage/campaigns/{campaign.pk}/retrain/", {**RETRAIN, **change}, follow=True)
    return response.content.decode()


def test_the_criterion_is_chosen_from_the_campaigns_rubric(client, admin_user, rated) -> None:
    campaign, parent = rated
    client.force_login(admin_user)

    page = client.get(f"/manage/campaigns/{campaign.pk}/retrain/").content.decode()

    for slug in campaign.criterion_slugs:
        assert f'<option value="{slug}"' in page
    assert "Select a valid choice. made-up is not one of the available choices." in post(
        client, campaign, parent_variant=parent.pk, criterion="made-up"
    )
    post(client, campaign, parent_variant=parent.pk, criterion="factual_accuracy", held_out_share=0)
    assert TrainingJob.objects.get().config["selection"]["criterion"] == "factual_accuracy"


def test_a_source_campaign_without_the_criterion_is_refused_naming_it(client, admin_user, rated) -> None:
    campaign, parent = rated
    other = factories.campaign(name="Plain", criteria=[])
    client.force_login(admin_user)

    page = post(client, campaign, parent_variant=parent.pk, criterion="relevance", source_campaigns=[other.pk])

    assert "“Plain” has no criterion “relevance”: choose one every source rates." in page
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_steps": 10**12}, "Max steps: Ensure this value is less than or equal to 100000."),
        ({"num_train_epochs": "inf"}, "Epochs: Enter a number."),
        ({"save_steps": 10**9}, "Checkpoint every: Ensure this value is less than or equal to 100000."),
        ({"seed": 2**40}, "Seed: Ensure this value is less than or equal to 2147483647."),
    ],
)
def test_numbers_past_their_range_are_refused_at_the_form(client, admin_user, rated, change, message) -> None:
    campaign, parent = rated
    client.force_login(admin_user)

    assert message in post(client, campaign, parent_variant=parent.pk, **change)
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"criterion": "relevance"}, "No decisive relevance preferences in “Rated” yet under this selection"),
        ({"held_out_ids": "p-all"}, "4 held-out prompt(s) left out"),
        ({"min_agreement": 1.0, "exclude_flagged": ""}, "No decisive overall preferences in “Rated” yet"),
    ],
)
def test_a_selection_that_leaves_no_decisive_preference_is_refused_before_queueing(
    client, admin_user, rated, change, message
) -> None:
    campaign, parent = rated
    if change.get("held_out_ids") == "p-all":
        change = {"held_out_ids": "\n".join(campaign.prompts.values_list("external_id", flat=True))}
    if "min_agreement" in change:  # a second annotator disagrees on every pair: no 100% agreement is left
        second = factories.user("second-ann")
        for comparison in campaign.comparisons.all():
            factories.judgement(comparison, second, "b")
    client.force_login(admin_user)

    page = post(client, campaign, parent_variant=parent.pk, **change)

    assert message in page and "rate more pairs, or widen the selection." in page
    assert not TrainingJob.objects.exists()


def test_target_modules_are_checked_against_the_parents_base_model(
    client, admin_user, rated, tiny_model_dir: Path
) -> None:
    campaign, _ = rated
    parent = factories.variant(name="tiny parent", base_model=str(tiny_model_dir))
    client.force_login(admin_user)

    unknown = post(client, campaign, parent_variant=parent.pk, target_modules="q_proj, qkv")
    norm = post(client, campaign, parent_variant=parent.pk, target_modules="input_layernorm")

    assert "“qkv” matches no module in" in unknown and "some of: down_proj, embed_tokens, gate_proj" in unknown
    assert "“input_layernorm” is a LlamaRMSNorm, which LoRA cannot wrap" in norm
    assert not TrainingJob.objects.exists()

    post(client, campaign, parent_variant=parent.pk, target_modules="q_proj")
    # One name goes to PEFT as a list: a bare string would be read as a pattern for the module's full name.
    assert TrainingJob.objects.get().config["training"]["qlora"]["target_modules"] == ["q_proj"]


def test_adjudicated_outcomes_can_decide_the_training_pairs(client, admin_user, researcher, rated) -> None:
    from evaluator.services.review import comparison_adjudicate

    campaign, parent = rated
    # Every judgement called relevance a tie; a researcher settles one pair for a.
    comparison_adjudicate(comparison=campaign.comparisons.first(), outcomes={"relevance": "a"}, by=researcher)
    client.force_login(admin_user)

    refused = post(client, campaign, parent_variant=parent.pk, criterion="relevance", held_out_share=0)
    assert "No decisive relevance preferences" in refused and not TrainingJob.objects.exists()

    post(client, campaign, parent_variant=parent.pk, criterion="relevance", held_out_share=0, prefer_adjudicated="on")
    selection = TrainingJob.objects.get().config["selection"]
    assert selection == selection | {"criterion": "relevance", "prefer_adjudicated": True}
