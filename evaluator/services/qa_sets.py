"""Q&A sets: a model writes question–answer pairs from each chunk of a document collection (training/qa.py, where
the prompt and the parser are documented); admins review and edit them; the approved pairs become campaign prompts
with reference answers, or an SFT dataset (evaluator.selectors.qa_sets)."""

import logging
from collections import Counter

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from evaluator.artifacts import artifact_fetch, model_source
from evaluator.errors import ServiceError
from evaluator.models import Campaign, DocumentCollection, JobStatus, ModelVariant, Prompt, QAPair, QASet
from evaluator.parsing.prompts import MAX_PROMPT_CHARS, PromptRow
from evaluator.services.imports import prompts_store
from evaluator.services.jobs import job_finish, job_progress, job_send_on_commit, job_start
from workers.tasks import generate_qa_pairs as generate_qa_pairs_task

logger = logging.getLogger(__name__)

# Chunks asked of the model in one call: a stored batch is what a lost worker loses at most.
QA_CHUNK_BATCH = 16
# How much of the first chunk's output the set keeps to show (QASet.sample_output).
SAMPLE_OUTPUT_CHARS = 2000
# The key under which the generator carries the variant's adapter.
ADAPTER_KEY = "qa"


def qa_set_queue(
    *, collection: DocumentCollection, variant: ModelVariant, pairs_per_chunk: int, created_by: User | None = None
) -> QASet:
    """Queue a job in which `variant` (its base model and adapter) writes `pairs_per_chunk` question–answer pairs
    from each chunk of `collection`, which must be indexed already."""
    from training.qa import MAX_PAIRS_PER_CHUNK

    if collection.status != JobStatus.SUCCEEDED or not collection.index_dir:
        state = collection.get_status_display().lower()
        raise ServiceError(f"The collection “{collection.name}” is not indexed yet ({state}): add documents and wait.")
    if not 1 <= pairs_per_chunk <= MAX_PAIRS_PER_CHUNK:
        raise ServiceError(f"Pairs per chunk must be from 1 to {MAX_PAIRS_PER_CHUNK}.")
    with transaction.atomic():
        qa_set = QASet.objects.create(
            collection=collection, variant=variant, pairs_per_chunk=pairs_per_chunk, created_by=created_by
        )
        job_send_on_commit(task=generate_qa_pairs_task, job=qa_set)
    return qa_set


