"""Campaign assignment in headless Chromium: an admin assigns an annotator and activates the campaign, the annotator
picks it from their campaign list and rates; the admin pauses it while the annotator is mid-pair, and the submission
is refused with a clear message and nothing stored. Screenshots under test-artifacts/."""

from pathlib import Path

import pytest

from evaluator.models import Judgement
from evaluator.services.campaigns import campaign_create
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _log_in(page, live_server, username: str, lands_on: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}{lands_on}")


def _rate_every_row(page, side: str) -> None:
    for row in page.locator("tr.criterion").all():
        row.locator(f"input[value='{side}']").check()


def test_assign_pick_rate_then_a_pause_mid_pair_refuses_the_submission(
    live_server, browser, artifacts_dir: Path
) -> None:
    factories.user("ada", "admin")
    factories.user("ann", "annotator")
    factories.user("bea", "annotator")
    campaign = campaign_create(name="Archive care study", show_retrieved=True)
    # The second answer of each pair is a retrieval variant's, with its passage: shown once, above both answers.
    for good, poor in [
        ("Keep paper below 50 % humidity.", "Paper likes it damp."),
        ("Use acid-free boxes.", "Any box will do."),
        ("Wear nitrile gloves.", "Bare hands are fine."),
    ]:
        comparison = factories.comparison(campaign, texts=(good, poor))
        passage = {"document": "handbook.md", "chunk": 0, "text": "The handbook's advice on this.", "score": 1}
        comparison.candidate_b.retrieved = [passage]
        comparison.candidate_b.save(update_fields=["retrieved"])

    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    annotator = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

    # The admin assigns ann (a draft with nobody assigned says so), then activates the campaign.
    _log_in(admin, live_server, "ada", "/manage/")
    admin.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/")
    assert "Nobody is assigned yet" in admin.inner_text("#lifecycle")
    admin.fill("#member-username", "nobody-here")
    admin.click("#member-form button[type=submit]")
    assert "There is no user named “nobody-here”." in admin.inner_text(".messages")
    admin.fill("#member-username", "ann")
    admin.click("#member-form button[type=submit]")
    assert "“ann” assigned to “Archive care study”." in admin.inner_text(".messages")
    admin.click("#lifecycle button:has-text('Activate')")
    assert admin.inner_text("#campaign-state") == "Active"
    admin.screenshot(path=str(artifacts_dir / "campaign-members-admin.png"), full_page=True)
    admin.locator("#lifecycle").screenshot(path=str(artifacts_dir / "campaign-members-section.png"))

    # The annotator sees the campaign in their list, picks it and rates one pair.
    _log_in(annotator, live_server, "ann", "/rate/")
    annotator.goto(f"{live_server.url}/rate/campaigns/")
    assert "Archive care study" in annotator.inner_text("#campaigns")
    annotator.screenshot(path=str(artifacts_dir / "campaign-list-annotator.png"), full_page=True)
    annotator.click("#campaigns button:has-text('Rate in this campaign')")
    annotator.wait_for_url(f"{live_server.url}/rate/")
    annotator.wait_for_function("window.htmx !== undefined")
    assert annotator.inner_text("#campaign-name") == "Archive care study"
    annotator.click("#passages summary")
    assert "Passages retrieved for this question (1)" in annotator.inner_text("#passages")
    assert annotator.locator("article.answer details.passages").count() == 0
    annotator.screenshot(path=str(artifacts_dir / "campaign-pair-with-passages.png"), full_page=True)
    _rate_every_row(annotator, "left")
    annotator.click("button:has-text('Submit and next')")
    annotator.wait_for_selector("#progress:has-text('1 rated')")
    assert Judgement.objects.count() == 1
    annotator.screenshot(path=str(artifacts_dir / "campaign-rating-page.png"), full_page=True)

    # Mid-pair: the annotator has chosen, the admin pauses the campaign, the submission is refused.
    _rate_every_row(annotator, "right")
    admin.click("#lifecycle button:has-text('Pause')")
    assert admin.inner_text("#campaign-state") == "Paused"
    annotator.click("button:has-text('Submit and next')")
    annotator.wait_for_selector(".message:has-text('was paused while you rated this pair')")
    message = annotator.inner_text(".messages")
    assert "“Archive care study” was paused while you rated this pair, so your choices were not stored." in message
    assert "Nothing to rate right now" in annotator.inner_text("#pair")
    assert "no pairs are served from it" not in message  # the refusal alone says what happened
    annotator.screenshot(path=str(artifacts_dir / "campaign-paused-mid-pair.png"), full_page=True)
    assert Judgement.objects.count() == 1  # the refused one left nothing behind

    # bea was never assigned: the campaign is not hers even once it is resumed.
    admin.click("#lifecycle button:has-text('Resume')")
    other = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    _log_in(other, live_server, "bea", "/rate/")
    assert "Nothing to rate right now" in other.inner_text("#pair")
    assert "No active campaign is assigned to you" in other.inner_text("#pair")
    for context in (admin.context, annotator.context, other.context):
        context.close()


def test_closing_a_campaign_while_an_annotator_is_mid_pair_refuses_the_submission_and_serves_nothing_more(
    live_server, browser, artifacts_dir: Path
) -> None:
    factories.user("ada", "admin")
    factories.user("ann", "annotator")
    campaign = factories.campaign(name="Closing study", members=(), overlap=1)
    for good, poor in [("Use acid-free boxes.", "Any box will do."), ("Wear nitrile gloves.", "Bare hands are fine.")]:
        factories.comparison(campaign, texts=(good, poor))
    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    annotator = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    _log_in(admin, live_server, "ada", "/manage/")
    admin.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/")
    admin.fill("#member-username", "ann")
    admin.click("#member-form button[type=submit]")

    # The annotator opens a pair and chooses; the admin closes the campaign for good before the submission.
    _log_in(annotator, live_server, "ann", "/rate/")
    annotator.wait_for_function("window.htmx !== undefined")
    assert annotator.inner_text("#campaign-name") == "Closing study"
    _rate_every_row(annotator, "left")
    admin.click("#lifecycle button:has-text('Close for good')")
    assert admin.inner_text("#campaign-state") == "Closed"
    annotator.click("button:has-text('Submit and next')")
    annotator.wait_for_selector(".message:has-text('was closed while you rated this pair')")
    assert "so your choices were not stored" in annotator.inner_text(".messages")
    assert "Nothing to rate right now" in annotator.inner_text("#pair")
    annotator.screenshot(path=str(artifacts_dir / "campaign-closed-mid-pair.png"), full_page=True)
    assert Judgement.objects.count() == 0

    # Closed for good: nothing is served from it, and it is gone from the annotator's list.
    annotator.goto(f"{live_server.url}/rate/campaigns/")
    assert "Closing study" not in annotator.inner_text("main")
    admin.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/")
    assert "Closed: it keeps its data" in admin.inner_text("#lifecycle")
    for context in (admin.context, annotator.context):
        context.close()
