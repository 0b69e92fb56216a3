"""Document collections for retrieval (RAG) variants: uploads in, an index built by a worker out."""

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction

from evaluator.artifacts import artifact_publish
from evaluator.errors import ServiceError
from evaluator.models import Document, DocumentCollection, DocumentUpload
from evaluator.services.jobs import job_fail, job_finish, job_progress, job_queue_again, job_send_on_commit, job_start
from workers.tasks import index_collection as index_collection_task

if TYPE_CHECKING:
    from training.rag import ExtractionLimits

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
        # Nothing to index yet: it waits for documents, not for a worker, so the reaper sends nothing for it.
        queued_at=None,
    )


def documents_add(*, collection: DocumentCollection, files: Sequence[tuple[str, bytes]]) -> int:
    """Store uploaded documents (text, markdown, PDF) and queue the collection's index to be built again.

    Only cheap checks run here (count, size, file type): the text is extracted by the index build, in a worker
    and under caps (`collection_index_run`), so no upload can hold a web request. Returns the number of files
    stored; a document whose text the collection already has is skipped by the build.
    """
    from training.rag import DocumentError, check_document_name

    if not files:
        raise ServiceError("Choose at least one document.")
    if len(files) > MAX_DOCUMENTS_PER_UPLOAD:
        raise ServiceError(f"At most {MAX_DOCUMENTS_PER_UPLOAD} documents per upload, got {len(files)}.")
    for name, data in files:
        try:
            check_document_name(name)
        except DocumentError as error:
            raise ServiceError(str(error)) from None
        if not data:
            raise ServiceError(f"{name}: an empty file.")
        if len(data) > settings.PREFLOOP_MAX_UPLOAD_BYTES:
            raise ServiceError(f"{name}: larger than {settings.PREFLOOP_MAX_UPLOAD_BYTES} bytes.")
    with transaction.atomic():
        locked = DocumentCollection.objects.select_for_update().get(pk=collection.pk)
        DocumentUpload.objects.bulk_create(
            DocumentUpload(collection=locked, name=name[:300], data=data) for name, data in files
        )
        job_queue_again(model=DocumentCollection, job_id=locked.pk)
        job_send_on_commit(task=index_collection_task, job=collection)
    return len(files)


def document_limits() -> "ExtractionLimits":
    """The caps on reading one uploaded document: the PREFLOOP_DOCUMENT_MAX_* settings (environment variables of
    the same names), whose defaults are the training library's."""
    from training.rag import ExtractionLimits

    return ExtractionLimits(
        max_pages=settings.PREFLOOP_DOCUMENT_MAX_PAGES,
        max_chars=settings.PREFLOOP_DOCUMENT_MAX_CHARS,
        max_content_bytes=settings.PREFLOOP_DOCUMENT_MAX_CONTENT_BYTES,
        max_seconds=settings.PREFLOOP_DOCUMENT_MAX_SECONDS,
        max_memory_bytes=settings.PREFLOOP_DOCUMENT_MAX_MEMORY_BYTES,
    )


def collection_index_run(*, collection_id: int) -> None:
    """Extract the text of the collection's uploaded files, then chunk, embed and index its documents into the
    shared artifacts folder.

    A file past a cap (pages, characters, decompressed content, seconds, memory: `document_limits`) or without
    readable text fails the build with the reason, naming the file and the cap, and none of the waiting files is
    added: the collection keeps the documents it had.

    A build lost with its worker is taken over by the next delivery (or the reaper's) once its holder is gone, and
    built again from the documents; one that finds the build held by a live worker waits (JobHeld).
    """
    from training.rag import build_index

    if not job_start(model=DocumentCollection, job_id=collection_id):
        return
    collection = DocumentCollection.objects.get(pk=collection_id)
    refused = _uploads_extract(collection)
    if refused:
        job_fail(model=DocumentCollection, job_id=collection_id, error=refused)
        return
    documents = list(collection.documents.order_by("pk").values_list("name", "text"))
    info = build_index(
        documents,
        Path(settings.ARTIFACTS_DIR) / "collections" / str(collection.pk),
        embedding_model=collection.embedding_model,
        chunk_size=collection.chunk_size,
        chunk_overlap=collection.chunk_overlap,
    )
    # Published before the build is marked finished: a generation on another machine fetches it from the store.
    index_dir = artifact_publish(info.index_dir)
    job_finish(model=DocumentCollection, job_id=collection_id, index_dir=index_dir, chunk_count=info.chunks)


def _uploads_extract(collection: DocumentCollection) -> str | None:
    """Turn the collection's waiting uploads into documents, all or none; the reason when one is refused."""
    from training.rag import DocumentError, extract_text_isolated

    limits = document_limits()
    uploads = list(collection.uploads.order_by("pk").values_list("pk", "name"))
    ids = [pk for pk, _ in uploads]
    documents = []
    for pk, name in uploads:
        # One file's bytes in memory at a time, each read in a child process that is killed past the time cap.
        data = bytes(DocumentUpload.objects.values_list("data", flat=True).get(pk=pk))
        try:
            text = extract_text_isolated(name, data, limits=limits)
        except DocumentError as error:
            DocumentUpload.objects.filter(pk__in=ids).delete()
            dropped = f"None of the {len(ids)} files waiting was added" if len(ids) > 1 else "The file was not added"
            return f"{error}. {dropped}; upload readable files again to rebuild the index."
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        documents.append(Document(collection=collection, name=name, text=text, sha256=digest))
        job_progress(model=DocumentCollection, job_id=collection.pk)  # a heartbeat: the holder is alive
    with transaction.atomic():
        Document.objects.bulk_create(documents, ignore_conflicts=True)
        DocumentUpload.objects.filter(pk__in=ids).delete()
    return None
