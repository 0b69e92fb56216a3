"""The generation and indexing tasks, run in this process on the tiny model: a redelivered task fills only what is
missing, and a retrieval variant's answers carry the passages its prompt was given."""

import time
from pathlib import Path

import pytest

from evaluator import retrieval, services
from evaluator.models import Candidate, Comparison, DocumentCollection, GenerationJob, JobStatus
from tests import factories
from workers.tasks import candidate_seed, generate_candidates, index_collection

pytestmark = pytest.mark.django_db(transaction=True)

SHORT = {"max_new_tokens": 6, "temperature": 0.8, "top_p": 0.95}


def queued_generation(campaign, variants, samples_per_prompt: int = 1) -> GenerationJob:
    """A queued job whose task this test runs itself (no broker message, so no worker races it)."""
    job = GenerationJob.objects.create(
        campaign=campaign,
        samples_per_prompt=samples_per_prompt,
        total=campaign.prompts.count() * len(variants) * samples_per_prompt,
    )
    job.variants.set(variants)
    return job


def wait_until_indexed(collection: DocumentCollection, timeout: float = 120) -> DocumentCollection:
    """Index the collection here, unless a running test worker took the queued build first; then wait for it."""
    index_collection.run(collection.pk)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        collection.refresh_from_db()
        if collection.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
            return collection
        time.sleep(0.2)
    pytest.fail("the collection was not indexed in time")


def test_a_redelivered_generation_task_fills_only_the_missing_candidates(tiny_model_dir: Path) -> None:
    campaign = factories.campaign()
    for _ in range(3):
        factories.prompt(campaign)
    variants = [
        factories.variant(base_model=str(tiny_model_dir), generation_settings=SHORT),
        factories.variant(base_model=str(tiny_model_dir), generation_settings={**SHORT, "temperature": 0.0}),
    ]
    job = queued_generation(campaign, variants, samples_per_prompt=2)
    generate_candidates.run(job.pk)
    first = {(c.prompt_id, c.variant_id, c.sample_index): (c.pk, c.text) for c in Candidate.objects.all()}
    assert len(first) == 3 * 2 * 2
    assert Comparison.objects.filter(campaign=campaign).count() == 3 * 2

    # The worker died after storing part of the answers: the broker delivers the task again.
    lost = Candidate.objects.filter(variant=variants[0], sample_index=1)
    lost_keys = set(lost.values_list("prompt_id", "variant_id", "sample_index"))
    Comparison.objects.filter(campaign=campaign).delete()
    lost.delete()
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, finished_at=None)
    generate_candidates.run(job.pk)

    again = {(c.prompt_id, c.variant_id, c.sample_index): (c.pk, c.text) for c in Candidate.objects.all()}
    assert again.keys() == first.keys()
    kept = first.keys() - lost_keys
    assert all(again[key] == first[key] for key in kept), "existing answers are left as they were"
    # Each candidate's seed is fixed by what it answers, so a regenerated answer is the one that was lost.
    assert all(again[key][1] == first[key][1] for key in lost_keys)
    assert all(
        c.seed == candidate_seed(c.prompt, c.variant, c.sample_index) for c in Candidate.objects.select_related()
    )
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.done == job.total == 12


def test_a_finished_generation_job_delivered_again_does_nothing(tiny_model_dir: Path) -> None:
    campaign = factories.campaign()
    factories.prompt(campaign)
    variants = [factories.variant(base_model=str(tiny_model_dir), generation_settings=SHORT) for _ in range(2)]
    job = queued_generation(campaign, variants)
    generate_candidates.run(job.pk)
    before = list(Candidate.objects.order_by("pk").values_list("pk", "text"))
    generate_candidates.run(job.pk)
    assert list(Candidate.objects.order_by("pk").values_list("pk", "text")) == before


def test_a_retrieval_variant_answers_with_the_passages_retrieved_for_its_prompt(tiny_model_dir: Path) -> None:
    collection = retrieval.collection_create(
        name="Archive notes", embedding_model="all-MiniLM-L6-v2", chunk_size=300, chunk_overlap=30
    )
    planted = "The Vellmar archive keeps its paper stores below a humidity limit of 43 percent."
    files = [
        ("vellmar.md", f"# Vellmar\n\n{planted}\n".encode()),
        ("bees.txt", b"Honey bees communicate the direction of flowers with a waggle dance."),
        ("trains.txt", b"The first steam locomotive ran on rails in 1804 in Wales."),
    ]
    assert retrieval.documents_add(collection=collection, files=files) == 3
    collection = wait_until_indexed(collection)
    assert collection.status == JobStatus.SUCCEEDED and collection.chunk_count >= 3

    campaign = factories.campaign()
    factories.prompt(campaign, text="What humidity limit does the Vellmar archive keep?")
    plain = factories.variant(base_model=str(tiny_model_dir), generation_settings=SHORT)
    rag = services.variant_create(
        name="tiny + archive",
        base_model=str(tiny_model_dir),
        generation_settings=SHORT,
        collection=collection,
        retrieval_top_k=2,
    )
    generate_candidates.run(queued_generation(campaign, [plain, rag]).pk)

    answer = Candidate.objects.get(variant=rag)
    assert len(answer.retrieved) == 2
    assert answer.retrieved[0]["document"] == "vellmar.md" and planted in answer.retrieved[0]["text"]
    assert Candidate.objects.get(variant=plain).retrieved == []
    # The retrieved passages were in the prompt the model saw.
    assert answer.prompt_tokens > Candidate.objects.get(variant=plain).prompt_tokens + 20


def test_an_upload_with_an_unreadable_file_is_refused_whole() -> None:
    collection = retrieval.collection_create(
        name="Mixed", embedding_model="all-MiniLM-L6-v2", chunk_size=300, chunk_overlap=30
    )
    files = [("good.txt", b"Readable text."), ("bad.pdf", b"%PDF-1.4 this is not a PDF")]
    with pytest.raises(services.ServiceError, match=r"bad\.pdf"):
        retrieval.documents_add(collection=collection, files=files)
    assert not collection.documents.exists()
    assert DocumentCollection.objects.get(pk=collection.pk).status == JobStatus.QUEUED
