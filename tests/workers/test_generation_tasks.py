"""The generation and indexing tasks on the tiny model: a redelivered task fills only what is missing (in this
process, and on a real worker whose process is killed mid-job), each variant answers as many samples as it asks
for, a worker set to vLLM without vLLM fails the job whole, and a retrieval variant's answers carry the passages
its prompt was given."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from evaluator.models import Candidate, Comparison, DocumentCollection, GenerationJob, JobStatus, ModelVariant
from evaluator.selectors.rating import answers_identical
from evaluator.services.collections import collection_create, documents_add
from evaluator.services.generation import candidate_seed, generation_job_samples
from evaluator.services.jobs import worker_identity
from evaluator.services.variants import variant_create
from tests import factories
from tests.conftest import database_url, start_worker, wait_until_ready
from training.generation import vllm
from workers.tasks import generate_candidates, index_collection

pytestmark = pytest.mark.django_db(transaction=True)

SHORT = {"max_new_tokens": 6, "temperature": 0.8, "top_p": 0.95}


def queued_generation(campaign, variants, samples_per_prompt: int | None = None) -> GenerationJob:
    """A queued job whose task this test runs itself (no broker message, so no worker races it); without
    `samples_per_prompt` each variant gives its own count."""
    job = GenerationJob.objects.create(campaign=campaign, samples_per_prompt=samples_per_prompt)
    job.variants.set(variants)
    job.total = campaign.prompts.count() * sum(generation_job_samples(job=job).values())
    job.save(update_fields=["total"])
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


def distinct_pairs(answers: dict[tuple[int, int, int], tuple[int, str]], variants: list[ModelVariant]) -> int:
    """How many (prompt, sample) pairs of the two variants' answers differ in text."""
    first, second = (variant.pk for variant in variants)
    return sum(
        not answers_identical(text, answers[(prompt_id, second, sample)][1])
        for (prompt_id, variant_id, sample), (_, text) in answers.items()
        if variant_id == first
    )


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
    # Sample i meets sample i; a pair whose two six-token answers read the same is never made.
    assert Comparison.objects.filter(campaign=campaign).count() == distinct_pairs(first, variants) > 0

    # The worker died after storing part of the answers (its process is gone): the broker delivers the task again.
    lost = Candidate.objects.filter(variant=variants[0], sample_index=1)
    lost_keys = set(lost.values_list("prompt_id", "variant_id", "sample_index"))
    Comparison.objects.filter(campaign=campaign).delete()
    lost.delete()
    gone = f"{worker_identity().rpartition(':')[0]}:{dead_pid()}"
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, finished_at=None, worker=gone)
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


def test_each_variant_answers_its_own_number_of_samples_and_every_answer_is_paired(tiny_model_dir: Path) -> None:
    campaign = factories.campaign()
    for _ in range(2):
        factories.prompt(campaign)
    sampled = factories.variant(base_model=str(tiny_model_dir), generation_settings={**SHORT, "samples_per_prompt": 3})
    greedy = factories.variant(base_model=str(tiny_model_dir), generation_settings={**SHORT, "temperature": 0.0})
    job = queued_generation(campaign, [sampled, greedy])

    generate_candidates.run(job.pk)

    assert sorted(sampled.candidates.values_list("sample_index", flat=True)) == [0, 0, 1, 1, 2, 2]
    assert list(greedy.candidates.values_list("sample_index", flat=True)) == [0, 0]
    assert {c.generation_settings["samples_per_prompt"] for c in sampled.candidates.all()} == {3}
    # Each of the three sampled answers meets the greedy variant's one answer to the same prompt, unless the two
    # read the same: such a pair is never made (a six-token sample of the tiny model can equal the greedy answer).
    greedy_text = {candidate.prompt_id: candidate.text for candidate in greedy.candidates.all()}
    differing = {
        candidate.pk
        for candidate in sampled.candidates.all()
        if not answers_identical(candidate.text, greedy_text[candidate.prompt_id])
    }
    comparisons = Comparison.objects.filter(campaign=campaign)
    assert differing and comparisons.count() == len(differing)
    assert all(c.candidate_a.prompt_id == c.candidate_b.prompt_id == c.prompt_id for c in comparisons)
    assert set(comparisons.values_list("candidate_a", flat=True)) == differing
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.done == job.total == 2 * (3 + 1)


