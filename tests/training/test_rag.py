"""Retrieval: chunking at natural boundaries, document extraction, a real MiniLM + FAISS index that finds a planted
passage, persistence, batch search, prompt templates and the command line. No network, no mocks."""

import io
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from pypdf import PdfReader, PdfWriter

from training.rag import (
    CHUNKS_FILE,
    DEFAULT_TEMPLATE,
    INDEX_FILE,
    META_FILE,
    DocumentError,
    Passage,
    Retriever,
    build_index,
    check_template,
    chunk_text,
    extract_text,
    load_embedder,
    main,
    rag_messages,
    read_documents,
    resolve_embedding_model,
)

REPO = Path(__file__).resolve().parents[2]

# -- Chunking ----------------------------------------------------------------------------------------------------

WORDS = ["archive", "humidity", "paper", "vellum", "ink", "binding", "shelf", "climate", "record", "folio"]


def paragraph(seed: int, sentences: int) -> str:
    """Deterministic prose: sentences of 6 to 12 words, each ending with a full stop. Every word carries a number
    unique to its paragraph and position, so no stretch of text repeats and overlaps can be measured exactly."""
    out = []
    for s in range(sentences):
        length = 6 + (seed * 7 + s * 3) % 7
        words = [f"{WORDS[(seed + s * 5 + w * 3) % len(WORDS)]}{seed}x{s}x{w}" for w in range(length)]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def shared_length(previous: str, following: str) -> int:
    """The length of the longest suffix of `previous` that starts `following`."""
    for length in range(min(len(previous), len(following)), 0, -1):
        if previous.endswith(following[:length]):
            return length
    return 0


def test_every_chunk_fits_the_size_and_neighbours_share_whole_words_up_to_the_overlap() -> None:
    text = "\n\n".join(paragraph(seed, 3 + seed % 5) for seed in range(40))
    longest_word = max(len(word) for word in text.split())

    chunks = chunk_text(text, size=300, overlap=60)

    assert len(chunks) > 10
    assert all(0 < len(chunk) <= 300 and chunk == chunk.strip() for chunk in chunks)
    rebuilt = chunks[0].split()
    for previous, following in itertools.pairwise(chunks):
        shared = shared_length(previous, following)
        assert 60 - longest_word - 1 <= shared <= 60
        assert following[shared : shared + 1] in (" ", "\n")  # the shared text ends at a word end
        rebuilt += following[shared:].split()
    assert rebuilt == text.split()  # nothing lost, nothing repeated beyond the overlap


def test_chunks_end_at_paragraph_ends_when_paragraphs_fit() -> None:
    paragraphs = [paragraph(seed, 2) for seed in range(30)]

    chunks = chunk_text("\n\n".join(paragraphs), size=400, overlap=0)

    assert all(len(chunk) <= 400 for chunk in chunks)
    assert all(piece in paragraphs for chunk in chunks for piece in chunk.split("\n\n"))
    assert sum(len(chunk.split("\n\n")) for chunk in chunks) == len(paragraphs)


def test_a_paragraph_longer_than_a_chunk_is_cut_at_sentence_ends() -> None:
    text = paragraph(3, 40)
    sentences = re.findall(r"[^.]+\.", text)

    chunks = chunk_text(text, size=400, overlap=0)  # every sentence is shorter than half a chunk

    assert len(chunks) > 5
    assert all(chunk.endswith(".") and len(chunk) <= 400 for chunk in chunks)
    assert [s.strip() for chunk in chunks for s in re.findall(r"[^.]+\.", chunk)] == [s.strip() for s in sentences]


def test_a_sentence_longer_than_a_chunk_is_cut_between_words() -> None:
    text = " ".join(f"{WORDS[i % len(WORDS)]}{i}" for i in range(300))

    chunks = chunk_text(text, size=100, overlap=20)

    assert all(set(chunk.split()) <= set(text.split()) and len(chunk) <= 100 for chunk in chunks)
    assert {word for chunk in chunks for word in chunk.split()} == set(text.split())


