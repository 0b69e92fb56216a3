"""Question–answer pairs written by a model from the chunks of a document collection: synthetic data for evaluation
prompts with reference answers, and for supervised fine-tuning.

The method, one request per chunk:

1. Every chunk of a built index (training.rag, chunks.jsonl) becomes one prompt, QA_TEMPLATE filled with the
   chunk's text, its document's name and the number N of pairs wanted (1 to MAX_PAIRS_PER_CHUNK). The prompt asks
   for questions that the chunk alone answers, each answer drawn from the chunk, in a strict line format: a line
   "Q: …?" followed by a line "A: …", a blank line between pairs, nothing else.
2. The model answers with greedy decoding (temperature 0: the same model and chunk give the same pairs), at most
   TOKENS_PER_PAIR new tokens per pair asked for (`qa_settings`).
3. `parse_qa` reads the pairs back. It accepts what models commonly add around the format: "Question:" and
   "Answer:", numbering ("1. Q:", "Q1:"), bold markers ("**Q:**"), "Q: …? A: …" on one line, and a question or
   answer that wraps onto the following lines (a blank line or the next "Q:"/"A:" ends it). It drops, counting
   each under its reason (DROP_REASONS): an answer line without a question before it, a question without an
   answer, an empty answer, a question that does not end with a question mark, and a question asked before
   (compared without case, spaces and punctuation). An output with no "Q:" or "A:" line counts once, as "no pairs".
   Only "\\n" ends a line, so a U+2028 or U+2029 inside a question or answer stays in its text.

The kept pairs are meant for a person to review (the web app shows each with its chunk) before they become
prompts or training data; `qa_record` writes one as the {"question", "answer"} line training.sft reads, with its
document and chunk alongside.

Run:

    python -m training.qa --index var/artifacts/collections/1 --model var/models/tiny --out qa.jsonl \\
        [--adapter PATH] [--pairs 3] [--quantization none|4bit|8bit] [--batch-size 8]

It prints a JSON summary (chunks, pairs, dropped by reason) and writes one qa_record a line to --out. A bad option
or index exits with status 2 and says what is wrong.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.generation import AnswerRequest
from training.generation.settings import QUANTIZATIONS, GenerationSettings
from training.rag import Chunk, read_chunks
from training.validation import is_int

MAX_PAIRS_PER_CHUNK = 10
DEFAULT_PAIRS_PER_CHUNK = 3
TOKENS_PER_PAIR = 128

QA_TEMPLATE = """Read the passage below, then write {pairs} question-answer pair{plural} about it.

Rules:
- Every question must be answerable from the passage alone, without any other knowledge.
- Every answer must be correct according to the passage, complete, and at most three sentences long.
- Ask as a curious reader would; do not mention "the passage" or "the text".
- Write each pair as two lines: the question on a line starting with "Q: " and ending with "?", then the answer \
on the next line starting with "A: ". Leave one blank line between pairs. Write nothing else.

Passage (from {document}):
\"\"\"
{chunk}
\"\"\""""
TEMPLATE_FIELD = re.compile(r"\{(pairs|plural|document|chunk)\}")

# Why a pair was dropped; parse_qa counts drops under these keys.
NO_PAIRS = "no pairs"
ANSWER_WITHOUT_QUESTION = "answer without a question"
QUESTION_WITHOUT_ANSWER = "question without an answer"
EMPTY_ANSWER = "empty answer"
NOT_A_QUESTION = "not a question"
DUPLICATE = "duplicate question"
DROP_REASONS = (NO_PAIRS, ANSWER_WITHOUT_QUESTION, QUESTION_WITHOUT_ANSWER, EMPTY_ANSWER, NOT_A_QUESTION, DUPLICATE)

# "Q:", "Question:", "Q1:", "1. Q:", "**Q:**", "- A." … at the start of a line, in any case.
FIELD_LINE = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\d+[.)]\s*)?(?:\*\*|__)?(?P<field>q|question|a|answer)\s*\d*\s*(?:\*\*|__)?\s*[:.]"
    r"\s*(?:\*\*|__)?\s*(?P<text>.*)$",
    re.IGNORECASE,
)
QUESTION_MARKS = ("?", "？")  # the full-width one ends questions in Chinese and Japanese
# "Q: …? A: …" on one line: the answer starts after the question mark.
INLINE_ANSWER = re.compile(r"(?<=[?？])\s*(?:\*\*|__)?(?:A|Answer)\s*(?:\*\*|__)?\s*:\s*", re.IGNORECASE)
# Spaces only: str.strip() would also remove U+2028 and U+2029, which belong to the text.
SPACE = " \t\f\v"


@dataclass(frozen=True)
class QAPair:
    """One question with its answer, as the model wrote them (outer spaces and markup removed)."""

    question: str
    answer: str


def qa_prompt(chunk: Chunk, pairs_per_chunk: int) -> str:
    """QA_TEMPLATE for one chunk, filled in one pass (braces in the chunk's text stay literal)."""
    _check_pairs(pairs_per_chunk)
    values = {
        "pairs": str(pairs_per_chunk),
        "plural": "" if pairs_per_chunk == 1 else "s",
        "document": chunk.document or "an untitled document",
        "chunk": chunk.text,
    }
    return TEMPLATE_FIELD.sub(lambda match: values[match.group(1)], QA_TEMPLATE)


