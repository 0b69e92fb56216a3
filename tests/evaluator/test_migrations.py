"""Data migrations run against real rows: a database at the migration before, rows made with the historical
models, the migration applied, the rows read back."""

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.state import StateApps

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