def test_markdown_lines_without_full_stops_are_cut_at_line_ends() -> None:
    text = "\n".join(f"- item {number} on the packing list" for number in range(40))

    chunks = chunk_text(text, size=120, overlap=0)

    assert all(re.fullmatch(r"(- item \d+ on the packing list\n?)+", chunk) for chunk in chunks)


def test_a_word_longer_than_a_chunk_is_cut_at_the_size_and_keeps_the_overlap() -> None:
    chunks = chunk_text("x" * 130, size=50, overlap=10)

    assert chunks == ["x" * 50, "x" * 50, "x" * 50]


def test_small_and_empty_documents() -> None:
    assert chunk_text("  A short note.\r\n", size=50, overlap=10) == ["A short note."]
    assert chunk_text("", size=50, overlap=10) == []
    assert chunk_text(" \n\n\t ", size=50, overlap=10) == []


def test_a_huge_document_is_chunked_completely_and_deterministically() -> None:
    text = "\n\n".join(paragraph(seed, 2 + seed % 9) for seed in range(5000))  # about 4 MB

    chunks = chunk_text(text, size=800, overlap=120)

    # Every cut lies in the back half of its window, so a chunk advances at least size / 2 - overlap characters.
    assert len(text) / 800 < len(chunks) < len(text) / (400 - 120)
    assert text.startswith(chunks[0]) and text.endswith(chunks[-1])
    assert chunk_text(text, size=800, overlap=120) == chunks


