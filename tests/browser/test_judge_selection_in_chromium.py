"""A judge steering a campaign, in headless Chromium: an admin picks a selection judge and switches screening on in
the campaign's settings; a researcher reads the screened statistics page, which says what its figures cover, and
downloads the DPO dataset's metadata with the judge chosen. No console errors; screenshots under test-artifacts/."""

import json
from pathlib import Path

import pytest

from evaluator.models import Campaign, JobStatus, Judge, JudgeJob
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_an_admin_screens_a_campaign_with_a_judge_and_the_statistics_say_so(live_server, page, artifacts_dir: Path):
    factories.user("ada", "admin")
    factories.user("rex", "researcher")
    rater = factories.user("ann", "annotator")
    campaign = factories.campaign(name="Archive questions")
    judge = Judge.objects.create(
        name="house judge", kind="endpoint", base_url="https://judge.example/v1", model_name="judge-large"
    )
    JudgeJob.objects.create(judge=judge, campaign=campaign, criteria=["overall"], status=JobStatus.SUCCEEDED)
    for number, (ab, ba) in enumerate([("left", "right"), ("left", "left"), ("tie", "tie")]):
        pair = factories.comparison(campaign, texts=(f"A careful answer {number}.", f"A short answer {number}."))
        factories.judgement(pair, rater, "a")
        factories.judge_verdicts(judge, pair, (ab, ba))
    errors = console_errors(page)

    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/manage/campaigns/{campaign.pk}/")
    page.select_option("#id_selection", "active")
    page.select_option("#id_selection_judge", str(judge.pk))
    page.check("#id_judge_screening")
    page.locator("#id_judge_screening").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "judge-selection-settings.png"), full_page=False)
    page.click("text=Save settings")
    page.wait_for_load_state()
    assert "Settings of “Archive questions” saved." in page.content()
    saved = Campaign.objects.get(pk=campaign.pk)
    assert saved.selection_judge_id == judge.pk and saved.judge_screening
    assert sorted(saved.comparisons.values_list("judge_outcome", flat=True)) == ["a", "split", "tie"]

    page.context.clear_cookies()
    log_in(page, live_server.url, "rex")
    page.goto(f"{live_server.url}/stats/{campaign.pk}/")
    note = page.locator(".judge-screening")
    assert "not an estimate over all of the campaign's prompts" in note.inner_text()
    page.screenshot(path=str(artifacts_dir / "judge-screened-statistics.png"), full_page=False)
    form = page.locator(".dpo-judge-export")
    form.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "dpo-judge-export.png"), full_page=False)
    page.select_option("#dpo-judge", str(judge.pk))
    with page.expect_response(lambda response: "metadata=on" in response.url) as answer:
        form.locator("button[name=metadata]").click()
    metadata = json.loads(answer.value.text())
    assert metadata["sources"]["judge"]["name"] == "house judge"
    assert errors == []
