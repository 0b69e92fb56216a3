"""The admin's model pages in headless Chromium: the job page with its chart polls and then stops, the family tree
and a collection render under the Content-Security-Policy without errors; screenshots kept under test-artifacts/."""

from pathlib import Path

import pytest

from evaluator.models import Document, DocumentCollection, JobStatus, TrainingJob
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def console_errors(page) -> list[str]:
    errors: list[str] = []
    # Any Content-Security-Policy violation is a console error; the missing favicon is no concern here.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "favicon" not in message.location.get("url", "")
            else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def log_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_the_job_page_refreshes_while_running_and_the_tree_and_collection_render(
    live_server, page, artifacts_dir: Path, annotator
) -> None:
    factories.user("ada", "admin")
    campaign = factories.campaign(name="Heritage")
    parent = factories.variant(name="tiny · greedy")
    metrics = [
        {
            "step": step,
            "epoch": step / 20,
            "max_steps": 20,
            "loss": 0.69 * 0.93**step,
            "rewards/chosen": 0.02 * step,
            "rewards/rejected": -0.03 * step,
            "rewards/margins": 0.05 * step,
            "rewards/accuracies": min(1.0, 0.4 + step / 20),
        }
        for step in range(1, 13)
    ]
    job = TrainingJob.objects.create(
        campaign=campaign,
        parent_variant=parent,
        status=JobStatus.RUNNING,
        metrics=metrics,
        progress_step=12,
        progress_total=20,
        attempts=1,
        worker="gpu0:4242",
        config={"training": {"beta": 0.1}, "selection": {}, "held_out_prompts": ["p1", "p2"]},
    )
    child = factories.variant(name="tiny · greedy · DPO #9", parent=parent, adapter_path="/a")
    for _ in range(6):
        factories.judgement(factories.comparison(campaign, variants=(parent, child)), annotator, "b")
    collection = DocumentCollection.objects.create(name="Heritage notes", status=JobStatus.SUCCEEDED, chunk_count=3)
    Document.objects.create(collection=collection, name="unesco.md", text="The World Heritage List…", sha256="0" * 64)
    errors = console_errors(page)
    log_in(page, live_server.url, "ada")

    page.goto(f"{live_server.url}/manage/jobs/{job.pk}/")
    assert page.locator("svg.chart polyline").count() == 5
    assert "step 12 of 20 (60%)" in page.locator("#job-live").inner_text()
    page.screenshot(path=str(artifacts_dir / "training-job-running.png"), full_page=True)
    # The page polls its live part; once the job ends the poll shows it and stops.
    TrainingJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, progress_step=20)
    page.wait_for_selector("#job-live .status.succeeded", timeout=15_000)
    page.wait_for_timeout(4_000)
    assert page.locator("#job-live").inner_text().count("step 20 of 20") == 1

    page.goto(f"{live_server.url}/manage/variants/")
    assert "6 / 0 / 0" in page.locator("table.tree").inner_text()
    page.screenshot(path=str(artifacts_dir / "variant-tree.png"), full_page=True)
    page.goto(f"{live_server.url}/manage/collections/{collection.pk}/")
    assert "unesco.md" in page.content()
    page.screenshot(path=str(artifacts_dir / "collection.png"), full_page=True)
    assert errors == []