def qa_requests(chunks: Sequence[Chunk], pairs_per_chunk: int) -> list[AnswerRequest]:
    """One training.generation request per chunk, keyed by the chunk's position in `chunks`. The seed goes unused
    (decoding is greedy) but is fixed, so a request is the same whenever it is made."""
    return [
        AnswerRequest(key=str(position), prompt=qa_prompt(chunk, pairs_per_chunk), seed=0)
        for position, chunk in enumerate(chunks)
    ]


def qa_settings(pairs_per_chunk: int) -> GenerationSettings:
    """Greedy decoding with room for the pairs asked for."""
    _check_pairs(pairs_per_chunk)
    return GenerationSettings(max_new_tokens=TOKENS_PER_PAIR * pairs_per_chunk, temperature=0.0, top_p=1.0)


def parse_qa(text: str, *, dropped: Counter[str] | None = None) -> list[QAPair]:
    """The well-formed question–answer pairs of a model's output, in order, de-duplicated.

    Each pair dropped (see the module's docstring) is counted in `dropped` under its reason, so that one counter
    can gather the drops of many outputs.
    """
    counts: Counter[str] = Counter() if dropped is None else dropped
    fields = _fields(text)
    if not fields:
        counts[NO_PAIRS] += 1
        return []
    pairs: list[QAPair] = []
    seen: set[str] = set()
    question: str | None = None
    for kind, value in fields:
        if kind == "q":
            if question is not None:
                counts[QUESTION_WITHOUT_ANSWER] += 1
            question = value
            continue
        if question is None:
            counts[ANSWER_WITHOUT_QUESTION] += 1
        elif not value:
            counts[EMPTY_ANSWER] += 1
        elif not question.endswith(QUESTION_MARKS) or not question_key(question):
            counts[NOT_A_QUESTION] += 1
        elif question_key(question) in seen:
            counts[DUPLICATE] += 1
        else:
            seen.add(question_key(question))
            pairs.append(QAPair(question=question, answer=value))
        question = None
    if question is not None:
        counts[QUESTION_WITHOUT_ANSWER] += 1
    return pairs


def question_key(question: str) -> str:
    """What two questions must share to count as the same: their words, without case or punctuation."""
    return " ".join(re.findall(r"\w+", question.casefold()))


def qa_record(pair: QAPair, chunk: Chunk) -> dict[str, Any]:
    """A pair as a line of the Q&A JSONL training.sft reads ({"question", "answer"}), with its source alongside
    (other keys are ignored there)."""
    return {
        "question": pair.question,
        "answer": pair.answer,
        "document": chunk.document,
        "chunk": chunk.chunk,
        "context": chunk.text,
    }


def _fields(text: str) -> list[tuple[str, str]]:
    """("q" or "a", text) for every field line, each with the lines that continue it."""
    fields: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        match = FIELD_LINE.match(line)
        if match:
            kind, value = match.group("field")[0].lower(), match.group("text")
            inline = INLINE_ANSWER.search(value) if kind == "q" else None
            if inline:
                fields.append(("q", [value[: inline.start()]]))
                kind, value = "a", value[inline.end() :]
            current = [value]
            fields.append((kind, current))
        elif not line.strip(SPACE):
            current = None  # a blank line ends the field; what follows it unlabelled is not part of a pair
        elif current is not None:
            current.append(line)
    return [(kind, _clean("\n".join(lines))) for kind, lines in fields]


def _clean(value: str) -> str:
    value = value.strip(SPACE + "\n")
    for marker in ("**", "__"):
        value = value.removeprefix(marker).removesuffix(marker)
    return value.strip(SPACE + "\n")


def _check_pairs(pairs_per_chunk: object) -> None:
    if not is_int(pairs_per_chunk) or not 1 <= pairs_per_chunk <= MAX_PAIRS_PER_CHUNK:
        raise ValueError(f"pairs_per_chunk must be an integer from 1 to {MAX_PAIRS_PER_CHUNK}, got {pairs_per_chunk!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.qa", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, type=Path, help="index directory written by training.rag build")
    parser.add_argument("--model", required=True, help="base model: Hugging Face id or local path")
    parser.add_argument("--adapter", default="", help="optional PEFT adapter directory on the base")
    parser.add_argument("--out", required=True, type=Path, help="Q&A JSONL file to write")
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS_PER_CHUNK, help="pairs asked for per chunk")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="none")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks answered at once")
    args = parser.parse_args(argv)
    try:
        _check_pairs(args.pairs)
        chunks = read_chunks(args.index)
    except ValueError as error:
        parser.error(str(error))

    from training.generation import open_generator

    generator = open_generator(
        args.model, {"qa": args.adapter or None}, quantization=args.quantization, batch_size=args.batch_size
    )
    answers = generator.answer("qa", qa_requests(chunks, args.pairs), qa_settings(args.pairs))
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    written = 0
    with args.out.open("w", encoding="utf-8") as out:
        for chunk, answer in zip(chunks, answers, strict=True):
            for pair in parse_qa(answer.text, dropped=dropped):
                if question_key(pair.question) in seen:
                    dropped[DUPLICATE] += 1
                    continue
                seen.add(question_key(pair.question))
                out.write(json.dumps(qa_record(pair, chunk), ensure_ascii=False) + "\n")
                written += 1
    print(json.dumps({"chunks": len(chunks), "pairs": written, "dropped": dict(dropped)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
