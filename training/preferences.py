"""Pairwise human votes in, a TRL conversational preference dataset (JSONL) out, and a strict reader for it.

Each record is {"prompt": [user message], "chosen": [assistant message], "rejected": [assistant message]}, the
format TRL's DPOTrainer reads directly. Pure Python: the web app builds datasets without loading torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from training.lines import read_lines

Outcome = Literal["a", "b", "tie"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
RECORD_KEYS = ("prompt", "chosen", "rejected")
ROLES = ("system", "user", "assistant")


class PreferenceFileError(ValueError):
    """A preference JSONL file that cannot be trained on; the message names the line and the problem."""


@dataclass(frozen=True)
class PairwiseVote:
    """One decision between the answers of a comparison's two variants.

    `a` and `b` are the comparison's variants, never the screen sides the annotator saw: the outcome says
    which variant's answer won, so the side an answer happened to be shown on cannot leak into the dataset.
    """

    prompt: str
    answer_a: str
    answer_b: str
    outcome: Outcome

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")

    @property
    def winner_and_loser(self) -> tuple[str, str] | None:
        """(winning answer, losing answer), or None for a tie."""
        if self.outcome == "a":
            return self.answer_a, self.answer_b
        if self.outcome == "b":
            return self.answer_b, self.answer_a
        return None


def preference_records(votes: Iterable[PairwiseVote]) -> list[dict[str, Any]]:
    """TRL conversational preference records for the decisive votes, in vote order; ties carry no preference
    and are left out."""
    records = []
    for vote in votes:
        pair = vote.winner_and_loser
        if pair is None:
            continue
        chosen, rejected = pair
        records.append(
            {
                "prompt": [{"role": "user", "content": vote.prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return records


def write_jsonl(records: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Write one JSON object a line (UTF-8). The file appears complete or not at all: it is written beside the
    target and renamed, so a crash never leaves a truncated dataset that a later job could train on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)


def read_preference_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read and check a preference JSONL file; blank lines are skipped, keys beyond the three are kept.

    Raises PreferenceFileError naming the line number and the problem: invalid JSON, a missing key, a message
    list of the wrong shape, an empty prompt, or a file without any record.
    """
    path = Path(path)
    records = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        problem = _record_problem(line)
        if problem is not None:
            raise PreferenceFileError(f"{path}, line {number}: {problem}")
        records.append(json.loads(line))
    if not records:
        raise PreferenceFileError(f"{path}: the file is empty; it holds no preference records")
    return records


def dataset_fingerprint(path: Path) -> str:
    """SHA-256 of the file's bytes, hex encoded: the identity of a dataset in a model's lineage."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_problem(line: str) -> str | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg} at column {error.colno})"
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        return f"missing key(s): {', '.join(missing)}"
    for key in RECORD_KEYS:
        problem = _messages_problem(record[key], only_role="assistant" if key != "prompt" else None)
        if problem is not None:
            return f"{key}: {problem}"
    if not any(message["content"].strip() for message in record["prompt"]):
        return "prompt: the prompt is empty"
    return None


def _messages_problem(messages: object, *, only_role: str | None) -> str | None:
    if not isinstance(messages, list) or not messages:
        return 'expected a non-empty list of {"role", "content"} messages'
    for position, message in enumerate(messages, start=1):
        problem = _message_problem(message, only_role=only_role)
        if problem is not None:
            return f"message {position}: {problem}"
    return None


def _message_problem(message: object, *, only_role: str | None) -> str | None:
    if not isinstance(message, dict) or set(message) != {"role", "content"}:
        return 'expected an object with exactly the keys "role" and "content"'
    if not isinstance(message["content"], str):
        return "content must be a string"
    allowed: Sequence[str] = (only_role,) if only_role else ROLES
    if message["role"] not in allowed:
        return f"role must be {' or '.join(allowed)}, got {message['role']!r}"
    return None
