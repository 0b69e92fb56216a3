"""The workers page in headless Chromium against a real Celery worker process: the worker's row with its queues,
device and the job its process holds, a job held by a silent worker, and the table refreshed by HTMX every 5 s
under the Content-Security-Policy; the screenshot is kept under test-artifacts/workers.png."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from evaluator.models import GenerationJob, JobStatus, TrainingJob
from evaluator.selectors.workers import workers_overview
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]


def test_the_workers_page_lists_the_worker_and_refreshes(
    live_server, page, artifacts_dir: Path, celery_worker_process
) -> None:
    factories.user("ada", "admin")
    worker = next(found for found in workers_overview().workers if found.pid == celery_worker_process.pid)
    campaign = factories.campaign(name="Heritage")
    now = timezone.now()
    held = TrainingJob.objects.create(
        campaign=campaign,
        parent_variant=factories.variant(name="tiny · greedy"),
        status=JobStatus.RUNNING,
        worker=f"{worker.host}:{worker.processes[0]}",
        heartbeat_at=now,
        started_at=now,
        attempts=1,
    )
    GenerationJob.objects.create(
        campaign=campaign,
        status=JobStatus.RUNNING,
        worker="gpu-box-2:5120",
        heartbeat_at=now - timedelta(minutes=14),
        started_at=now - timedelta(hours=1),
        attempts=2,
    )
    errors = console_errors(page)
    log_in(page, live_server.url, "ada")

    page.goto(f"{live_server.url}/manage/")
    page.click("text=Workers")
    row = page.locator(f"#workers-live tr:has-text('{worker.name}')")
    assert "default, gpu" in row.inner_text() and held.__str__() in row.inner_text()
    assert "gpu-box-2:5120" in page.locator("#workers-live").inner_text()
    asked = page.locator("#workers-live h2").first.inner_text()
    # The poll replaces the table with a fresh answer (a new "asked at" time).
    page.wait_for_function(
        "text => document.querySelector('#workers-live h2').innerText !== text", arg=asked, timeout=15_000
    )
    assert worker.name in page.locator("#workers-live").inner_text()
    page.screenshot(path=str(artifacts_dir / "workers.png"), full_page=True)
    assert errors == []
