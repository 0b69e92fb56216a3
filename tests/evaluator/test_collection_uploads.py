"""Document uploads: the request only stores the files; the index build reads them in the worker under caps, and a
file it refuses fails the build with the reason, adding none of the waiting files."""

import hashlib
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from evaluator.errors import ServiceError
from evaluator.models import Document, DocumentCollection, DocumentUpload, JobStatus
from evaluator.services.collections import collection_create, documents_add
from tests.training.test_document_limits import decompression_bomb
from workers.tasks import index_collection

pytestmark = pytest.mark.django_db


@pytest.fixture
def collection() -> DocumentCollection:
    return collection_create(name="Archive", embedding_model="all-MiniLM-L6-v2", chunk_size=300, chunk_overlap=30)


def test_a_decompression_bomb_upload_returns_at_once_and_fails_the_build_naming_the_cap(
    client, admin_user, collection
) -> None:
    client.force_login(admin_user)
    client.get(f"/manage/collections/{collection.pk}/")  # the first request loads the views: not timed
    bomb = SimpleUploadedFile("bomb.pdf", decompression_bomb(), content_type="application/pdf")

    started = time.perf_counter()
    response = client.post(f"/manage/collections/{collection.pk}/documents/", {"files": [bomb]})

    # The file is stored, not read: the request took 68 s when it extracted the text itself.
    assert time.perf_counter() - started < 5
    assert response.status_code == 302
    assert list(DocumentUpload.objects.values_list("name", flat=True)) == ["bomb.pdf"]
    assert not Document.objects.exists()
    assert DocumentCollection.objects.get(pk=collection.pk).status == JobStatus.QUEUED

    index_collection.run(collection.pk)

    collection.refresh_from_db()
    assert collection.status == JobStatus.FAILED
    assert collection.error == (
        "bomb.pdf: its page content decompresses to more than the cap of 4,000,000 bytes (by page 1). "
        "The file was not added; upload readable files again to rebuild the index."
    )
    assert not DocumentUpload.objects.exists() and not Document.objects.exists()
    page = client.get(f"/manage/collections/{collection.pk}/").content.decode()
    assert "more than the cap of 4,000,000 bytes" in page


def test_a_build_with_one_unreadable_file_adds_none_of_the_waiting_files(collection) -> None:
    kept = Document.objects.create(
        collection=collection, name="kept.md", text="Kept.", sha256=hashlib.sha256(b"Kept.").hexdigest()
    )
    files = [("good.txt", b"Readable text."), ("bad.pdf", b"%PDF-1.4 this is not a PDF")]
    assert documents_add(collection=collection, files=files) == 2

    index_collection.run(collection.pk)

    collection.refresh_from_db()
    assert collection.status == JobStatus.FAILED
    assert collection.error.startswith("bad.pdf: unreadable PDF")
    assert "None of the 2 files waiting was added" in collection.error
    assert list(collection.documents.all()) == [kept]
    assert not collection.uploads.exists()


def test_a_build_under_a_lower_character_cap_set_in_settings_names_that_cap(collection, settings) -> None:
    settings.PREFLOOP_DOCUMENT_MAX_CHARS = 10
    documents_add(collection=collection, files=[("notes.md", b"Eleven characters and more.")])

    index_collection.run(collection.pk)

    collection.refresh_from_db()
    assert collection.status == JobStatus.FAILED
    assert collection.error.startswith("notes.md: 27 characters of text, over the cap of 10.")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("report.docx", b"PK", "report.docx: unsupported file type '.docx'"),
        ("empty.txt", b"", "empty.txt: an empty file."),
    ],
)
def test_a_file_refused_at_upload_stores_nothing_and_queues_nothing(
    collection, name: str, data: bytes, message: str
) -> None:
    queued_at = collection.queued_at
    with pytest.raises(ServiceError, match=message):
        documents_add(collection=collection, files=[("fine.md", b"Fine."), (name, data)])

    assert not DocumentUpload.objects.exists()
    collection.refresh_from_db()
    assert collection.queued_at == queued_at, "the build was not queued again"


def test_the_upload_form_names_a_file_of_another_type(client, admin_user, collection) -> None:
    client.force_login(admin_user)
    files = [SimpleUploadedFile("ok.md", b"# Fine"), SimpleUploadedFile("tool.exe", b"MZ\x90\x00")]

    response = client.post(f"/manage/collections/{collection.pk}/documents/", {"files": files}, follow=True)

    assert "tool.exe: not a .txt, .md, .markdown, .pdf file. Nothing was added." in response.content.decode()
    assert not DocumentUpload.objects.exists()
