"""Document collections for retrieval (RAG) variants: uploads in, an index built by a worker out."""

import hashlib
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.db import transaction

from evaluator.errors import ServiceError
from evaluator.models import Document, DocumentCollection, JobStatus
from evaluator.services.jobs import job_finish, job_start
from workers.tasks import index_collection as index_collection_task

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
            index_collection_task.delay_on_commit(locked.pk)
    return added


def collection_index_run(*, collection_id: int) -> None:
    """Chunk, embed and index a document collection into the shared artifacts folder.

    Only a queued build starts: a redelivered one finds it running or ended and leaves it. A build lost with its
    worker stays running until a new document queues the next one.
    """
    from training.rag import build_index

    if not job_start(model=DocumentCollection, job_id=collection_id, redelivered_ok=False):
        return
    collection = DocumentCollection.objects.get(pk=collection_id)
    documents = list(collection.documents.order_by("pk").values_list("name", "text"))
    info = build_index(
        documents,
        Path(settings.ARTIFACTS_DIR) / "collections" / str(collection.pk),
        embedding_model=collection.embedding_model,
        chunk_size=collection.chunk_size,
        chunk_overlap=collection.chunk_overlap,
    )
    job_finish(model=DocumentCollection, job_id=collection_id, index_dir=str(info.index_dir), chunk_count=info.chunks)
