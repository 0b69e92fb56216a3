"""Document uploads: the request only stores the files; the index build reads them in the worker under caps, and a
file it refuses fails the build with the reason, adding none of the waiting files."""

import hashlib
import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from evaluator.errors import ServiceError
from evaluator.models import Document, DocumentCollection, DocumentUpload, JobStatus
from evaluator.services.collections import collection_create, documents_add
from tests.conftest import run_python
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


def test_the_document_caps_are_the_training_librarys_unless_the_environment_sets_them() -> None:
    from evaluator.services.collections import document_limits
    from training.rag import DEFAULT_LIMITS

    assert document_limits() == DEFAULT_LIMITS

    show = (
        "import dataclasses, json, django; django.setup(); "
        "from evaluator.services.collections import document_limits; "
        "print(json.dumps(dataclasses.asdict(document_limits())))"
    )
    caps = {"PAGES": "7", "CHARS": "500", "CONTENT_BYTES": "9000", "SECONDS": "2.5", "MEMORY_BYTES": "268435456"}
    result = run_python(show, **{f"PREFLOOP_DOCUMENT_MAX_{name}": value for name, value in caps.items()})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "max_pages": 7,
        "max_chars": 500,
        "max_content_bytes": 9000,
        "max_seconds": 2.5,
        "max_memory_bytes": 268435456,
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PREFLOOP_DOCUMENT_MAX_PAGES", "many", "PREFLOOP_DOCUMENT_MAX_PAGES='many' is not an integer"),
        ("PREFLOOP_DOCUMENT_MAX_CHARS", "0", "PREFLOOP_DOCUMENT_MAX_CHARS=0 must be at least 1"),
        ("PREFLOOP_DOCUMENT_MAX_SECONDS", "0", "PREFLOOP_DOCUMENT_MAX_SECONDS=0 must be a finite number above 0"),
    ],
)
def test_a_bad_document_cap_in_the_environment_is_refused_by_name(name: str, value: str, message: str) -> None:
    result = run_python("import prefloop.settings", **{name: value})
    assert result.returncode != 0 and message in result.stderr
