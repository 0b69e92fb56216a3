"""An annotator rates one blind pair with the mouse in headless Chromium."""

from pathlib import Path

import pytest

from evaluator.models import CriterionChoice, Judgement
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

HIDDEN_NAMES = ["qwen-secret-base", "dpo-adapter-7", "/models/secret-base", "/adapters/round-7"]


def test_an_annotator_rates_a_pair_with_the_mouse_and_never_sees_a_model_name(
    live_server, page, artifacts_dir: Path
) -> None:
    factories.user("ann", "annotator")
    campaign = factories.campaign(name="Browser")
    base = factories.variant(name="qwen-secret-base", base_model="/models/secret-base")
    tuned = factories.variant(
        name="dpo-adapter-7", base_model="/models/secret-base", adapter_path="/adapters/round-7", parent=base
    )
    comparison = factories.comparison(
        campaign,
        variants=(base, tuned),
        texts=("A **conservator** stabilises objects.", "- examines\n- documents\n- treats objects"),
    )

    page.goto(f"{live_server.url}/accounts/login/")
    page.click("#id_username")
    page.keyboard.type("ann")
    page.click("#id_password")
    page.keyboard.type(factories.PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}/rate/")

    html = page.content()
    for name in HIDDEN_NAMES:
        assert name not in html, f"the rating page shows {name!r}"
        assert name not in page.url
        assert all(name not in cookie["value"] for cookie in page.context.cookies())
    assert "conservator" in html
    assert page.locator(".answer li").count() == 3  # the markdown list is rendered as a list

    for slug in campaign.criterion_slugs:
        page.click(f"input[name='{slug}'][value='right']")
    page.screenshot(path=str(artifacts_dir / "rating-page.png"), full_page=True)
    page.click("button:has-text('Submit and next')")
    page.wait_for_selector("text=Nothing to rate right now")

    judgement = Judgement.objects.get()
    assignment = judgement.assignment
    expected = "a" if not assignment.left_is_a else "b"  # "right" is a when a was not on the left
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {expected}
    assert judgement.comparison == comparison
    assert judgement.time_on_task_ms > 0
