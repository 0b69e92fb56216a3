"""Document collections for retrieval (RAG) variants: uploads in, an index built by a worker out."""

import hashlib
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evaluator.assignments import ServiceError
from evaluator.models import Document, DocumentCollection, JobStatus

MAX_DOCUMENTS_PER_UPLOAD = 200


def collection_create(
    *, name: str, description: str = "", embedding_model: str, chunk_size: int, chunk_overlap: int
) -> DocumentCollection:
    """A new, empty collection; its index is built once documents are added."""
    from training.rag import check_chunking

    try:
        check_chunking(size=chunk_size, overlap=chunk_overlap)
    except ValueError as error:
        raise ServiceError(f"Chunking: {error}.") from None
    if DocumentCollection.objects.filter(name=name).exists():
        raise ServiceError(f"A collection named “{name}” already exists.")
    return DocumentCollection.objects.create(
        name=name,
        description=description,
        embedding_model=embedding_model,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )


def documents_add(*, collection: DocumentCollection, files: Sequence[tuple[str, bytes]]) -> int:
    """Add uploaded documents (text, markdown, PDF) and queue the collection's index to be built again.

    All or nothing: a file that holds no readable text refuses the whole upload, naming the file. A document
    whose text the collection already has is skipped. Returns the number of new documents.
    """
    from training.rag import DocumentError, extract_text
    from workers.tasks import index_collection

    if not files:
        raise ServiceError("Choose at least one document.")
    if len(files) > MAX_DOCUMENTS_PER_UPLOAD:
        raise ServiceError(f"At most {MAX_DOCUMENTS_PER_UPLOAD} documents per upload, got {len(files)}.")
    documents = []
    for name, data in files:
        if len(data) > settings.PREFLOOP_MAX_UPLOAD_BYTES:
            raise ServiceError(f"{name}: larger than {settings.PREFLOOP_MAX_UPLOAD_BYTES} bytes.")
        try:
            text = extract_text(name, data)
        except DocumentError as error:
            raise ServiceError(str(error)) from None
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        documents.append(Document(collection=collection, name=name[:300], text=text, sha256=digest))
    with transaction.atomic():
        locked = DocumentCollection.objects.select_for_update().get(pk=collection.pk)
        before = locked.documents.count()
        Document.objects.bulk_create(documents, ignore_conflicts=True)
        added = locked.documents.count() - before
        if added:
            locked.status, locked.finished_at, locked.error = JobStatus.QUEUED, None, ""
            locked.save(update_fields=["status", "finished_at", "error"])
            index_collection.delay_on_commit(locked.pk)
    return added


def collection_index_start(*, collection_id: int) -> DocumentCollection | None:
    """Claim a queued index build; None when another delivery has it or there is nothing to build.

    A build lost with its worker stays running until a new document queues the next one.
    """
    updated = DocumentCollection.objects.filter(pk=collection_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING
    )
    return DocumentCollection.objects.get(pk=collection_id) if updated else None


def collection_index_finish(*, collection_id: int, index_dir: str, chunks: int) -> None:
    DocumentCollection.objects.filter(pk=collection_id, status=JobStatus.RUNNING).update(
        status=JobStatus.SUCCEEDED, index_dir=index_dir, chunk_count=chunks, finished_at=timezone.now()
    )


def collection_index_fail(*, collection_id: int, error: str) -> None:
    DocumentCollection.objects.filter(pk=collection_id).update(
        status=JobStatus.FAILED, error=error[:5000], finished_at=timezone.now()
    )
