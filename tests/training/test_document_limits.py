"""Reading uploaded documents under caps: pages, characters, decompressed page content, and (in a child process)
time; a decompression bomb is refused in well under a second, naming the cap."""

import re
import time
import zlib

import pytest

from training.rag import DocumentError, ExtractionLimits, extract_text, extract_text_isolated

LINE = b"(The Vellmar archive keeps its paper below 43 percent humidity.) Tj T*\n"


def pdf_with_content(content: bytes, *, pages: int = 1) -> bytes:
    """A hand-written PDF whose pages all show one FlateDecode content stream (compressed here)."""
    stream = zlib.compress(content, 9)
    kids = " ".join(f"{5 + page} 0 R" for page in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        *(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
            b" /Resources << /Font << /F1 3 0 R >> >> >>"
            for _ in range(pages)
        ),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def text_page(repeats: int) -> bytes:
    return b"BT /F1 12 Tf 14 TL 72 720 Td\n" + LINE * repeats + b"ET"


def decompression_bomb() -> bytes:
    """About 16 KB of PDF whose one page inflates to some 4.6 MB of text-showing operators."""
    return pdf_with_content(text_page(65_000))


def test_a_decompression_bomb_is_refused_before_any_page_is_parsed_naming_the_cap() -> None:
    bomb = decompression_bomb()
    assert len(bomb) < 20_000

    started = time.perf_counter()
    with pytest.raises(DocumentError) as refused:
        extract_text_isolated("bomb.pdf", bomb)

    assert time.perf_counter() - started < 5
    assert re.fullmatch(
        r"bomb\.pdf: its page content decompresses to more than the cap of 4,000,000 bytes \(by page 1\)",
        str(refused.value),
    )


def test_a_document_still_being_read_at_the_time_cap_is_stopped_naming_the_cap() -> None:
    # Under the content cap, but pypdf takes far longer than a twentieth of a second over its half a megabyte of
    # operators, however quiet the machine.
    slow = pdf_with_content(text_page(8_000))
    limits = ExtractionLimits(max_seconds=0.05)

    started = time.perf_counter()
    with pytest.raises(
        DocumentError, match=r"^slow\.pdf: extracting its text took longer than the cap of 0\.05 seconds$"
    ):
        extract_text_isolated("slow.pdf", slow, limits=limits)

    assert time.perf_counter() - started < 3


@pytest.mark.parametrize(
    ("name", "data", "limits", "message"),
    [
        (
            "long.pdf",
            pdf_with_content(text_page(40)),
            ExtractionLimits(max_chars=1_000),
            "more than the cap of 1,000 characters of text (by page 1)",
        ),
        (
            "thick.pdf",
            pdf_with_content(text_page(1), pages=4),
            ExtractionLimits(max_pages=3),
            "4 pages, over the cap of 3 pages",
        ),
        (
            "long.txt",
            b"word " * 300,
            ExtractionLimits(max_chars=1_000),
            "1,500 characters of text, over the cap of 1,000",
        ),
    ],
)
def test_a_document_past_a_cap_is_refused_naming_the_cap(
    name: str, data: bytes, limits: ExtractionLimits, message: str
) -> None:
    with pytest.raises(DocumentError, match=re.escape(f"{name}: {message}")):
        extract_text(name, data, limits=limits)


def test_a_readable_document_comes_back_whole_from_the_child_process() -> None:
    text = extract_text_isolated("notes.pdf", pdf_with_content(text_page(3), pages=2))

    assert text.count("The Vellmar archive keeps its paper below 43 percent humidity.") == 6
    assert extract_text_isolated("café.md", "# Café\n\nNotes.".encode()) == "# Café\n\nNotes."
    with pytest.raises(DocumentError, match=r"^broken\.pdf: unreadable PDF"):
        extract_text_isolated("broken.pdf", b"%PDF-1.4\nnothing else")
