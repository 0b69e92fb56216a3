"""From pairwise votes to a TRL preference JSONL, and the strict reader that guards training."""

import hashlib
import json
from pathlib import Path

import pytest

from training.preferences import (
    PairwiseVote,
    PreferenceFileError,
    dataset_fingerprint,
    preference_records,
    read_preference_jsonl,
    write_jsonl,
)


def test_it_maps_chosen_and_rejected_by_the_winning_variant() -> None:
    votes = [
        PairwiseVote("Why digitise archives?", answer_a="For access.", answer_b="No reason.", outcome="a"),
        PairwiseVote("What is NF4?", answer_a="A font.", answer_b="A 4-bit data type.", outcome="b"),
    ]

    records = preference_records(votes)

    assert records == [
        {
            "prompt": [{"role": "user", "content": "Why digitise archives?"}],
            "chosen": [{"role": "assistant", "content": "For access."}],
            "rejected": [{"role": "assistant", "content": "No reason."}],
        },
        {
            "prompt": [{"role": "user", "content": "What is NF4?"}],
            "chosen": [{"role": "assistant", "content": "A 4-bit data type."}],
            "rejected": [{"role": "assistant", "content": "A font."}],
        },
    ]


def test_it_excludes_ties_from_the_preference_dataset() -> None:
    votes = [
        PairwiseVote("Q1", answer_a="x", answer_b="y", outcome="tie"),
        PairwiseVote("Q2", answer_a="x", answer_b="y", outcome="b"),
        PairwiseVote("Q3", answer_a="x", answer_b="y", outcome="tie"),
    ]

    records = preference_records(votes)

    assert [record["prompt"][0]["content"] for record in records] == ["Q2"]
    assert preference_records(votes[:1]) == []


def test_it_refuses_an_outcome_that_is_not_a_variant_or_a_tie() -> None:
    with pytest.raises(ValueError, match="outcome must be one of a, b, tie, got 'left'"):
        preference_records([PairwiseVote("Q", answer_a="x", answer_b="y", outcome="left")])  # type: ignore[arg-type]


def test_written_records_read_back_unchanged(tmp_path: Path) -> None:
    records = preference_records([PairwiseVote("Qu'est-ce qu'un musée ?", "Un lieu.", "Rien.", "a")])
    path = tmp_path / "nested" / "preferences.jsonl"

    write_jsonl(records, path)

    assert read_preference_jsonl(path) == records
    assert path.read_text(encoding="utf-8").count("\n") == 1
    assert "musée" in path.read_text(encoding="utf-8")  # stored as UTF-8, not \u escapes
    assert [p.name for p in path.parent.iterdir()] == ["preferences.jsonl"]  # no partial file left behind


GOOD = {
    "prompt": [{"role": "user", "content": "Q"}],
    "chosen": [{"role": "assistant", "content": "A"}],
    "rejected": [{"role": "assistant", "content": "B"}],
}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"prompt": [', r"line 2: not valid JSON"),
        ("[1, 2]", r"line 2: expected a JSON object, got list"),
        (
            json.dumps({"prompt": GOOD["prompt"], "chosen": GOOD["chosen"]}),
            r"line 2: missing key\(s\): rejected",
        ),
        (json.dumps({**GOOD, "prompt": "Q"}), r"line 2: prompt: expected a non-empty list"),
        (json.dumps({**GOOD, "chosen": []}), r"line 2: chosen: expected a non-empty list"),
        (
            json.dumps({**GOOD, "rejected": [{"content": "B"}]}),
            r"line 2: rejected: message 1: expected an object",
        ),
        (json.dumps({**GOOD, "chosen": [{"role": "user", "content": "A"}]}), r"line 2: chosen: .*assistant"),
        (
            json.dumps({**GOOD, "prompt": [{"role": "user", "content": 3}]}),
            r"line 2: prompt: .*content must be a str",
        ),
        (
            json.dumps({**GOOD, "prompt": [{"role": "user", "content": "  "}]}),
            r"line 2: prompt: the prompt is empty",
        ),
    ],
)
def test_the_reader_names_the_line_and_the_problem(tmp_path: Path, bad_line: str, message: str) -> None:
    path = tmp_path / "preferences.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + bad_line + "\n" + json.dumps(GOOD) + "\n")

    with pytest.raises(PreferenceFileError, match=message):
        read_preference_jsonl(path)


def test_the_reader_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "preferences.jsonl"
    path.write_text("\n")

    with pytest.raises(ValueError, match="the file is empty; it holds no preference records"):
        read_preference_jsonl(path)


def test_the_reader_skips_blank_lines_and_keeps_extra_keys(tmp_path: Path) -> None:
    path = tmp_path / "preferences.jsonl"
    path.write_text("\n" + json.dumps({**GOOD, "id": 7}) + "\n\n")

    assert read_preference_jsonl(path) == [{**GOOD, "id": 7}]


def test_the_fingerprint_is_the_sha256_of_the_file_and_follows_its_content(tmp_path: Path) -> None:
    path = tmp_path / "preferences.jsonl"
    write_jsonl([GOOD], path)
    first = dataset_fingerprint(path)

    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    write_jsonl([GOOD, GOOD], path)
    assert dataset_fingerprint(path) != first


# Inside a JSON string these need no escape, and json.dumps(ensure_ascii=False) writes them as they are.
SEPARATORS = "line\u2028separator, paragraph\u2029separator, next\x85line"


def test_it_reads_a_record_whose_answer_holds_a_line_separator(tmp_path: Path) -> None:
    record = {**GOOD, "chosen": [{"role": "assistant", "content": SEPARATORS}]}
    path = tmp_path / "preferences.jsonl"
    write_jsonl([record, GOOD], path)

    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, not escaped
    assert read_preference_jsonl(path) == [record, GOOD]


def test_it_reads_a_file_with_windows_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "preferences.jsonl"
    path.write_bytes((json.dumps(GOOD) + "\r\n\r\n" + json.dumps(GOOD) + "\r\n").encode())

    assert read_preference_jsonl(path) == [GOOD, GOOD]