def qa_set_run(*, qa_set_id: int) -> None:
    """Have the set's model write pairs from every chunk of its collection's index and store the kept ones, each
    with its chunk.

    Chunks go to the model in batches; each batch's pairs are stored with the progress (chunks done, pairs kept,
    drops by reason) in one transaction, so a redelivered task goes on after the last stored batch. A question
    that repeats one kept earlier in the set is dropped as a duplicate. Raises ValueError when the collection's
    index is gone or unreadable (the job fails with that reason).
    """
    from training.generation import open_generator
    from training.qa import DUPLICATE, parse_qa, qa_requests, qa_settings, question_key
    from training.rag import read_chunks

    if not job_start(model=QASet, job_id=qa_set_id):
        return
    qa_set = QASet.objects.select_related("collection", "variant").get(pk=qa_set_id)
    collection, variant = qa_set.collection, qa_set.variant
    if collection.status != JobStatus.SUCCEEDED or not collection.index_dir:
        raise ValueError(f"the collection “{collection.name}” is not indexed (it is {collection.status})")
    chunks = read_chunks(artifact_fetch(collection.index_dir))
    job_progress(model=QASet, job_id=qa_set_id, chunk_count=len(chunks))
    todo = range(min(qa_set.chunks_done, len(chunks)), len(chunks), QA_CHUNK_BATCH)
    logger.info("Q&A set %s: %d of %d chunks to go", qa_set_id, len(chunks) - todo.start, len(chunks))
    if todo:
        generator = open_generator(
            model_source(variant.base_model),
            {ADAPTER_KEY: model_source(variant.adapter_path) or None},
            quantization=variant.quantization,
            backend=settings.PREFLOOP_GENERATION_BACKEND,
            batch_size=settings.PREFLOOP_GENERATION_BATCH_SIZE,
        )
    decoding = qa_settings(qa_set.pairs_per_chunk)
    dropped = Counter(qa_set.dropped if isinstance(qa_set.dropped, dict) else {})
    seen = {question_key(question) for question in qa_set.pairs.values_list("question", flat=True)}
    sample = qa_set.sample_output
    for start in todo:
        batch = chunks[start : start + QA_CHUNK_BATCH]
        answers = generator.answer(ADAPTER_KEY, qa_requests(batch, qa_set.pairs_per_chunk), decoding)
        rows = []
        for chunk, answer in zip(batch, answers, strict=True):
            # PostgreSQL text cannot hold NUL, and a model may emit that byte.
            text = answer.text.replace("\x00", "\ufffd")
            sample = sample or text[:SAMPLE_OUTPUT_CHARS]
            for pair in parse_qa(text, dropped=dropped):
                key = question_key(pair.question)
                if key in seen:
                    dropped[DUPLICATE] += 1
                    continue
                seen.add(key)
                rows.append(
                    QAPair(
                        qa_set_id=qa_set_id,
                        document=chunk.document[:300],
                        chunk_index=chunk.chunk,
                        context=chunk.text,
                        question=pair.question,
                        answer=pair.answer,
                    )
                )
        with transaction.atomic():
            progressed = job_progress(
                model=QASet,
                job_id=qa_set_id,
                chunks_done=start + len(batch),
                pair_count=F("pair_count") + len(rows),
                dropped=dict(dropped),
                sample_output=sample,
            )
            if not progressed:
                return  # the job ended meanwhile: its pairs stay as they were
            QAPair.objects.bulk_create(rows)
    job_finish(model=QASet, job_id=qa_set_id, pair_count=QAPair.objects.filter(qa_set_id=qa_set_id).count())


def qa_pair_review(*, pair: QAPair, question: str, answer: str, status: str, by: User) -> QAPair:
    """Save a reviewer's question, answer and decision (pending, approved or rejected) on a pair, with who and when;
    the pair is marked edited once its text differs from what it was."""
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        raise ServiceError("A pair needs a question and an answer.")
    if "\x00" in question + answer:
        raise ServiceError("The question or the answer contains a NUL character.")
    if len(question) > MAX_PROMPT_CHARS:
        raise ServiceError(f"The question is longer than {MAX_PROMPT_CHARS} characters.")
    if status not in QAPair.Status.values:
        raise ServiceError(f"Unknown review decision {status!r}.")
    pair.edited = pair.edited or question != pair.question or answer != pair.answer
    pair.question, pair.answer, pair.status = question, answer, status
    pair.reviewed_by, pair.reviewed_at = by, timezone.now()
    pair.save(update_fields=["question", "answer", "status", "edited", "reviewed_by", "reviewed_at"])
    return pair


def qa_pairs_to_prompts(*, qa_set: QASet, campaign: Campaign) -> int:
    """Add the set's approved pairs to `campaign` as prompts: the question as the prompt, the answer as its
    reference and the chunk as its context, with the external id qa-<set>-<pair>. Pairs added before are left
    out; the rest are added all together or not at all. Returns how many were added."""
    approved = list(qa_set.pairs.filter(status=QAPair.Status.APPROVED).order_by("pk"))
    if not approved:
        raise ServiceError(f"{qa_set} has no approved pairs yet: approve some first.")
    rows = [
        PromptRow(
            external_id=f"qa-{qa_set.pk}-{pair.pk}", text=pair.question, reference=pair.answer, context=pair.context
        )
        for pair in approved
    ]
    present = set(
        Prompt.objects.filter(campaign=campaign, external_id__in=[row.external_id for row in rows]).values_list(
            "external_id", flat=True
        )
    )
    new = [row for row in rows if row.external_id not in present]
    if not new:
        raise ServiceError(f"Every approved pair of {qa_set} is in “{campaign.name}” already.")
    try:
        return prompts_store(campaign=campaign, rows=new)
    except IntegrityError:  # the same pairs added at the same moment by another request
        raise ServiceError("Some of these pairs were added meanwhile; nothing was added, try again.") from None
