"""Qualification in headless Chromium: an admin picks gold comparisons as a campaign's qualification; an annotator
takes it, fails once (told their score, offered a retry), passes the second attempt and then gets the campaign's
ordinary pairs; the quality page shows both attempts. Screenshots under test-artifacts/."""

from pathlib import Path

import pytest

from evaluator.models import Assignment, QualificationAnswer, QualificationAttempt
from evaluator.services.campaigns import campaign_create, campaign_member_add, campaign_state_change
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _log_in(page, live_server, username: str, lands_on: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}{lands_on}")


def _gold_side(token: str) -> str:
    """The screen side of the item's gold outcome (the test knows it; the page never says it)."""
    answer = QualificationAnswer.objects.select_related("comparison").get(token=token)
    gold = answer.comparison.gold_outcome
    if gold == "tie":
        return "tie"
    return "left" if (gold == "a") == answer.left_is_a else "right"


def _answer_items(page, *, right: int, shots: Path | None = None) -> None:
    """Answer every item of the attempt on screen: the first `right` like the gold outcome, the rest not."""
    for position in range(10):
        if not page.locator("#qualification-phase").count():
            return
        token = page.locator("form.rubric").get_attribute("action").rstrip("/").rsplit("/", 1)[1]
        side = _gold_side(token)
        if position >= right:
            side = "left" if side != "left" else "right"
        if shots is not None and position == 0:
            page.screenshot(path=str(shots), full_page=True)
        page.locator(f"tr.criterion input[value='{side}']").check()
        page.click("button:has-text('Submit and next')")
        page.wait_for_load_state()


def test_an_annotator_fails_once_passes_then_rates_ordinary_pairs(live_server, browser, artifacts_dir: Path) -> None:
    admin_user = factories.user("ada", "admin")
    annotator_user = factories.user("ann", "annotator")
    campaign = campaign_create(
        name="Archive care study", guidelines="Prefer the answer a conservator would give.", author=admin_user
    )
    campaign_member_add(campaign=campaign, user=annotator_user, added_by=admin_user)
    for text in ("Keep paper dry.", "Use acid-free boxes."):
        factories.comparison(campaign, texts=(text, "Anything goes."))
    for first, second, gold in [
        ("Store prints flat in archival sleeves.", "Roll prints tightly with rubber bands.", "a"),
        ("Tape torn pages with office tape.", "Mend tears with wheat-starch paste and Japanese tissue.", "b"),
        ("Keep the reading room at 18-20 °C.", "Hold the reading room between 18 and 20 °C.", "tie"),
    ]:
        gold_pair = factories.comparison(campaign, texts=(first, second))
        gold_pair.gold_outcome = gold
        gold_pair.save(update_fields=["gold_outcome"])
    campaign_state_change(campaign=campaign, state="active")

    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

    # The admin asks for a qualification: all three gold pairs, 2 of 3 right, two attempts.
    _log_in(admin, live_server, "ada", "/manage/")
    admin.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/")
    admin.check("#id_qualification_required")
    admin.fill("#id_qualification_threshold", "0.6")
    admin.fill("#id_qualification_attempts", "2")
    for box in admin.locator("#id_qualification_items input[type=checkbox]").all():
        box.check()
    admin.locator("#settings").screenshot(path=str(artifacts_dir / "qualification-settings.png"))
    admin.click("button:has-text('Save settings')")
    assert "saved" in admin.inner_text(".messages")
    assert admin.is_checked("#id_qualification_required")

    # The annotator lands in the qualification, not on an ordinary pair.
    _log_in(page, live_server, "ann", "/rate/")
    assert "Qualification: item 1 of 3 · attempt 1 of 2" in page.inner_text("#qualification-phase")
    assert "gold" not in page.content().lower()
    _answer_items(page, right=1, shots=artifacts_dir / "qualification-item.png")

    # Failed: the score, the threshold and a retry.
    assert "did not pass the qualification of “Archive care study” this time: 1 of 3 right (33%; 60% needed)" in (
        page.inner_text(".messages")
    )
    page.screenshot(path=str(artifacts_dir / "qualification-failed.png"), full_page=True)
    assert not Assignment.objects.exists()
    page.click("button:has-text('Start attempt 2 of 2')")
    assert "attempt 2 of 2" in page.inner_text("#qualification-phase")
    _answer_items(page, right=3)

    # Passed: the campaign's ordinary pairs follow, never a gold one.
    assert "You passed the qualification of “Archive care study”: 3 of 3 right (100%; 60% needed)" in (
        page.inner_text(".messages")
    )
    page.wait_for_selector("#campaign-name")
    assert page.locator("#qualification-phase").count() == 0
    assert "version 1" in page.inner_text("#guidelines-version")
    page.screenshot(path=str(artifacts_dir / "qualification-passed-first-pair.png"), full_page=True)
    assignment = Assignment.objects.get(annotator=annotator_user)
    assert assignment.comparison.gold_outcome is None
    assert list(QualificationAttempt.objects.order_by("number").values_list("passed", flat=True)) == [False, True]

    # The admin sees both attempts on the quality page.
    admin.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/quality/")
    results = admin.inner_text("#qualification-results")
    assert "#1: 1 of 3 (33%)" in results and "#2: 3 of 3 (100%)" in results and "passed" in results
    admin.locator("#qualification-results").screenshot(path=str(artifacts_dir / "qualification-results.png"))
    admin.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/")
    admin.locator("#guideline-versions").screenshot(path=str(artifacts_dir / "guideline-versions.png"))
