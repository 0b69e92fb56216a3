"""Q&A sets: a job has a model write question–answer pairs from each chunk of an indexed collection (on the tiny
model, and on a scripted generator whose replies parse), admins review and edit them beside their chunk, and the
approved pairs become campaign prompts with references, an SFT download, or a retrain's SFT data."""

import itertools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone

from evaluator.artifacts import artifact_local
from evaluator.errors import ServiceError
from evaluator.models import DocumentCollection, JobStatus, Prompt, QAPair, QASet, TrainingJob
from evaluator.services.collections import collection_create, documents_add
from evaluator.services.qa_sets import qa_pair_review, qa_pairs_to_prompts, qa_set_queue
from tests import factories
from training import generation
from training.qa import DUPLICATE, NO_PAIRS, NOT_A_QUESTION
from training.rag import CHUNKS_FILE
from training.sft import sft_records_from_qa
from workers.tasks import generate_qa_pairs, index_collection

pytestmark = pytest.mark.django_db
NUMBERS = itertools.count(1)

CHUNKS = [
    {"document": "vellmar.md", "chunk": 0, "text": "The Vellmar archive keeps its paper below 43 percent humidity."},
    {"document": "vellmar.md", "chunk": 1, "text": "Its reading room opens at nine and closes at five."},
    {"document": "bees.txt", "chunk": 0, "text": "Honey bees show the way to flowers with a waggle dance."},
]
# What the scripted model answers for each chunk: two good pairs, a good pair and a repeat of an earlier question,
# and one pair whose question is no question.
REPLIES = {
    "humidity": "Q: Below what humidity is the paper kept?\nA: 43 percent.\n\nQ: Who keeps the paper?\nA: The archive.",
    "reading room": "Q: When does the reading room open?\nA: At nine.\n\nQ: Who keeps the paper?\nA: Vellmar.",
    "bees": "Q: Tell me about bees.\nA: They dance.",
}


def built_index(folder: Path, rows: list[dict[str, Any]] = CHUNKS) -> DocumentCollection:
    """An indexed collection whose chunks are `rows` (a Q&A job reads only the index's chunks.jsonl)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CHUNKS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return DocumentCollection.objects.create(
        name=f"Notes {next(NUMBERS)}", status=JobStatus.SUCCEEDED, index_dir=str(folder), chunk_count=len(rows)
    )


class ScriptedGenerator:
    """Stands in for a loaded model: answers each chunk's request with its REPLIES entry, and notes the calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def answer(self, adapter_key: str, requests: list[Any], settings: Any, **_: Any) -> list[SimpleNamespace]:
        assert settings.greedy
        self.calls.append([request.key for request in requests])
        return [
            SimpleNamespace(text=next(reply for key, reply in REPLIES.items() if key in request.prompt))
            for request in requests
        ]


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedGenerator:
    model = ScriptedGenerator()
    monkeypatch.setattr(generation, "open_generator", lambda *args, **kwargs: model)
    monkeypatch.setattr("evaluator.services.qa_sets.QA_CHUNK_BATCH", 2)
    return model


def a_set_with_pairs(admin_user, tmp_path: Path, count: int = 3) -> QASet:
    qa_set = QASet.objects.create(
        collection=built_index(tmp_path / "set"),
        variant=factories.variant(),
        status=JobStatus.SUCCEEDED,
        finished_at=timezone.now(),
        created_by=admin_user,
    )
    QAPair.objects.bulk_create(
        QAPair(
            qa_set=qa_set,
            document="vellmar.md",
            chunk_index=number,
            context=f"Chunk {number} of the Vellmar notes.",
            question=f"Question {number}?",
            answer=f"Answer {number}.",
        )
        for number in range(count)
    )
    return qa_set


# The job -----------------------------------------------------------------------------------------------------


def test_queueing_refuses_a_collection_that_is_not_indexed_yet_and_stores_nothing(admin_user) -> None:
    collection = DocumentCollection.objects.create(name="Unindexed")  # queued: no index yet

    with pytest.raises(ServiceError, match="The collection “Unindexed” is not indexed yet \\(queued\\)"):
        qa_set_queue(collection=collection, variant=factories.variant(), pairs_per_chunk=2, created_by=admin_user)

    assert not QASet.objects.exists()


