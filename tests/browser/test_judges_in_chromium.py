"""The judge pages in headless Chromium: an admin defines an endpoint judge, previews its template on a real pair
and saves it; a failed job's page says why and offers Resume; a researcher reads the calibration page, with the
judge-only leaderboard beside the human one. No console errors under the Content-Security-Policy; screenshots kept
under test-artifacts/."""

from pathlib import Path

import pytest
from django.utils import timezone

from evaluator.models import JobStatus, Judge, JudgeJob, JudgeVerdict
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def judged_campaign(judge: Judge):
    """Six pairs rated by two people; the judge agrees on four, flips its verdict with the order on one, and
    contradicts the humans on one."""
    campaign = factories.campaign(name="Archive questions")
    people = [factories.user("ann", "annotator"), factories.user("bea", "annotator")]
    strong, weak = factories.variant(name="tiny · dpo-2"), factories.variant(name="tiny · base")
    plan = [("a", "left", "right")] * 4 + [("a", "left", "left"), ("b", "left", "right")]
    for number, (human, ab, ba) in enumerate(plan):
        pair = factories.comparison(
            campaign,
            variants=(strong, weak),
            texts=(f"A careful answer number {number}, with **sources**.", f"A short answer {number}."),
        )
        for person in people:
            factories.judgement(pair, person, human)
        for order, choice in (("ab", ab), ("ba", ba)):
            JudgeVerdict.objects.create(
                judge=judge,
                comparison=pair,
                criterion="overall",
                order=order,
                raw_output=f"Reasoning.\nVERDICT: {'A' if choice == 'left' else 'B'}",
                choice=choice,
                parse_status="ok",
                prompt_tokens=200,
                completion_tokens=12,
                latency_ms=340,
            )
    return campaign


def test_an_admin_defines_a_judge_and_a_researcher_reads_its_calibration(live_server, page, artifacts_dir: Path):
    factories.user("ada", "admin")
    factories.user("rex", "researcher")
    seen = Judge.objects.create(
        name="house judge", kind="endpoint", base_url="https://judge.example/v1", model_name="judge-large"
    )
    campaign = judged_campaign(seen)
    failed = JudgeJob.objects.create(
        judge=seen,
        campaign=campaign,
        criteria=["overall"],
        total=6,
        done=6,
        status=JobStatus.FAILED,
        finished_at=timezone.now(),
        error="JudgeBackendError: The judge endpoint https://judge.example/v1/chat/completions answered HTTP 503: "
        "down for maintenance (gave up after 3 tries)",
    )
    errors = console_errors(page)
    log_in(page, live_server.url, "ada")

    page.goto(f"{live_server.url}/manage/judges/")
    assert "house judge" in page.locator("table.data").first.inner_text()
    page.screenshot(path=str(artifacts_dir / "judges.png"), full_page=True)

    page.click("a[href='/manage/judges/new/']")
    page.fill("#id_name", "strict judge")
    page.check("input[name=kind][value=endpoint]")
    page.fill("#id_base_url", "https://api.example.com/v1")
    page.fill("#id_model_name", "judge-small")
    page.fill("#id_api_key_env", "JUDGE_API_KEY")
    page.fill("#id_template_overall", "Which is better? VERDICT: A or B")
    page.click("button[value=preview]")
    assert "The template lacks the placeholders {prompt}, {answer_a}, {answer_b}." in page.inner_text("main")
    page.screenshot(path=str(artifacts_dir / "judge-form-refused.png"), full_page=True)
    page.fill(
        "#id_template_overall",
        "Question: {prompt}\n\nAnswer A: {answer_a}\n\nAnswer B: {answer_b}\n\nEnd with VERDICT: A, B or TIE.",
    )
    page.click("button[value=preview]")
    preview = page.locator("pre.judge-preview").first.inner_text()
    assert "Answer A: A careful answer number" in preview or "Answer A: A short answer" not in preview
    page.screenshot(path=str(artifacts_dir / "judge-form-preview.png"), full_page=True)
    page.click("button[value=save]")
    page.wait_for_selector("text=Judge “strict judge” saved.")
    assert Judge.objects.get(name="strict judge").api_key_env == "JUDGE_API_KEY"
    assert page.locator("button", has_text="Start judging").count() == 1
    page.screenshot(path=str(artifacts_dir / "judge-detail.png"), full_page=True)

    page.goto(f"{live_server.url}/manage/judge-jobs/{failed.pk}/")
    assert "answered HTTP 503: down for maintenance" in page.inner_text("main")
    assert page.locator("button", has_text="Resume").count() == 1
    page.screenshot(path=str(artifacts_dir / "judge-job-failed.png"), full_page=True)

    page.context.clear_cookies()
    log_in(page, live_server.url, "rex")
    page.goto(f"{live_server.url}/stats/{campaign.pk}/judges/{seen.pk}/")
    main = page.inner_text("main")
    # Five of six pairs keep their verdict when swapped; the judge agrees with the humans on four of six.
    assert "83%" in main and "67%" in main and "Judge-only leaderboard" in main and "Human leaderboard" in main
    assert page.locator("#criterion-overall table.confusion").count() == 1
    page.screenshot(path=str(artifacts_dir / "judge-calibration.png"), full_page=True)
    assert errors == []
