"""Fixtures for the training library's tests: small preference datasets built from the tiny model's corpus
(the tiny model itself comes from tests/conftest.py). No database, no network."""

import json
from pathlib import Path

import pytest

from training.preferences import PairwiseVote, preference_records, write_jsonl
from training.tiny import CORPUS_PATH


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, str]]:
    return [json.loads(line) for line in CORPUS_PATH.read_text(encoding="utf-8").splitlines()]


def corpus_votes(corpus: list[dict[str, str]], count: int) -> list[PairwiseVote]:
    """Votes preferring each question's own answer over another question's answer, on alternating variants."""
    votes = []
    for index, row in enumerate(corpus[:count]):
        wrong = corpus[(index + 7) % len(corpus)]["answer"]
        if index % 2:
            votes.append(PairwiseVote(row["question"], answer_a=row["answer"], answer_b=wrong, outcome="a"))
        else:
            votes.append(PairwiseVote(row["question"], answer_a=wrong, answer_b=row["answer"], outcome="b"))
    return votes


@pytest.fixture(scope="session")
def preference_file(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict[str, str]]) -> Path:
    """Sixteen preference records in TRL's conversational format."""
    path = tmp_path_factory.mktemp("preferences") / "preferences.jsonl"
    write_jsonl(preference_records(corpus_votes(corpus, 16)), path)
    return path