def test_a_run_on_the_tiny_model_ends_succeeded_and_says_why_it_kept_no_pairs(tiny_model_dir: Path, admin_user) -> None:
    collection = collection_create(name="Archive", embedding_model="all-MiniLM-L6-v2", chunk_size=300, chunk_overlap=30)
    files = [
        ("vellmar.md", b"# Vellmar\n\nThe Vellmar archive keeps its paper below 43 percent humidity.\n"),
        ("bees.txt", b"Honey bees show the way to flowers with a waggle dance."),
    ]
    documents_add(collection=collection, files=files)
    index_collection.run(collection.pk)
    collection.refresh_from_db()
    variant = factories.variant(base_model=str(tiny_model_dir))
    qa_set = qa_set_queue(collection=collection, variant=variant, pairs_per_chunk=1, created_by=admin_user)

    # Through Celery's tracer, in this process: the task's failure policy (JobTask) applies.
    generate_qa_pairs.apply((qa_set.pk,)).get()

    qa_set.refresh_from_db()
    assert qa_set.status == JobStatus.SUCCEEDED and qa_set.error == ""
    assert qa_set.chunk_count == qa_set.chunks_done == collection.chunk_count == 2
    # The tiny model writes word-like noise, never "Q: …" / "A: …" lines: nothing is kept, and the set says why.
    assert qa_set.pair_count == 0 and not qa_set.pairs.exists()
    assert qa_set.dropped == {NO_PAIRS: 2}
    assert qa_set.sample_output.strip()


def test_a_run_stores_each_kept_pair_with_its_chunk_and_counts_the_drops(
    scripted: ScriptedGenerator, admin_user, tmp_path: Path
) -> None:
    collection = built_index(tmp_path / "index")
    qa_set = qa_set_queue(collection=collection, variant=factories.variant(), pairs_per_chunk=2, created_by=admin_user)

    generate_qa_pairs.apply((qa_set.pk,)).get()

    qa_set.refresh_from_db()
    assert qa_set.status == JobStatus.SUCCEEDED
    assert scripted.calls == [["0", "1"], ["0"]]  # two chunks a call
    assert (qa_set.chunk_count, qa_set.chunks_done, qa_set.pair_count) == (3, 3, 3)
    assert qa_set.dropped == {DUPLICATE: 1, NOT_A_QUESTION: 1}
    pairs = list(qa_set.pairs.values_list("document", "chunk_index", "context", "question", "answer", "status"))
    assert pairs == [
        ("vellmar.md", 0, CHUNKS[0]["text"], "Below what humidity is the paper kept?", "43 percent.", "pending"),
        ("vellmar.md", 0, CHUNKS[0]["text"], "Who keeps the paper?", "The archive.", "pending"),
        ("vellmar.md", 1, CHUNKS[1]["text"], "When does the reading room open?", "At nine.", "pending"),
    ]


def test_a_redelivered_run_goes_on_after_the_last_stored_batch(
    scripted: ScriptedGenerator, admin_user, tmp_path: Path
) -> None:
    qa_set = qa_set_queue(
        collection=built_index(tmp_path / "index"),
        variant=factories.variant(),
        pairs_per_chunk=2,
        created_by=admin_user,
    )
    generate_qa_pairs.apply((qa_set.pk,)).get()
    kept = list(qa_set.pairs.values_list("pk", "question"))
    # The worker was lost after storing the first batch (chunks 0 and 1): the task is delivered again.
    QASet.objects.filter(pk=qa_set.pk).update(
        status=JobStatus.RUNNING,
        finished_at=None,
        chunks_done=2,
        pair_count=3,
        dropped={DUPLICATE: 1},
        worker="a-lost-host:1",
        heartbeat_at=None,
    )
    scripted.calls.clear()

    generate_qa_pairs.apply((qa_set.pk,)).get()

    qa_set.refresh_from_db()
    assert scripted.calls == [["0"]]  # only the third chunk was asked for again
    assert qa_set.status == JobStatus.SUCCEEDED and qa_set.pair_count == 3
    assert list(qa_set.pairs.values_list("pk", "question")) == kept
    assert qa_set.dropped == {DUPLICATE: 1, NOT_A_QUESTION: 1}


