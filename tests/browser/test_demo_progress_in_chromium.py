"""The demo's progress page in headless Chromium: reached from the annotator's "nothing to rate" page, it follows
the job rows live through HTMX polling under the Content-Security-Policy, then offers the first pairs; screenshots
kept under test-artifacts/."""

from pathlib import Path

import pytest
from django.utils import timezone

from evaluator.models import GenerationJob, JobStatus, TrainingJob
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors, log_in
from tests.evaluator.test_demo_progress import demo_rows

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_an_annotator_follows_the_demo_preparation_until_the_first_pairs(
    live_server, page, artifacts_dir: Path
) -> None:
    factories.user("ann", "annotator")
    campaign, _ = demo_rows(
        training={"status": JobStatus.RUNNING, "progress_step": 4, "progress_total": 21, "dataset_size": 27},
        generation={"status": JobStatus.QUEUED, "total": 108},
    )
    errors = console_errors(page)
    log_in(page, live_server.url, "ann")

    page.click("text=Follow its progress")
    page.wait_for_selector("#step-training")
    assert "Step 4 of 21" in page.locator("#step-training").inner_text()
    assert page.locator("#step-generation .status").inner_text() == "Queued"

    # The worker moves on: the panel shows it without a reload.
    TrainingJob.objects.update(progress_step=15)
    GenerationJob.objects.update(status=JobStatus.RUNNING, done=36)
    page.locator("#step-training", has_text="Step 15 of 21").wait_for(timeout=10_000)
    assert "36 / 108" in page.locator("#step-generation").inner_text()
    page.screenshot(path=str(artifacts_dir / "demo-progress.png"), full_page=True)

    GenerationJob.objects.update(status=JobStatus.SUCCEEDED, done=108, finished_at=timezone.now())
    factories.comparison(campaign)
    page.wait_for_selector("text=First pairs ready", timeout=10_000)
    page.screenshot(path=str(artifacts_dir / "demo-progress-ready.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(artifacts_dir / "demo-progress-narrow.png"), full_page=True)
    page.click("text=Start rating")
    page.wait_for_url(f"{live_server.url}/rate/")
    assert errors == []
