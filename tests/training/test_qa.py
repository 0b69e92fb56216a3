"""Q&A pairs from document chunks (training/qa.py): the prompt, the parser and its drops, the records SFT reads,
and the command line on the tiny model. No database."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from training.qa import (
    ANSWER_WITHOUT_QUESTION,
    DUPLICATE,
    EMPTY_ANSWER,
    NO_PAIRS,
    NOT_A_QUESTION,
    QUESTION_WITHOUT_ANSWER,
    TOKENS_PER_PAIR,
    QAPair,
    main,
    parse_qa,
    qa_prompt,
    qa_record,
    qa_requests,
    qa_settings,
)
from training.rag import CHUNKS_FILE, Chunk
from training.sft import sft_records_from_qa

REPO = Path(__file__).resolve().parents[2]
CHUNK = Chunk(document="vellmar.md", chunk=2, text="The Vellmar archive keeps its paper below 43 percent humidity.")


def test_a_well_formed_reply_gives_its_pairs_in_order() -> None:
    reply = (
        "Q: What humidity does the Vellmar archive keep its paper below?\n"
        "A: Below 43 percent.\n"
        "\n"
        "Q: What does the Vellmar archive keep?\n"
        "A: Paper.\n"
    )
    dropped: Counter[str] = Counter()

    pairs = parse_qa(reply, dropped=dropped)

    assert pairs == [
        QAPair("What humidity does the Vellmar archive keep its paper below?", "Below 43 percent."),
        QAPair("What does the Vellmar archive keep?", "Paper."),
    ]
    assert dropped == Counter()


def test_common_variations_of_the_format_are_read() -> None:
    reply = (
        "Here are the pairs:\n"
        "1. **Question:** Who keeps the archive?\n"
        "**Answer:** The city of Vellmar.\n"
        "Q2: Why is the humidity kept low?\n"
        "A2: To protect the paper\n"
        "from mould.\n"
        "- q: How low? a: 43 percent.\n"
    )
    assert parse_qa(reply) == [
        QAPair("Who keeps the archive?", "The city of Vellmar."),
        QAPair("Why is the humidity kept low?", "To protect the paper\nfrom mould."),
        QAPair("How low?", "43 percent."),
    ]


def test_junk_is_dropped_and_counted_under_its_reason() -> None:
    reply = (
        "A: An answer before any question.\n"
        "Q: Tell me about the archive.\n"
        "A: It keeps paper.\n"
        "Q: What is kept?\n"
        "A:\n"
        "Q: A question left hanging?\n"
        "Q: What is kept dry?\n"
        "A: Paper.\n"
        "Q: what is  KEPT dry\u00a0?\n"
        "A: The paper, again.\n"
        "\n"
        "I hope these help! Let me know if you want more.\n"
        "Q: ?\n"
        "A: Nothing.\n"
        "Q: And the last one?\n"
    )
    dropped: Counter[str] = Counter()

    pairs = parse_qa(reply, dropped=dropped)

    assert pairs == [QAPair("What is kept dry?", "Paper.")]
    assert dropped == {
        ANSWER_WITHOUT_QUESTION: 1,
        NOT_A_QUESTION: 2,  # no question mark; a question mark alone
        EMPTY_ANSWER: 1,
        QUESTION_WITHOUT_ANSWER: 2,  # followed by another question; the last line
        DUPLICATE: 1,  # the same words in another case and spacing
    }


def test_a_reply_without_any_pair_counts_once_as_no_pairs_and_one_counter_gathers_many_replies() -> None:
    dropped: Counter[str] = Counter()
    assert parse_qa("assistant\nassistant\nThe B matrix multiplication.", dropped=dropped) == []
    assert parse_qa("", dropped=dropped) == []
    assert parse_qa("Q: Kept?\nA: Yes.\nQ: Not kept.\nA: No.", dropped=dropped) == [QAPair("Kept?", "Yes.")]
    assert dropped == {NO_PAIRS: 2, NOT_A_QUESTION: 1}


def test_line_separators_inside_a_question_or_answer_stay_in_their_text() -> None:
    question, answer = "What does the line\u2028separator do?", "It stays\u2029inside the answer\u0085here."
    assert parse_qa(f"Q: {question}\r\nA: {answer}\r\n") == [QAPair(question, answer)]


def test_the_prompt_holds_the_chunk_its_document_and_the_number_of_pairs() -> None:
    chunk = Chunk(document="notes.md", chunk=0, text="Braces {pairs} and {chunk} in the text stay as they are.")

    prompt = qa_prompt(chunk, 4)

    assert "write 4 question-answer pairs about it" in prompt
    assert 'Passage (from notes.md):\n"""\nBraces {pairs} and {chunk} in the text stay as they are.\n"""' in prompt
    assert 'starting with "Q: " and ending with "?"' in prompt and 'starting with "A: "' in prompt
    assert "answerable from the passage alone" in prompt
    assert "write 1 question-answer pair about it" in qa_prompt(chunk, 1)


def test_there_is_one_greedy_request_per_chunk_with_room_for_the_pairs() -> None:
    other = Chunk(document="bees.txt", chunk=0, text="Honey bees dance.")

    requests = qa_requests([CHUNK, other], 3)

    assert [request.key for request in requests] == ["0", "1"]
    assert [request.prompt for request in requests] == [qa_prompt(CHUNK, 3), qa_prompt(other, 3)]
    settings = qa_settings(3)
    assert settings.greedy and settings.max_new_tokens == 3 * TOKENS_PER_PAIR


@pytest.mark.parametrize("pairs", [0, 11, 2.0, True])
def test_it_rejects_a_number_of_pairs_outside_one_to_ten(pairs: object) -> None:
    with pytest.raises(ValueError, match="pairs_per_chunk must be an integer from 1 to 10"):
        qa_prompt(CHUNK, pairs)  # type: ignore[arg-type]


def test_a_record_is_a_line_the_sft_reader_takes_with_its_source_alongside(tmp_path: Path) -> None:
    record = qa_record(QAPair("What is kept below 43 percent humidity?", "The archive's paper."), CHUNK)
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")

    assert record["document"] == "vellmar.md" and record["chunk"] == 2 and record["context"] == CHUNK.text
    assert sft_records_from_qa(path) == [
        {
            "messages": [
                {"role": "user", "content": "What is kept below 43 percent humidity?"},
                {"role": "assistant", "content": "The archive's paper."},
            ]
        }
    ]


def test_the_command_line_asks_the_tiny_model_about_every_chunk_and_reports_the_drops(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    rows = [{"document": "a.md", "chunk": 0, "text": "Alpha."}, {"document": "b.md", "chunk": 0, "text": "Beta."}]
    (index / CHUNKS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "qa.jsonl"

    assert main(["--index", str(index), "--model", str(tiny_model_dir), "--out", str(out), "--pairs", "1"]) == 0

    # The tiny model writes word-like noise, never the Q:/A: format: nothing is kept, and the summary says why.
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"chunks": 2, "pairs": 0, "dropped": {NO_PAIRS: 2}}
    assert out.read_text(encoding="utf-8") == ""


def test_the_command_line_exits_2_on_an_index_without_chunks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--index", str(tmp_path), "--model", "unused", "--out", str(tmp_path / "qa.jsonl")])
    assert exited.value.code == 2
    assert f"{tmp_path} is not a Prefloop index: missing chunks.jsonl" in capsys.readouterr().err


def test_importing_the_module_loads_neither_torch_nor_django() -> None:
    probe = "import json, sys, training.qa; print(json.dumps(sorted(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    modules = {name.split(".")[0] for name in json.loads(completed.stdout.splitlines()[-1])}

    assert not modules & {"torch", "transformers", "faiss", "sentence_transformers", "django"}
