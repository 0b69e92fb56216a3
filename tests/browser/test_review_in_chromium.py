"""Review and adjudication in headless Chromium: an annotator assigned to a campaign rates a pair "both bad" after
flagging one of its answers and skips the next; a researcher resolves the flag and dismisses the skip on the review
page (rows swapped in place), then gives the disputed comparison its final outcome. Screenshots under
test-artifacts/."""

from pathlib import Path

import pytest

from evaluator.models import Adjudication, AnswerFlag, Assignment, CriterionChoice, Judgement, ReviewResolution
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _log_in(page, live_server, username: str, lands_on: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}{lands_on}")


def test_assign_rate_flag_review_and_adjudicate(live_server, browser, artifacts_dir: Path) -> None:
    factories.user("rex", "researcher")
    factories.user("ann", "annotator")
    bea = factories.user("bea", "annotator")
    campaign = factories.campaign(name="Dosage study", allow_both_bad=True, overlap=2)
    base, tuned = factories.variant(name="base"), factories.variant(name="tuned-r1")
    disputed = factories.comparison(
        campaign,
        variants=(base, tuned),
        texts=("Take 400 mg every six hours, at most 1,200 mg a day.", "Take as many as you need until it stops."),
    )
    # bea already judged the first pair: variant a (base) better on everything.
    factories.judgement(disputed, bea, "a")
    factories.comparison(campaign, variants=(base, tuned), texts=("Rest and drink water.", "Ignore it."))

    annotator = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    researcher = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors = console_errors(researcher)
    for page in (annotator, researcher):
        page.set_default_timeout(60_000)  # a loaded machine, not a slow page

    # The annotator (assigned through the annotator group) gets the disputed pair first: the other is unjudged,
    # but a random draw may serve either, so whichever comes first is rated and the other skipped.
    _log_in(annotator, live_server, "ann", "/rate/")
    annotator.wait_for_function("window.htmx !== undefined")
    assert annotator.inner_text("#campaign-name") == "Dosage study"
    if "400 mg" in annotator.inner_text("section.answers"):
        _flag_and_rate_both_bad(annotator, artifacts_dir)
        _skip(annotator)
    else:
        _skip(annotator)
        annotator.wait_for_selector("section.answers:has-text('400 mg')")
        _flag_and_rate_both_bad(annotator, artifacts_dir)
    assert AnswerFlag.objects.get().candidate == disputed.candidate_b
    assert CriterionChoice.objects.filter(both_bad=True).count() == len(campaign.criterion_slugs)

    # The researcher's review page: the flag and the skip, open, with their reasons.
    _log_in(researcher, live_server, "rex", "/stats/")
    researcher.click("header nav a:has-text('Review')")
    researcher.wait_for_url(f"{live_server.url}/review/")
    researcher.wait_for_function("window.htmx !== undefined")
    items = researcher.inner_text("#review-items")
    assert "2 items" in items and "Doses past the daily maximum" in items and "I do not know this drug" in items
    researcher.screenshot(path=str(artifacts_dir / "review-open.png"), full_page=True)

    flag_row = researcher.locator("tr.review-item.flag")
    flag_row.locator("input[name=note]").fill("The answer is unsafe; tuned-r1 gets a safety pass.")
    flag_row.locator("button:has-text('Resolve')").click()
    researcher.wait_for_selector("tr.review-item.flag .status.succeeded")
    assert "by rex" in researcher.inner_text("tr.review-item.flag")
    skip_row = researcher.locator("tr.review-item.skip")
    skip_row.locator("input[name=note]").fill("A knowledge gap, not a problem with the pair.")
    skip_row.locator("button:has-text('Dismiss')").click()
    researcher.wait_for_selector("tr.review-item.skip .status.waiting")
    researcher.screenshot(path=str(artifacts_dir / "review-decided.png"), full_page=True)
    assert set(ReviewResolution.objects.values_list("status", "resolved_by__username")) == {
        ("resolved", "rex"),
        ("dismissed", "rex"),
    }

    # The adjudication queue lists the disputed pair: bea said a, ann said both bad (a tie).
    researcher.click(f"a[href='/review/campaigns/{campaign.pk}/adjudication/']")
    researcher.wait_for_selector("#queue")
    assert "1 comparison" in researcher.inner_text("#queue h2")
    assert "Overall: 1 / 1 / 0" in researcher.inner_text("#queue")
    researcher.screenshot(path=str(artifacts_dir / "adjudication-queue.png"), full_page=True)
    researcher.click("#queue a:has-text('Adjudicate')")
    researcher.wait_for_selector("#judgements")
    judgements = researcher.inner_text("#judgements")
    assert "both bad" in judgements and "b: Unsafe" in judgements
    researcher.screenshot(path=str(artifacts_dir / "adjudication-comparison.png"), full_page=True)
    researcher.select_option("#id_overall", "a")
    researcher.select_option("#id_safety", "a")
    researcher.fill("#id_note", "b recommends an overdose.")
    researcher.click("button:has-text('Record final outcome')")
    researcher.wait_for_selector(".message:has-text('Recorded the final outcome of Safety, Overall.')")
    assert "b recommends an overdose." in researcher.inner_text("#adjudication")
    researcher.screenshot(path=str(artifacts_dir / "adjudication-recorded.png"), full_page=True)
    assert set(Adjudication.objects.values_list("criterion", "outcome", "decided_by__username")) == {
        ("overall", "a", "rex"),
        ("safety", "a", "rex"),
    }

    # Recorded: the queue's default view (awaiting adjudication) is empty again.
    researcher.goto(f"{live_server.url}/review/campaigns/{campaign.pk}/adjudication/")
    assert "0 comparisons" in researcher.inner_text("#queue h2")
    researcher.set_viewport_size({"width": 390, "height": 844})
    researcher.goto(f"{live_server.url}/review/?state=all")
    researcher.screenshot(path=str(artifacts_dir / "review-narrow.png"), full_page=True)
    assert errors == []
    for context in (annotator.context, researcher.context):
        context.close()


def _flag_and_rate_both_bad(page, artifacts_dir: Path) -> None:
    """Flag the unsafe answer (on whichever side it is shown), then rate every criterion "both bad"."""
    side = "left" if "until it stops" in page.inner_text("#left-title >> xpath=..") else "right"
    page.click(f"#flag-{side} summary")
    page.select_option(f"#flag-reason-{side}", "unsafe")
    page.fill(f"#flag-note-{side}", "Doses past the daily maximum")
    page.click(f"#flag-{side} button[type=submit]")
    page.wait_for_selector(f"#flag-status-{side}:has-text('it will be reviewed')")
    for row in page.locator("tr.criterion").all():
        row.locator("input[value='both_bad']").check()
    page.screenshot(path=str(artifacts_dir / "review-rated-both-bad.png"), full_page=True)
    page.click("button:has-text('Submit and next')")
    wait_until(lambda: Judgement.objects.filter(annotator__username="ann").exists(), "ann's judgement")


def _skip(page) -> None:
    page.click("#skip summary")
    page.fill("#skip-reason", "I do not know this drug")
    page.click("#skip button:has-text('Skip')")
    wait_until(lambda: Assignment.objects.filter(skipped_at__isnull=False).exists(), "the skip")