def test_a_run_whose_index_is_gone_fails_the_job_with_the_reason(admin_user, tmp_path: Path) -> None:
    collection = DocumentCollection.objects.create(
        name="Moved", status=JobStatus.SUCCEEDED, index_dir=str(tmp_path / "gone"), chunk_count=3
    )
    qa_set = qa_set_queue(collection=collection, variant=factories.variant(), pairs_per_chunk=1, created_by=admin_user)

    with pytest.raises(ValueError, match="is not a Prefloop index"):
        generate_qa_pairs.apply((qa_set.pk,)).get()

    qa_set.refresh_from_db()
    assert qa_set.status == JobStatus.FAILED and "missing chunks.jsonl" in qa_set.error
    assert not qa_set.pairs.exists()


# Review ------------------------------------------------------------------------------------------------------


def test_a_review_edits_and_approves_a_pair_and_records_who_and_when(client, admin_user, tmp_path: Path) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path)
    pair = qa_set.pairs.first()
    client.force_login(admin_user)

    response = client.post(
        f"/manage/qa/{qa_set.pk}/pairs/{pair.pk}/",
        {"question": " Question 0, reworded? ", "answer": "Answer 0.", "status": "approved"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 200
    pair.refresh_from_db()
    assert (pair.question, pair.answer, pair.status, pair.edited) == (
        "Question 0, reworded?",
        "Answer 0.",
        "approved",
        True,
    )
    assert pair.reviewed_by == admin_user and pair.reviewed_at is not None
    html = response.content.decode()
    assert f'id="pair-{pair.pk}"' in html and "Approved" in html and "by ada" in html and "edited" in html
    # A decision alone leaves the text, and the edited flag, as they were.
    other = qa_set.pairs.last()
    qa_pair_review(pair=other, question=other.question, answer=other.answer, status="rejected", by=admin_user)
    other.refresh_from_db()
    assert (other.status, other.edited) == ("rejected", False)


def test_a_review_with_an_empty_answer_is_refused_and_changes_nothing(client, admin_user, tmp_path: Path) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path)
    pair = qa_set.pairs.first()
    client.force_login(admin_user)

    response = client.post(
        f"/manage/qa/{qa_set.pk}/pairs/{pair.pk}/",
        {"question": "Question 0?", "answer": "   ", "status": "approved"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 400 and "This field is required." in response.content.decode()
    with pytest.raises(ServiceError, match="needs a question and an answer"):
        qa_pair_review(pair=pair, question="", answer="An answer.", status="approved", by=admin_user)
    pair.refresh_from_db()
    assert (pair.answer, pair.status, pair.reviewed_by, pair.edited) == ("Answer 0.", "pending", None, False)


def test_the_review_page_shows_each_pair_with_its_chunk_filtered_by_status(
    client, admin_user, tmp_path: Path, django_assert_max_num_queries
) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path, count=12)
    for pair in qa_set.pairs.all()[:4]:
        qa_pair_review(pair=pair, question=pair.question, answer=pair.answer, status="approved", by=admin_user)
    client.force_login(admin_user)

    with django_assert_max_num_queries(9):  # however many pairs: no query per pair
        pending = client.get(f"/manage/qa/{qa_set.pk}/").content.decode()
    approved = client.get(f"/manage/qa/{qa_set.pk}/?status=approved").content.decode()

    assert pending.count('class="card qa-pair"') == 8 and approved.count('class="card qa-pair"') == 4
    assert "Chunk 11 of the Vellmar notes." in pending and "Chunk 11 of the Vellmar notes." not in approved
    assert "Pending (8)" in pending and "Approved (4)" in pending and "All (12)" in pending
    assert "by ada" in approved


def test_the_progress_poll_runs_while_the_job_runs_and_stops_once_it_has_ended(
    client, admin_user, tmp_path: Path
) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path)
    QASet.objects.filter(pk=qa_set.pk).update(status=JobStatus.RUNNING, finished_at=None, chunk_count=3, chunks_done=1)
    client.force_login(admin_user)

    page = client.get(f"/manage/qa/{qa_set.pk}/").content.decode()
    running = client.get(f"/manage/qa/{qa_set.pk}/", headers={"HX-Request": "true"})
    QASet.objects.filter(pk=qa_set.pk).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now(), chunks_done=3)
    ended = client.get(f"/manage/qa/{qa_set.pk}/", headers={"HX-Request": "true"})

    assert f'hx-get="/manage/qa/{qa_set.pk}/" hx-trigger="every 3s"' in page
    assert running.status_code == 200 and "1 of 3 chunks" in running.content.decode()
    assert ended.status_code == 286 and "3 of 3 chunks" in ended.content.decode()