@pytest.mark.skipif(vllm.available(), reason="vLLM is installed here; the test is about a worker without it")
def test_a_worker_set_to_vllm_without_vllm_fails_the_job_saying_how_to_install_it(
    tiny_model_dir: Path, settings
) -> None:
    settings.PREFLOOP_GENERATION_BACKEND = "vllm"
    campaign = factories.campaign()
    factories.prompt(campaign)
    variants = [factories.variant(base_model=str(tiny_model_dir), generation_settings=SHORT) for _ in range(2)]
    job = queued_generation(campaign, variants)

    # Through Celery's tracer, in-process: the task's failure policy (JobTask.on_failure) records the reason.
    with pytest.raises(vllm.VLLMUnavailableError):
        generate_candidates.apply((job.pk,)).get()

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.finished_at is not None
    assert "vLLM, which is not installed here: run `pip install vllm` on a CUDA GPU worker" in job.error
    assert "or set PREFLOOP_GENERATION_BACKEND=transformers" in job.error
    assert not Candidate.objects.exists() and not Comparison.objects.exists()


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def pool_children(pid: int) -> list[int]:
    """The child processes of a Celery worker's main process: its pool, one process at concurrency 1."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.worker
def test_a_generation_task_whose_worker_process_is_killed_is_redelivered_and_fills_only_the_gaps(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    campaign = factories.campaign()
    for _ in range(8):
        factories.prompt(campaign)
    # Answered one at a time (batch size 1), so that each variant's 16 answers take seconds and the worker can be
    # killed between the first variant's answers being stored and the second's.
    settings_ = {**SHORT, "max_new_tokens": 16, "samples_per_prompt": 2}
    first, second = (factories.variant(base_model=str(tiny_model_dir), generation_settings=settings_) for _ in "ab")
    job = queued_generation(campaign, [first, second])
    queue = f"generation-redelivery-{os.getpid()}"  # a queue of its own: no other test worker takes the task
    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict), "PREFLOOP_GENERATION_BATCH_SIZE": "1"}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = start_worker(env, log, "--hostname", f"{queue}@%h", queues=queue)
        try:
            wait_until_ready(log_path, worker)
            generate_candidates.apply_async((job.pk,), queue=queue)
            deadline = time.monotonic() + 180
            while (stored := Candidate.objects.count()) < 16:
                assert time.monotonic() < deadline, f"no answers stored in time:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.05)
            assert stored < 32, "the job ended before its worker process could be killed"
            kept = dict(Candidate.objects.values_list("pk", "text"))
            [child] = pool_children(worker.pid)
            os.kill(child, signal.SIGKILL)

            # The worker's main process sees its child lost and puts the task back (late ack, reject on worker
            # lost); a fresh child takes it and generates only the missing answers.
            deadline = time.monotonic() + 300
            while GenerationJob.objects.get(pk=job.pk).status in (JobStatus.QUEUED, JobStatus.RUNNING):
                assert time.monotonic() < deadline, f"the job did not finish:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.2)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.done == job.total == Candidate.objects.count() == 8 * 2 * 2
    assert all(Candidate.objects.get(pk=pk).text == text for pk, text in kept.items()), "stored answers are kept"
    assert Comparison.objects.filter(campaign=campaign).count() == job.comparisons_created == 8 * 2
    text = log_path.read_text()
    assert "WorkerLostError" in text and "signal 9 (SIGKILL)" in text
    # The first delivery set out to answer both variants; the redelivered one only the variant it had not stored.
    assert text.count(f"16 answers of variant {first.pk} to generate") == 1
    assert text.count(f"16 answers of variant {second.pk} to generate") == 2
    assert text.count("succeeded in") == 1, "the job was done once, by the redelivered task"


def test_a_retrieval_variant_answers_with_the_passages_retrieved_for_its_prompt(tiny_model_dir: Path) -> None:
    collection = collection_create(
        name="Archive notes", embedding_model="all-MiniLM-L6-v2", chunk_size=300, chunk_overlap=30
    )
    planted = "The Vellmar archive keeps its paper stores below a humidity limit of 43 percent."
    files = [
        ("vellmar.md", f"# Vellmar\n\n{planted}\n".encode()),
        ("bees.txt", b"Honey bees communicate the direction of flowers with a waggle dance."),
        ("trains.txt", b"The first steam locomotive ran on rails in 1804 in Wales."),
    ]
    assert documents_add(collection=collection, files=files) == 3
    collection = wait_until_indexed(collection)
    assert collection.status == JobStatus.SUCCEEDED and collection.chunk_count >= 3

    campaign = factories.campaign()
    factories.prompt(campaign, text="What humidity limit does the Vellmar archive keep?")
    plain = factories.variant(base_model=str(tiny_model_dir), generation_settings=SHORT)
    rag = variant_create(
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
