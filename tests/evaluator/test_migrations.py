"""Data migrations run against real rows: a database at the migration before, rows made with the historical
models, the migration applied, the rows read back."""

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.state import StateApps
from django.utils import timezone

from tests import factories

BEFORE_LIFECYCLE = [("evaluator", "0011_demo_preparation")]
LIFECYCLE = [("evaluator", "0012_campaign_lifecycle_and_members")]


def _migrate(targets: list[tuple[str, str]]) -> StateApps:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def migrated_back() -> Iterator[None]:
    """Leaves the database at its latest migration whatever the test did."""
    yield
    executor = MigrationExecutor(connection)
    _migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_campaigns_from_before_the_lifecycle_stay_served_to_the_annotator_group(migrated_back: None) -> None:
    old = _migrate(BEFORE_LIFECYCLE)
    old_campaign = old.get_model("evaluator", "Campaign").objects.create(name="Study from last month")

    new = _migrate(LIFECYCLE)

    campaign = new.get_model("evaluator", "Campaign").objects.get(pk=old_campaign.pk)
    assert campaign.state == "active"
    members = new.get_model("evaluator", "CampaignMember").objects.filter(campaign_id=campaign.pk)
    assert [(member.group.name, member.user_id) for member in members] == [("annotator", None)]
    # A campaign made after the migration starts as a draft with no members.
    fresh = new.get_model("evaluator", "Campaign").objects.create(name="New study")
    assert fresh.state == "draft"
    assert not new.get_model("evaluator", "CampaignMember").objects.filter(campaign_id=fresh.pk).exists()


BEFORE_PARTICIPATION = [("evaluator", "0022_judge_screening")]
PARTICIPATION = [("evaluator", "0023_participation")]


@pytest.mark.django_db(transaction=True)
def test_participations_are_filled_from_each_annotators_completed_assignments(migrated_back: None) -> None:
    first, second = factories.campaign(name="First"), factories.campaign(name="Second")
    ann, bea = factories.user("ann", "annotator"), factories.user("bea", "annotator")
    pairs = {campaign.pk: [factories.comparison(campaign) for _ in range(3)] for campaign in (first, second)}
    for pair in pairs[first.pk]:
        factories.judgement(pair, ann)
    factories.judgement(pairs[first.pk][0], bea)
    factories.judgement(pairs[second.pk][0], bea)
    # An open lease and a skipped pair are not rated pairs.
    factories.assignment(pairs[second.pk][1], bea)
    factories.assignment(pairs[second.pk][2], ann, skipped_at=timezone.now(), skip_reason="off topic", released=True)
    _migrate(BEFORE_PARTICIPATION)

    new = _migrate(PARTICIPATION)

    rows = new.get_model("evaluator", "Participation").objects.values_list("annotator_id", "campaign_id", "rated")
    assert sorted(rows) == sorted([(ann.pk, first.pk, 3), (bea.pk, first.pk, 1), (bea.pk, second.pk, 1)])
