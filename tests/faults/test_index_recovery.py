"""A worker SIGKILLed while it indexes a document collection (its text extraction running in a child process): the
reaper notices the silent holder, another worker builds the index again from the uploads, and the collection ends
with each document once and each of its chunks once.

Real processes only, as the rest of the fault suite (tests/faults/conftest.py). Run alone: `pytest tests/faults`.
"""

import json
from pathlib import Path

import pytest
from django.conf import settings

from evaluator.models import Document, DocumentCollection, DocumentUpload, JobStatus
from evaluator.services.collections import collection_create, documents_add
from tests.faults.conftest import Stack, wait_for
from training.launch import descendants

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

TOPICS = ("bees", "trains", "tides", "glaciers", "comets", "ferns", "owls", "rivers")


def collection_of(collection: DocumentCollection) -> DocumentCollection:
    return DocumentCollection.objects.get(pk=collection.pk)


def extracting(pool: list[int]) -> bool:
    """True while a child of the worker's pool extracts a document's text (`python -m training.rag extract`)."""
    for pid in (child for parent in pool for child in descendants(parent)):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"training.rag" in command and b"extract" in command:
            return True
    return False


def test_a_worker_killed_mid_index_is_noticed_by_the_reaper_and_its_collection_is_indexed_exactly_once(
    stack: Stack,
) -> None:
    collection = collection_create(
        name="Field notes", embedding_model="all-MiniLM-L6-v2", chunk_size=200, chunk_overlap=20
    )
    files = [
        (f"{topic}.md", f"# {topic.title()}\n\n{f'Notes on {topic}, paragraph {number}. ' * 12}\n".encode())
        for number, topic in enumerate(TOPICS)
    ]
    lost = stack.worker("lost")
    documents_add(collection=collection, files=files)
    wait_for(lambda: collection_of(collection).status == JobStatus.RUNNING, "the build to start", stack)
    wait_for(lambda: extracting(lost.pids()[1:]), "a document's text extraction", stack)

    # Main process and pool at once: only the reaper can notice, from the heartbeat that stopped.
    survivor = stack.worker("survivor", ready=False)
    stack.beat()
    lost.kill()
    survivor.wait_ready()

    ended = (JobStatus.SUCCEEDED, JobStatus.FAILED)
    wait_for(lambda: collection_of(collection).status in ended, "the build to end", stack, timeout=180)
    collection = collection_of(collection)
    assert collection.status == JobStatus.SUCCEEDED, f"{collection.error}\n{stack.logs()}"
    assert collection.attempts == 2
    assert f"evaluator.DocumentCollection {collection.pk}: holder" in survivor.log
    assert sorted(Document.objects.filter(collection=collection).values_list("name", flat=True)) == sorted(
        name for name, _ in files
    )
    assert not DocumentUpload.objects.filter(collection=collection).exists()
    chunks_file = Path(settings.ARTIFACTS_DIR) / "collections" / str(collection.pk) / "chunks.jsonl"
    chunks = [json.loads(line) for line in chunks_file.read_text(encoding="utf-8").splitlines()]
    assert len(chunks) == collection.chunk_count > len(files)
    keys = [(chunk["document"], chunk["chunk"]) for chunk in chunks]
    assert len(set(keys)) == len(keys), "no chunk was indexed twice"
    assert {chunk["document"] for chunk in chunks} == {name for name, _ in files}