def test_forged_ids_get_404_and_a_pair_of_another_set_is_not_reviewed_through_this_one(
    client, admin_user, tmp_path: Path
) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path / "a")
    other = a_set_with_pairs(admin_user, tmp_path / "b")
    foreign = other.pairs.first()
    client.force_login(admin_user)
    review = {"question": "Q?", "answer": "A.", "status": "approved"}

    assert client.post(f"/manage/qa/{qa_set.pk}/pairs/{foreign.pk}/", review).status_code == 404
    assert client.post(f"/manage/qa/{qa_set.pk}/pairs/999999/", review).status_code == 404
    for url in ("/manage/qa/999999/", "/manage/qa/999999/approved.jsonl"):
        assert client.get(url).status_code == 404
    assert client.post("/manage/qa/999999/to-campaign/", {}).status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == "pending" and foreign.reviewed_by is None


def test_only_admins_reach_the_qa_pages(client, annotator, researcher, outsider, admin_user, tmp_path: Path) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path)
    pair = qa_set.pairs.first()
    for user in (annotator, researcher, outsider):
        client.force_login(user)
        for url in ("/manage/qa/", f"/manage/qa/{qa_set.pk}/", f"/manage/qa/{qa_set.pk}/approved.jsonl"):
            assert client.get(url).status_code == 403, (user, url)
        review = {"question": "Q?", "answer": "A.", "status": "approved"}
        assert client.post(f"/manage/qa/{qa_set.pk}/pairs/{pair.pk}/", review).status_code == 403
        assert client.post("/manage/qa/new/", {}).status_code == 403
    pair.refresh_from_db()
    assert pair.status == "pending"


def test_the_start_form_queues_a_job_and_refuses_an_unindexed_collection_with_its_reason(
    client, admin_user, tmp_path: Path
) -> None:
    variant = factories.variant()
    unindexed = DocumentCollection.objects.create(name="Fresh")
    client.force_login(admin_user)

    refused = client.post("/manage/qa/new/", {"collection": unindexed.pk, "variant": variant.pk, "pairs_per_chunk": 3})
    assert "not indexed yet" in client.get(refused["Location"]).content.decode()
    assert not QASet.objects.exists()

    collection = built_index(tmp_path / "index")
    response = client.post(
        "/manage/qa/new/", {"collection": collection.pk, "variant": variant.pk, "pairs_per_chunk": 3}
    )
    qa_set = QASet.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/manage/qa/{qa_set.pk}/"
    assert (qa_set.collection, qa_set.variant, qa_set.pairs_per_chunk, qa_set.created_by) == (
        collection,
        variant,
        3,
        admin_user,
    )
    assert qa_set.status == JobStatus.QUEUED
    assert f'href="/manage/qa/{qa_set.pk}/"' in client.get("/manage/qa/").content.decode()


# Using the approved pairs ---------------------------------------------------------------------------------------


