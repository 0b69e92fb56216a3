"""Streamed exports of a campaign's judgements (CSV, JSONL, Parquet) and of its statistics (CSV, JSON).

Every writer is a generator of bytes: a view hands it to `StreamingHttpResponse`, a command writes it to a file
or to stdout. The raw exports read the database through one server-side cursor in chunks of `chunk_size`
rows and never hold more than one chunk, so their memory stays flat however large the campaign is. The columns
are described in docs/formats.md.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import CharField, F, Func, QuerySet

from evaluator.models import Adjudication, AnswerFlag, Campaign, Comparison, CriterionChoice, ModelVariant

if TYPE_CHECKING:
    # Only the type: the raw exports need neither the statistics nor their imports (scipy, …).
    from evaluator.selectors.campaigns import VoteFilters

CHUNK_SIZE = 20_000
_JSONL_BLOCK = 2_000
RAW_FORMATS = ("csv", "jsonl", "parquet")
SUMMARY_FORMATS = ("csv", "json")
SUMMARY_TABLES = ("pairs", "leaderboard", "agreement")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}

RAW_COLUMNS = [
    "judgement_id",
    "campaign",
    "prompt_id",
    "prompt",
    "criterion",
    "variant_a",
    "variant_b",
    "response_a",
    "response_b",
    "outcome",
    "winner",
    "shown_left",
    "annotator",
    "annotator_id",
    "time_on_task_ms",
    "created_at",
    "is_gold",
    "is_simulated",
    "retrieved_a",
    "retrieved_b",
    "both_bad",
    "flags_a",
    "flags_b",
    "adjudicated",
]

# Read per criterion choice; what repeats across the rows of a comparison (prompt, answers, names) is read
# once per chunk and comparison in a second query instead, which keeps the bulk of the bytes off the cursor.
_READ = (
    "judgement_id",
    "judgement__comparison_id",
    "criterion",
    "outcome",
    "judgement__assignment__left_is_a",
    "judgement__annotator_id",
    "judgement__time_on_task_ms",
    "judgement__simulated",
    "both_bad",
    "judgement__assignment_id",
    "judgement__created_at",
)
_COMPARISON_READ = (
    "pk",
    "prompt__external_id",
    "prompt__text",
    "variant_a__name",
    "variant_b__name",
    "candidate_a__text",
    "candidate_b__text",
    "gold_outcome",
    "candidate_a__retrieved",
    "candidate_b__retrieved",
)

_ISO_UTC = Func(
    F("judgement__created_at"),
    function="to_char",
    template="to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
    output_field=CharField(),
)

_STRING = pa.string()
RAW_SCHEMA = pa.schema(
    [
        ("judgement_id", pa.int64()),
        ("campaign", _STRING),
        ("prompt_id", _STRING),
        ("prompt", _STRING),
        ("criterion", _STRING),
        ("variant_a", _STRING),
        ("variant_b", _STRING),
        ("response_a", _STRING),
        ("response_b", _STRING),
        ("outcome", _STRING),
        ("winner", _STRING),
        ("shown_left", _STRING),
        ("annotator", _STRING),
        ("annotator_id", pa.int64()),
        ("time_on_task_ms", pa.int64()),
        ("created_at", _STRING),
        ("is_gold", pa.bool_()),
        ("is_simulated", pa.bool_()),
        ("retrieved_a", _STRING),
        ("retrieved_b", _STRING),
        ("both_bad", pa.bool_()),
        ("flags_a", _STRING),
        ("flags_b", _STRING),
        ("adjudicated", _STRING),
    ]
)


def raw_column_chunks(
    *, campaign: Campaign, filters: VoteFilters | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[dict[str, list[Any]]]:
    """The raw export as column-oriented chunks ({column: values}) of at most `chunk_size` rows each.

    One query through a server-side cursor, ordered by criterion choice id (judgement by judgement), plus per
    chunk one query for its comparisons' texts and names, one for its answer flags, one for its comparisons'
    adjudications, and at most one for annotators not seen before.
    """

    from evaluator.selectors.campaigns import judgement_choices

    choices = judgement_choices(campaign=campaign, filters=filters).order_by("pk")
    rows: QuerySet[CriterionChoice, tuple[Any, ...]]
    if connection.vendor == "postgresql":
        # PostgreSQL writes the ISO 8601 text itself: parsing a timestamp per row in Python and formatting it again
        # was the largest single cost of the export.
        rows = choices.annotate(created_iso=_ISO_UTC).values_list(*_READ[:-1], "created_iso")
    else:
        rows = choices.values_list(*_READ)
    usernames: dict[int, str] = {}
    chunk: list[tuple[Any, ...]] = []
    for row in rows.iterator(chunk_size=chunk_size):
        chunk.append(row)
        if len(chunk) >= chunk_size:
            yield _columns(campaign, chunk, usernames)
            chunk = []
    if chunk:
        yield _columns(campaign, chunk, usernames)


def _columns(campaign: Campaign, rows: list[tuple[Any, ...]], usernames: dict[int, str]) -> dict[str, list[Any]]:
    (
        judgement_ids,
        comparison_ids,
        criteria,
        outcomes,
        left_is_a,
        annotator_ids,
        times,
        simulated,
        both_bad,
        assignment_ids,
        created,
    ) = (list(column) for column in zip(*rows, strict=True))
    # Passages are encoded once per comparison of the chunk, not once per criterion row.
    comparisons = {
        row[0]: (*row[1:8], _passages_json(row[8]), _passages_json(row[9]))
        for row in Comparison.objects.filter(pk__in=set(comparison_ids)).values_list(*_COMPARISON_READ)
    }
    flags = _flags_json(set(assignment_ids))
    decided = dict(
        ((pk, criterion), outcome)
        for pk, criterion, outcome in Adjudication.objects.filter(comparison_id__in=set(comparison_ids)).values_list(
            "comparison_id", "criterion", "outcome"
        )
    )
    unseen = set(annotator_ids) - usernames.keys()
    if unseen:
        usernames.update(get_user_model().objects.filter(pk__in=unseen).values_list("pk", "username"))
    # (external id, prompt, variant a, variant b, response a, response b, gold outcome, passages a, passages b).
    details = [comparisons[pk] for pk in comparison_ids]
    variants_a = [detail[2] for detail in details]
    variants_b = [detail[3] for detail in details]
    return {
        "judgement_id": judgement_ids,
        "campaign": [campaign.name] * len(rows),
        "prompt_id": [detail[0] for detail in details],
        "prompt": [detail[1] for detail in details],
        "criterion": criteria,
        "variant_a": variants_a,
        "variant_b": variants_b,
        "response_a": [detail[4] for detail in details],
        "response_b": [detail[5] for detail in details],
        "outcome": outcomes,
        "winner": [
            name_a if outcome == "a" else name_b if outcome == "b" else "tie"
            for outcome, name_a, name_b in zip(outcomes, variants_a, variants_b, strict=True)
        ],
        "shown_left": ["a" if left else "b" for left in left_is_a],
        "annotator": [usernames[pk] for pk in annotator_ids],
        "annotator_id": annotator_ids,
        "time_on_task_ms": times,
        # Text already when PostgreSQL wrote it (raw_column_chunks); datetimes from other databases.
        "created_at": created if created and isinstance(created[0], str) else _iso_strings(created),
        "is_gold": [detail[6] is not None for detail in details],
        "is_simulated": simulated,
        "retrieved_a": [detail[7] for detail in details],
        "retrieved_b": [detail[8] for detail in details],
        "both_bad": both_bad,
        "flags_a": [flags.get((pk, "a"), "[]") for pk in assignment_ids],
        "flags_b": [flags.get((pk, "b"), "[]") for pk in assignment_ids],
        "adjudicated": [decided.get((pk, criterion)) for pk, criterion in zip(comparison_ids, criteria, strict=True)],
    }


def _flags_json(assignment_ids: set[int]) -> dict[tuple[int, str], str]:
    """{(assignment id, "a" or "b"): the JSON list of the flags the assignment's annotator raised on variant a's or
    b's answer}; a flag names its answer (candidate), which is variant a's when it is the comparison's candidate a."""
    found: dict[tuple[int, str], list[dict[str, str]]] = {}
    rows = AnswerFlag.objects.filter(assignment_id__in=assignment_ids).order_by("pk")
    for assignment_id, candidate_id, candidate_a_id, reason, note in rows.values_list(
        "assignment_id", "candidate_id", "assignment__comparison__candidate_a_id", "reason", "note"
    ):
        side = "a" if candidate_id == candidate_a_id else "b"
        found.setdefault((assignment_id, side), []).append({"reason": reason, "note": note})
    return {key: json.dumps(value, ensure_ascii=False) for key, value in found.items()}


def _passages_json(retrieved: Any) -> str:
    """A candidate's retrieved passages as JSON text ("[]" for an answer without retrieval)."""
    return json.dumps(retrieved if isinstance(retrieved, list) else [], ensure_ascii=False)


def _iso_strings(values: list[datetime]) -> list[str]:
    # The rows of one judgement share its timestamp and come one after another: format each once.
    out: list[str] = []
    last: datetime | None = None
    text = ""
    for value in values:
        if value is not last:
            text, last = value.isoformat(), value
        out.append(text)
    return out


def _batch(columns: dict[str, list[Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(columns, schema=RAW_SCHEMA)


def judgements_csv(
    *, campaign: Campaign, filters: VoteFilters | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """The raw judgements as UTF-8 CSV with a header line (RFC 4180 quoting; booleans as true/false)."""
    yield (",".join(f'"{column}"' for column in RAW_COLUMNS) + "\n").encode()
    options = pa_csv.WriteOptions(include_header=False)
    for columns in raw_column_chunks(campaign=campaign, filters=filters, chunk_size=chunk_size):
        buffer = io.BytesIO()
        pa_csv.write_csv(_batch(columns), buffer, write_options=options)
        yield buffer.getvalue()


def judgements_jsonl(
    *, campaign: Campaign, filters: VoteFilters | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """The raw judgements as JSON Lines: one object a row, keys in RAW_COLUMNS order."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    for columns in raw_column_chunks(campaign=campaign, filters=filters, chunk_size=chunk_size):
        rows = zip(*(columns[name] for name in RAW_COLUMNS), strict=True)
        # Encoded a few thousand lines at a time: a whole chunk of long answers as one string would be the
        # largest allocation of the export.
        while lines := [encode(dict(zip(RAW_COLUMNS, row, strict=True))) for row in islice(rows, _JSONL_BLOCK)]:
            yield ("\n".join(lines) + "\n").encode()


class ChunkSink(io.RawIOBase):
    """A write-only, unseekable file that keeps what is written until `drain` hands it over: a Parquet writer's
    output after every row group, or a zip's (zipfile then writes each member's sizes after its data), so that
    either streams while it is still being written."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        block = bytes(data)
        self._parts.append(block)
        self._position += len(block)
        return len(block)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        block, self._parts = b"".join(self._parts), []
        return block


def judgements_parquet(
    *, campaign: Campaign, filters: VoteFilters | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """The raw judgements as a Parquet file (zstd), one row group per chunk, streamed as it is written."""
    sink = ChunkSink()
    writer = pq.ParquetWriter(sink, RAW_SCHEMA, compression="zstd")
    try:
        for columns in raw_column_chunks(campaign=campaign, filters=filters, chunk_size=chunk_size):
            writer.write_batch(_batch(columns), row_group_size=chunk_size)
            block = sink.drain()
            if block:
                yield block
    finally:
        writer.close()
    yield sink.drain()


RAW_WRITERS = {"csv": judgements_csv, "jsonl": judgements_jsonl, "parquet": judgements_parquet}


def judgements_export(
    *, campaign: Campaign, file_format: str, filters: VoteFilters | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """The raw judgements in `file_format` (csv, jsonl or parquet); ValueError for another format."""
    if file_format not in RAW_WRITERS:
        raise ValueError(f"unknown format {file_format!r}; use one of {', '.join(RAW_FORMATS)}")
    return RAW_WRITERS[file_format](campaign=campaign, filters=filters, chunk_size=chunk_size)


# Statistics ------------------------------------------------------------------------------------------------


def summary_json(*, campaign: Campaign, filters: VoteFilters | None = None, n_boot: int = 1000) -> Iterator[bytes]:
    """The statistics as one JSON object: `CampaignStatistics.to_json()` with variants named (docs/formats.md)."""

    from evaluator.selectors.campaigns import campaign_statistics_json

    report = campaign_statistics_json(campaign=campaign, filters=filters, n_boot=n_boot)
    yield statistics_json_bytes(report)


def statistics_json_bytes(report: dict[str, Any]) -> bytes:
    """The statistics object as UTF-8 JSON and a newline, NaN as null: the export_stats file and a snapshot's."""
    return (json.dumps(report, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n").encode()


def summary_csv(
    *, campaign: Campaign, table: str = "pairs", filters: VoteFilters | None = None, n_boot: int = 1000
) -> Iterator[bytes]:
    """One statistics table (pairs, leaderboard or agreement) as CSV, variants named."""
    if table not in SUMMARY_TABLES:
        raise ValueError(f"unknown table {table!r}; use one of {', '.join(SUMMARY_TABLES)}")

    from evaluator.selectors.campaigns import campaign_statistics

    stats = campaign_statistics(campaign=campaign, filters=filters, n_boot=n_boot)
    frame = getattr(stats, table).copy()
    names = dict(ModelVariant.objects.values_list("pk", "name"))
    for column in ("variant", "variant_a", "variant_b"):
        if column in frame.columns:
            frame[column] = frame[column].map(lambda pk: names.get(pk, pk))
    text = io.StringIO()
    frame.to_csv(text, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    yield text.getvalue().encode()


def summary_export(
    *,
    campaign: Campaign,
    file_format: str,
    table: str = "pairs",
    filters: VoteFilters | None = None,
    n_boot: int = 1000,
) -> Iterator[bytes]:
    """The statistics as JSON (all of them) or CSV (one table); ValueError for another format."""
    if file_format == "json":
        return summary_json(campaign=campaign, filters=filters, n_boot=n_boot)
    if file_format == "csv":
        if table not in SUMMARY_TABLES:
            raise ValueError(f"unknown table {table!r}; use one of {', '.join(SUMMARY_TABLES)}")
        return summary_csv(campaign=campaign, table=table, filters=filters, n_boot=n_boot)
    raise ValueError(f"unknown format {file_format!r}; use one of {', '.join(SUMMARY_FORMATS)}")


def _json_default(value: Any) -> Any:
    # numpy scalars and timestamps that a DataFrame may hand over.
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