@pytest.mark.parametrize(
    ("size", "overlap", "message"),
    [
        (49, 0, "chunk_size must be an integer >= 50, got 49"),
        (20001, 0, "chunk_size must be at most 20000"),
        ("800", 0, "chunk_size must be an integer >= 50, got '800'"),
        (100, 100, "chunk_overlap must be smaller than chunk_size (100), got 100"),
        (100, -1, "chunk_overlap must be an integer >= 0, got -1"),
        (100, True, "chunk_overlap must be an integer >= 0, got True"),
    ],
)
def test_it_rejects_bad_chunking_arguments(size: object, overlap: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        chunk_text("Some text.", size=size, overlap=overlap)  # type: ignore[arg-type]


# -- Documents ---------------------------------------------------------------------------------------------------


def pdf_bytes(pages: list[list[str]]) -> bytes:
    """A minimal hand-written PDF: one Helvetica text line per string, one page per list."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        shown = " ".join(f"({line}) Tj T*" for line in lines)
        content = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1")
        objects.append(f"<< /Length {len(content)} >>\nstream\n{content.decode('latin-1')}\nendstream")
        kids.append(len(objects) + 1)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objects)} 0 R"
            " /Resources << /Font << /F1 3 0 R >> >> >>"
        )
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{kid} 0 R' for kid in kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypted(pdf: bytes) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_it_extracts_utf8_text_and_markdown_with_normalized_line_ends() -> None:
    assert (
        extract_text("notes.txt", "\ufeffCafé au lait.\r\nSecond line.\r".encode()) == "Café au lait.\nSecond line.\n"
    )
    assert extract_text("README.MD", b"# Title\n\nBody.") == "# Title\n\nBody."
    assert extract_text("guide.markdown", b"Text") == "Text"


def test_it_extracts_the_text_of_every_page_of_a_pdf() -> None:
    pdf = pdf_bytes([["The Vellmar archive opened in 1911.", "Its reading room seats twelve."], ["Page two."]])

    text = extract_text("history.pdf", pdf)

    assert text == "The Vellmar archive opened in 1911.\nIts reading room seats twelve.\n\nPage two."


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "report.docx",
            b"PK",
            "report.docx: unsupported file type '.docx'; expected one of .txt, .md, .markdown, .pdf",
        ),
        ("Makefile", b"all:", "Makefile: unsupported file type (no file extension)"),
        ("latin.txt", "café".encode("latin-1"), "latin.txt: not UTF-8 text (invalid byte at offset 3)"),
        ("image.md", b"GIF89a\x00\x01", "image.md: not a text file (it contains NUL bytes)"),
        ("blank.md", b" \r\n\t", "blank.md: empty document"),
        ("broken.pdf", b"%PDF-1.4\nnothing else", "broken.pdf: unreadable PDF"),
        ("fake.pdf", b"plain text", "fake.pdf: unreadable PDF"),
        ("scan.pdf", pdf_bytes([[]]), "scan.pdf: no extractable text (a scanned PDF needs OCR first)"),
        ("locked.pdf", encrypted(pdf_bytes([["Secret."]])), "locked.pdf: the PDF is encrypted with a password"),
    ],
)
def test_it_rejects_documents_it_cannot_read_naming_the_file(name: str, data: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=re.escape(message)):
        extract_text(name, data)


def test_it_reads_supported_files_from_directories_and_named_files(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.md").write_text("Bee.")
    (tmp_path / "docs" / "sub" / "a.txt").write_text("Ay.")
    (tmp_path / "docs" / "sub" / "c.pdf").write_bytes(pdf_bytes([["Sea."]]))
    (tmp_path / "docs" / "skip.json").write_text("{}")
    (tmp_path / "single.txt").write_text("One.")

    documents = read_documents([tmp_path / "docs", tmp_path / "single.txt"])

    assert documents == [("b.md", "Bee."), ("sub/a.txt", "Ay."), ("sub/c.pdf", "Sea."), ("single.txt", "One.")]
    with pytest.raises(DocumentError, match="missing: no such file or directory"):
        read_documents([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DocumentError, match=r"empty: no \.txt, \.md, \.markdown, \.pdf files"):
        read_documents([tmp_path / "empty"])


# -- Index and retrieval -----------------------------------------------------------------------------------------

PLANTED = (
    "Visitors sometimes ask why the Vellmar archive feels so dry. Its conservators hold the relative humidity "
    "of the strongrooms below a limit of 43 percent, because the oak-gall ink in its medieval charters corrodes "
    "the parchment faster in damper air."
)
QUESTION = "What humidity limit does the Vellmar archive keep in its strongrooms?"

COLLECTION = {
    "conservation.md": [
        "The Korsby museum keeps its textile store at 55 percent relative humidity and 18 degrees, which suits "
        "wool and linen without encouraging mould.",
        "Light damage is cumulative: a watercolour shown at 50 lux for a year fades as much as one shown at 100 "
        "lux for six months, so museums rotate their works on paper.",
        "Pests such as clothes moths and carpet beetles are caught with sticky traps checked every month, and "
        "infested objects are frozen at minus 30 degrees for three days.",
        "Silica gel buffers the air inside a display case, taking up moisture when it is damp and giving it back "
        "when it is dry.",
        "Conservators document every treatment with photographs and notes so that later colleagues know what "
        "was done and can reverse it.",
    ],
    "cooking.txt": [
        "A sourdough starter needs flour and water fed daily; it is ready when it doubles within six hours of feeding.",
        "Risotto is stirred while hot stock is added a ladle at a time, which releases starch and makes the rice "
        "creamy.",
        "Caramel forms when sugar is heated beyond 160 degrees Celsius; cream stops the cooking and makes a sauce.",
        "Fresh pasta dough is one egg to a hundred grams of flour, kneaded until smooth and rested for half an hour.",
        "Pickling vegetables in brine lets lactic acid bacteria sour them over a week or two at room temperature.",
    ],
    "astronomy.md": [
        "Jupiter's Great Red Spot is a storm larger than the Earth that has been observed for centuries.",
        "A light year is the distance light travels in a year, about 9.46 trillion kilometres.",
        "The Moon always shows the same face to the Earth because its rotation is tidally locked to its orbit.",
        "Saturn's rings are made mostly of water ice, in pieces from dust grains to house-sized boulders.",
        "A total solar eclipse happens when the Moon covers the Sun completely, revealing the corona.",
    ],
    "sport.txt": [
        "A marathon is 42.195 kilometres long, a distance fixed at the 1908 London Olympics.",
        "In tennis a tie-break is played at six games all, and the first player to seven points with a two point "
        "lead wins the set.",
        "Cyclists in a peloton take turns at the front because riders behind save up to a third of their effort.",
        "Football's offside rule stops attackers from waiting near the goal behind the last defender.",
        "Rowing crews keep their strokes in time, following the rower nearest the stern.",
    ],
    "archives.md": [
        PLANTED,
        "Archivists keep records in the order their creator used, because that order is itself evidence of how "
        "the records were made and used.",
        "Acid-free boxes and folders protect paper records from the acids that make them brittle and brown.",
        "Digitisation widens access to fragile originals and reduces how often they are handled.",
        "A finding aid describes a collection's series, files and items so researchers can request what they need.",
    ],
    "garden.txt": [
        "Tomatoes need at least six hours of sun a day and regular watering to avoid split fruit.",
        "Compost heaps turn kitchen scraps and leaves into humus when they are kept moist and turned now and then.",
        "Roses are pruned in late winter just above an outward-facing bud to keep the centre of the bush open.",
        "Bees visit lavender and borage, so gardeners plant them near fruit trees to help pollination.",
        "Clay soil drains slowly; digging in grit and organic matter improves its structure over a few seasons.",
    ],
}
QUESTIONS = [
    QUESTION,
    "How long is a marathon?",
    "Why do archivists keep the original order of records?",
    "What temperature does caramel form at?",
    "What are Saturn's rings made of?",
]


def collection_documents() -> list[tuple[str, str]]:
    return [(name, "\n\n".join(paragraphs)) for name, paragraphs in COLLECTION.items()]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rag") / "collection"
    build_index(collection_documents(), out, chunk_size=300, chunk_overlap=60, batch_size=16)
    return out


@pytest.fixture(scope="module")
def retriever(index_dir: Path) -> Retriever:
    return Retriever.load(index_dir)


def test_the_default_model_name_resolves_to_the_bundled_copy_and_others_pass_through() -> None:
    bundled = Path(resolve_embedding_model("all-MiniLM-L6-v2"))

    assert (bundled / "model.safetensors").is_file() and (bundled / "modules.json").is_file()
    assert resolve_embedding_model("sentence-transformers/all-MiniLM-L6-v2") == str(bundled)
    assert resolve_embedding_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert resolve_embedding_model("/models/my-embedder") == "/models/my-embedder"


def test_the_index_directory_holds_vectors_chunks_and_metadata(index_dir: Path) -> None:
    meta = json.loads((index_dir / META_FILE).read_text())
    rows = [json.loads(line) for line in (index_dir / CHUNKS_FILE).read_text().splitlines()]
    index = faiss.read_index(str(index_dir / INDEX_FILE))

    assert len(rows) == index.ntotal == meta["chunks"]
    assert all(0 < len(row["text"]) <= 300 for row in rows)
    assert {key: meta[key] for key in ("embedding_model", "dimension", "chunk_size", "chunk_overlap", "documents")} == {
        "embedding_model": "all-MiniLM-L6-v2",
        "dimension": 384,
        "chunk_size": 300,
        "chunk_overlap": 60,
        "documents": len(COLLECTION),
    }
    assert meta["versions"]["faiss-cpu"] == faiss.__version__ and meta["versions"]["sentence-transformers"]
    for name in COLLECTION:
        numbers = [row["chunk"] for row in rows if row["document"] == name]
        assert numbers == list(range(len(numbers))) and numbers
    assert np.allclose(np.linalg.norm(index.reconstruct_n(0, index.ntotal), axis=1), 1.0, atol=1e-5)
    assert not [p for p in index_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_the_planted_passage_is_retrieved_first_for_its_question(retriever: Retriever) -> None:
    passages = retriever.search(QUESTION, k=3)

    assert len(passages) == 3
    assert passages[0].document == "archives.md" and "43 percent" in passages[0].text
    assert passages[0].score > passages[1].score
    assert all(isinstance(p, Passage) and -1.0 <= p.score <= 1.0 + 1e-5 for p in passages)


def test_scores_are_cosine_similarities_best_first_and_k_beyond_the_index_returns_every_chunk(
    retriever: Retriever, index_dir: Path
) -> None:
    rows = [json.loads(line) for line in (index_dir / CHUNKS_FILE).read_text().splitlines()]
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu")
    chunk_vectors = embedder.encode_document([row["text"] for row in rows], normalize_embeddings=True)
    query_vector = embedder.encode_query([QUESTION], normalize_embeddings=True)[0]
    cosine = chunk_vectors @ query_vector

    passages = retriever.search(QUESTION, k=1000)

    assert len(passages) == len(rows)
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    by_text = {row["text"]: float(score) for row, score in zip(rows, cosine, strict=True)}
    assert all(p.score == pytest.approx(by_text[p.text], abs=1e-4) for p in passages)


def test_a_rebuilt_and_reloaded_index_gives_identical_results(
    retriever: Retriever, index_dir: Path, tmp_path: Path
) -> None:
    build_index(collection_documents(), tmp_path / "again", chunk_size=300, chunk_overlap=60, batch_size=7)
    reloaded = Retriever.load(tmp_path / "again")

    assert (tmp_path / "again" / CHUNKS_FILE).read_bytes() == (index_dir / CHUNKS_FILE).read_bytes()
    for question in QUESTIONS:
        first, second = retriever.search(question, k=4), reloaded.search(question, k=4)
        assert [(p.document, p.chunk, p.text) for p in first] == [(p.document, p.chunk, p.text) for p in second]
        assert [p.score for p in first] == pytest.approx([p.score for p in second], abs=1e-5)


def test_search_many_equals_search_for_each_query(retriever: Retriever) -> None:
    batched = retriever.search_many(QUESTIONS, k=3)

    one_by_one = [retriever.search(question, k=3) for question in QUESTIONS]
    assert [[(p.document, p.chunk) for p in row] for row in batched] == [
        [(p.document, p.chunk) for p in row] for row in one_by_one
    ]
    assert [p.score for row in batched for p in row] == pytest.approx(
        [p.score for row in one_by_one for p in row], abs=1e-5
    )
    assert retriever.search_many([], k=3) == []


@pytest.mark.parametrize(
    ("queries", "k", "message"),
    [
        (["fine"], 0, "k must be an integer >= 1, got 0"),
        (["fine", "  "], 3, "queries[1] must be a non-empty string, got '  '"),
        ("one string", 3, "queries must be a sequence of strings, not one string"),
    ],
)
def test_search_rejects_bad_queries_and_k(retriever: Retriever, queries: object, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        retriever.search_many(queries, k)  # type: ignore[arg-type]


def test_it_reads_back_a_chunk_whose_text_holds_line_separators(tmp_path: Path) -> None:
    text = "Archive notes. A line\u2028separator, a paragraph\u2029separator and a next\x85line mark stay put."
    out = tmp_path / "index"
    build_index([("notes.md", text)], out, chunk_size=200, chunk_overlap=20)

    loaded = Retriever.load(out)

    assert "\u2028" in (out / CHUNKS_FILE).read_text(encoding="utf-8")  # written raw, not escaped
    assert loaded.chunks == [{"document": "notes.md", "chunk": 0, "text": text}]
    assert loaded.search("archive notes", 1)[0].text == text


def test_building_again_replaces_an_index_but_never_a_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "index"
    build_index([("a.txt", "Alpha paragraph about archives.")], out, chunk_size=100, chunk_overlap=10)
    info = build_index(
        [("a.txt", "Alpha."), ("b.txt", "Beta.")],
        out,
        chunk_size=100,
        chunk_overlap=10,
        embedding_model="sentence-transformers/all-MiniLM-L6-v2",
    )

    meta = json.loads((out / META_FILE).read_text())
    assert info.chunks == meta["chunks"] == 2
    assert meta["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert load_embedder(meta["embedding_model"], "cpu") is load_embedder("all-MiniLM-L6-v2", "cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not a Prefloop index"):
        build_index([("a.txt", "Alpha.")], foreign, chunk_size=100, chunk_overlap=10)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("documents", "options", "error", "message"),
    [
        ([], {}, ValueError, "documents must hold at least one (name, text) pair"),
        ([("a.txt", "Fine."), ("b.txt", " \n")], {}, DocumentError, "b.txt: empty document"),
        ([("a.txt", 3)], {}, ValueError, "documents[0] must be a (name, text) pair of strings"),
        ([("a.txt", "Fine.")], {"batch_size": 0}, ValueError, "batch_size must be an integer >= 1, got 0"),
        ([("a.txt", "Fine.")], {"chunk_overlap": 900}, ValueError, "chunk_overlap must be smaller"),
        (
            [("a.txt", "Fine.")],
            {"embedding_model": "/nonexistent/embedder"},
            ValueError,
            "cannot load embedding model '/nonexistent/embedder'",
        ),
    ],
)
def test_a_rejected_build_writes_nothing(
    tmp_path: Path, documents: list, options: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        build_index(documents, tmp_path / "index", **options)

    assert list(tmp_path.iterdir()) == []


def test_loading_refuses_a_directory_that_is_not_a_complete_index(index_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a Prefloop index: missing index\.faiss, chunks\.jsonl, meta\.json"):
        Retriever.load(tmp_path)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in (INDEX_FILE, META_FILE):
        (damaged / name).write_bytes((index_dir / name).read_bytes())
    (damaged / CHUNKS_FILE).write_text("\n".join((index_dir / CHUNKS_FILE).read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match="inconsistent index"):
        Retriever.load(damaged)


# -- Prompting ---------------------------------------------------------------------------------------------------


def test_rag_messages_number_the_passages_with_their_document_names() -> None:
    passages = [
        Passage(document="archives.md", chunk=0, text="The limit is 43 percent.", score=0.8),
        Passage(document="manual.pdf", chunk=4, text="Check the hygrometer daily.", score=0.5),
    ]

    messages = rag_messages("What is the limit?", passages)

    assert messages == [
        {
            "role": "user",
            "content": DEFAULT_TEMPLATE.replace(
                "{context}",
                "[1] archives.md\nThe limit is 43 percent.\n\n[2] manual.pdf\nCheck the hygrometer daily.",
            ).replace("{question}", "What is the limit?"),
        }
    ]
    assert rag_messages("Q?", passages, "") == rag_messages("Q?", passages, None) == rag_messages("Q?", passages)


def test_a_custom_template_is_filled_once_so_braces_in_the_text_stay_literal() -> None:
    passages = [Passage(document="a.md", chunk=0, text="Set {question} aside.", score=0.1)]

    messages = rag_messages("What does {context} mean?", passages, 'Q: {question}\nJSON: {"k": 1}\nC: {context}')

    assert messages[0]["content"] == 'Q: What does {context} mean?\nJSON: {"k": 1}\nC: [1] a.md\nSet {question} aside.'
    assert "(no passages found)" in rag_messages("Q?", [])[0]["content"]


@pytest.mark.parametrize(
    ("template", "missing"),
    [
        ("Answer {question} please.", "missing {context}"),
        ("Context: {context}", "missing {question}"),
        ("Nothing to fill in.", "missing {context}, {question}"),
        ("Spelled {Context} and { question }.", "missing {context}, {question}"),
    ],
)
def test_it_rejects_a_template_without_both_placeholders(template: str, missing: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"must contain {{context}} and {{question}}; {missing}")):
        check_template(template)
    with pytest.raises(ValueError, match=re.escape(missing)):
        rag_messages("Q?", [], template)


# -- Command line ------------------------------------------------------------------------------------------------


def test_the_command_line_builds_an_index_from_files_and_queries_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, paragraphs in COLLECTION.items():
        if name != "archives.md":
            (docs / name).write_text("\n\n".join(paragraphs), encoding="utf-8")
    (tmp_path / "vellmar.pdf").write_bytes(pdf_bytes([[PLANTED[:90], PLANTED[90:]]]))
    out = tmp_path / "index"

    assert main(["build", "--docs", str(docs), str(tmp_path / "vellmar.pdf"), "--out", str(out),
                 "--chunk-size", "400", "--chunk-overlap", "40"]) == 0  # fmt: skip
    built = json.loads(capsys.readouterr().out)
    assert main(["query", "--index", str(out), "--k", "2", QUESTION]) == 0
    found = json.loads(capsys.readouterr().out)

    assert built["documents"] == len(COLLECTION) and built["index_dir"] == str(out)
    assert len(found) == 2 and found[0]["document"] == "vellmar.pdf" and "43 percent" in found[0]["text"]
    assert set(found[0]) == {"document", "chunk", "text", "score"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["build", "--docs", "{tmp}/missing", "--out", "{tmp}/index"], "missing: no such file or directory"),
        (["build", "--docs", "{tmp}", "--out", "{tmp}/index", "--chunk-size", "40"], "chunk_size must be"),
        (["build", "--docs", "{tmp}/a.docx", "--out", "{tmp}/index"], "a.docx: unsupported file type '.docx'"),
        (["query", "--index", "{tmp}", "Q?"], "is not a Prefloop index: missing index.faiss"),
        (["query", "--index", "{tmp}", "--k", "0", "Q?"], "k must be an integer >= 1, got 0"),
    ],
)
def test_the_command_line_exits_2_with_a_clear_message_on_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    (tmp_path / "a.docx").write_bytes(b"PK")

    with pytest.raises(SystemExit) as exited:
        main([argument.replace("{tmp}", str(tmp_path)) for argument in arguments])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "index").exists()


def test_importing_the_module_loads_neither_torch_nor_faiss_nor_django() -> None:
    # The web app extracts uploaded documents and checks templates with it; that must stay cheap.
    probe = "import json, sys, training.rag; print(json.dumps(sorted(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    modules = {name.split(".")[0] for name in json.loads(completed.stdout.splitlines()[-1])}

    assert not modules & {"torch", "faiss", "sentence_transformers", "transformers", "pypdf", "django"}


def test_read_chunks_gives_an_index_chunks_in_order_without_loading_a_model(index_dir: Path, tmp_path: Path) -> None:
    from training.rag import Chunk, read_chunks

    chunks = read_chunks(index_dir)

    rows = [{"document": chunk.document, "chunk": chunk.chunk, "text": chunk.text} for chunk in chunks]
    assert rows == Retriever.load(index_dir).chunks
    assert all(isinstance(chunk, Chunk) for chunk in chunks)
    with pytest.raises(ValueError, match=r"missing chunks\.jsonl"):
        read_chunks(tmp_path)
    (tmp_path / CHUNKS_FILE).write_text('{"document": "a.md", "chunk": 0, "text": "Alpha."}\n{"document": "b.md"}\n')
    with pytest.raises(ValueError, match=r"chunks\.jsonl, line 2: not a chunk \(KeyError: 'chunk'\)"):
        read_chunks(tmp_path)
