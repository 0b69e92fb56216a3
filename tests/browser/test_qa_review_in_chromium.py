"""Reviewing a Q&A pair in headless Chromium: the set's page shows each pair beside its chunk under the
Content-Security-Policy without errors, and an edited pair approved in place (HTMX) is stored with its reviewer;
screenshots kept under test-artifacts/."""

from pathlib import Path

import pytest
from django.utils import timezone

from evaluator.models import DocumentCollection, JobStatus, QAPair, QASet
from tests import factories
from tests.browser.test_model_pages_in_chromium import console_errors, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

CHUNK = (
    "The Vellmar archive keeps its paper stores below a humidity limit of 43 percent. Above that level mould can grow "
    "on rag paper within weeks, so the building's climate control logs the humidity every ten minutes.\n\n"
    "Visitors read originals only in the reading room, which opens at nine and closes at five."
)


def test_an_admin_edits_and_approves_a_pair_beside_its_chunk(live_server, page, artifacts_dir: Path) -> None:
    admin = factories.user("ada", "admin")
    collection = DocumentCollection.objects.create(
        name="Vellmar notes", status=JobStatus.SUCCEEDED, index_dir="/unused", chunk_count=2
    )
    qa_set = QASet.objects.create(
        collection=collection,
        variant=factories.variant(name="tiny · greedy"),
        status=JobStatus.SUCCEEDED,
        finished_at=timezone.now(),
        pairs_per_chunk=2,
        chunk_count=2,
        chunks_done=2,
        pair_count=3,
        dropped={"not a question": 1},
        created_by=admin,
    )
    questions = [
        ("What humidity limit do the paper stores keep?", "Below 43 percent."),
        ("How often is the humidity logged?", "Every ten minutes."),
        ("When does the reading room open?", "At nine, and it closes at five."),
    ]
    pairs = QAPair.objects.bulk_create(
        QAPair(qa_set=qa_set, document="vellmar.md", chunk_index=0, context=CHUNK, question=q, answer=a)
        for q, a in questions
    )
    errors = console_errors(page)
    log_in(page, live_server.url, "ada")

    page.goto(f"{live_server.url}/manage/qa/")
    assert "Vellmar notes" in page.locator("table.data").inner_text()
    page.screenshot(path=str(artifacts_dir / "qa-sets.png"), full_page=True)
    page.click(f"a[href='/manage/qa/{qa_set.pk}/']")
    page.wait_for_selector(".qa-pair")
    assert page.locator(".qa-pair").count() == 3
    assert "1 dropped: 1 not a question" in page.locator("#qa-progress").inner_text()
    page.screenshot(path=str(artifacts_dir / "qa-review.png"), full_page=True)

    card = page.locator(f"#pair-{pairs[0].pk}")
    assert "43 percent" in card.locator(".chunk-text").inner_text()
    card.locator("textarea[name=question]").fill("Below what humidity are the paper stores kept?")
    card.locator("button.approve").click()
    approved = page.locator(f"#pair-{pairs[0].pk} .status.approved")
    approved.wait_for(timeout=10_000)

    # Swapped in place: no page load, the other cards untouched.
    assert page.locator(".qa-pair").count() == 3
    assert "by ada" in page.locator(f"#pair-{pairs[0].pk}").inner_text()
    stored = QAPair.objects.get(pk=pairs[0].pk)
    assert (stored.question, stored.status, stored.edited) == (
        "Below what humidity are the paper stores kept?",
        "approved",
        True,
    )
    assert stored.reviewed_by == admin
    page.screenshot(path=str(artifacts_dir / "qa-review-approved.png"), full_page=True)
    assert errors == []
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(artifacts_dir / "qa-review-phone.png"), full_page=False)