def test_approved_pairs_become_prompts_with_their_answer_as_reference_and_their_chunk_as_context(
    client, admin_user, tmp_path: Path
) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path)
    first, second, third = qa_set.pairs.order_by("pk")
    qa_pair_review(pair=first, question="Edited question?", answer="Edited answer.", status="approved", by=admin_user)
    qa_pair_review(pair=second, question=second.question, answer=second.answer, status="rejected", by=admin_user)
    campaign = factories.campaign()
    client.force_login(admin_user)

    response = client.post(f"/manage/qa/{qa_set.pk}/to-campaign/", {"campaign": campaign.pk})

    assert response.status_code == 302 and response["Location"] == f"/manage/campaigns/{campaign.pk}/"
    rows = list(campaign.prompts.values_list("external_id", "text", "reference", "context"))
    assert rows == [(f"qa-{qa_set.pk}-{first.pk}", "Edited question?", "Edited answer.", first.context)]
    # Approving another later adds only that one; with nothing new, nothing is added and the admin is told.
    qa_pair_review(pair=third, question=third.question, answer=third.answer, status="approved", by=admin_user)
    assert qa_pairs_to_prompts(qa_set=qa_set, campaign=campaign) == 1
    with pytest.raises(ServiceError, match=r"in “.*” already"):
        qa_pairs_to_prompts(qa_set=qa_set, campaign=campaign)
    assert Prompt.objects.filter(campaign=campaign).count() == 2


def test_a_set_without_approved_pairs_adds_no_prompt_and_has_nothing_to_download(
    client, admin_user, tmp_path: Path
) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path)
    campaign = factories.campaign()
    client.force_login(admin_user)

    added = client.post(f"/manage/qa/{qa_set.pk}/to-campaign/", {"campaign": campaign.pk}, follow=True)
    download = client.get(f"/manage/qa/{qa_set.pk}/approved.jsonl")

    assert "has no approved pairs yet" in added.content.decode() and not campaign.prompts.exists()
    assert download.status_code == 409 and b"nothing to download" in download.content


def test_the_sft_download_of_the_approved_pairs_reads_back_through_the_sft_reader(
    client, admin_user, tmp_path: Path
) -> None:
    qa_set = a_set_with_pairs(admin_user, tmp_path)
    first, second, _ = qa_set.pairs.order_by("pk")
    line_separated = "It keeps\u2028two lines."
    qa_pair_review(pair=first, question=first.question, answer=line_separated, status="approved", by=admin_user)
    qa_pair_review(pair=second, question=second.question, answer=second.answer, status="approved", by=admin_user)
    client.force_login(admin_user)

    response = client.get(f"/manage/qa/{qa_set.pk}/approved.jsonl")

    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="qa-set-{qa_set.pk}-approved.jsonl"'
    path = tmp_path / "download.jsonl"
    path.write_bytes(response.content)
    assert sft_records_from_qa(path) == [
        {"messages": [{"role": "user", "content": "Question 0?"}, {"role": "assistant", "content": line_separated}]},
        {"messages": [{"role": "user", "content": "Question 1?"}, {"role": "assistant", "content": "Answer 1."}]},
    ]
    first_line = json.loads(response.content.decode().split("\n")[0])
    assert (first_line["document"], first_line["chunk"], first_line["context"]) == (
        "vellmar.md",
        0,
        "Chunk 0 of the Vellmar notes.",
    )


def test_an_sft_retrain_can_train_on_the_approved_pairs_of_a_qa_set(
    client, admin_user, tmp_path: Path, settings
) -> None:
    from tests.evaluator.test_training_pages import RETRAIN

    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    qa_set = a_set_with_pairs(admin_user, tmp_path)
    pair = qa_set.pairs.first()
    qa_pair_review(pair=pair, question=pair.question, answer=pair.answer, status="approved", by=admin_user)
    campaign = factories.campaign()
    factories.prompt(campaign)
    parent = factories.variant()
    client.force_login(admin_user)
    data = {**RETRAIN, "parent_variant": parent.pk, "method": "sft", "sft_source": "qa", "qa_set": qa_set.pk}

    response = client.post(f"/manage/campaigns/{campaign.pk}/retrain/", data)

    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/manage/jobs/{job.pk}/"
    assert job.config["sft_source"] == "qa"
    assert sft_records_from_qa(artifact_local(job.config["qa_path"])) == [
        {"messages": [{"role": "user", "content": "Question 0?"}, {"role": "assistant", "content": "Answer 0."}]}
    ]
