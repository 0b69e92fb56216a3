"""Raw judgement and statistics exports: formats, streaming, the commands and the guarded downloads."""

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from django.contrib.auth import views as auth_views
from django.core.management import call_command
from django.urls import include, path

from evaluator.models import AnnotatorFlag
from evaluator.selectors.campaigns import VoteFilters, campaign_statistics_json
from evaluator.selectors.exports import (
    RAW_COLUMNS,
    RAW_FORMATS,
    RAW_SCHEMA,
    _json_default,
    judgements_csv,
    judgements_export,
    judgements_jsonl,
    judgements_parquet,
)
from tests import factories

# The project mounts the export URLs under stats/<id>/export/; these tests mount them the same way themselves.
# The rest of the project's pages come after them: the styled 403 and 404 pages link to them.
urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("stats/<int:campaign_id>/export/", include("evaluator.export_urls")),
    path("", include("prefloop.urls")),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

CRITERIA = 6  # five rubric criteria and overall


@pytest.fixture
def judged(annotator, second_annotator):
    """Three comparisons of base vs tuned judged by two annotators, plus one gold comparison judged once."""
    campaign = factories.campaign(name="Export me")
    base = factories.variant(name="base")
    tuned = factories.variant(name="tuned")
    comparisons = [factories.comparison(campaign, variants=(base, tuned)) for _ in range(3)]
    factories.judgement(comparisons[0], annotator, "a", left_is_a=True, time_on_task_ms=1500)
    factories.judgement(comparisons[0], second_annotator, "b", left_is_a=False)
    factories.judgement(comparisons[1], annotator, "tie")
    factories.judgement(comparisons[1], second_annotator, "b")
    factories.judgement(comparisons[2], annotator, "b")
    factories.judgement(comparisons[2], second_annotator, "a")
    gold = factories.comparison(campaign, variants=(base, tuned))
    gold.gold_outcome = "b"
    gold.save(update_fields=["gold_outcome"])
    factories.judgement(gold, annotator, "b")
    return campaign


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_the_csv_export_has_one_row_per_judgement_and_criterion_with_the_documented_columns(judged) -> None:
    rows = read_csv(b"".join(judgements_csv(campaign=judged)))
    assert list(rows[0]) == RAW_COLUMNS
    assert len(rows) == 7 * CRITERIA
    first = rows[0]
    assert first["campaign"] == "Export me"
    assert first["variant_a"] == "base"
    assert first["variant_b"] == "tuned"
    assert first["response_a"] == "Answer from base"
    assert first["response_b"] == "Answer from tuned"
    assert first["outcome"] == "a"
    assert first["winner"] == "base"
    assert first["shown_left"] == "a"
    assert first["annotator"] == "ann"
    assert first["time_on_task_ms"] == "1500"
    assert first["is_gold"] == "false"
    assert first["prompt_id"].startswith("p")
    assert first["prompt"].startswith("Question")
    assert "T" in first["created_at"]
    assert {row["criterion"] for row in rows} == set(judged.criterion_slugs)
    second = next(row for row in rows if row["annotator"] == "bea")
    assert (second["winner"], second["shown_left"]) == ("tuned", "b")
    assert {row["winner"] for row in rows if row["outcome"] == "tie"} == {"tie"}
    assert sum(row["is_gold"] == "true" for row in rows) == CRITERIA


def test_the_jsonl_export_holds_the_same_rows_as_the_csv_export_with_typed_values(judged) -> None:
    lines = b"".join(judgements_jsonl(campaign=judged)).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 7 * CRITERIA
    assert list(records[0]) == RAW_COLUMNS
    assert isinstance(records[0]["judgement_id"], int)
    assert records[0]["is_gold"] is False
    rows = read_csv(b"".join(judgements_csv(campaign=judged)))
    assert [(r["judgement_id"], r["criterion"], r["winner"]) for r in records] == [
        (int(r["judgement_id"]), r["criterion"], r["winner"]) for r in rows
    ]


def test_the_parquet_export_writes_one_row_group_per_chunk_with_the_schema(judged) -> None:
    data = b"".join(judgements_parquet(campaign=judged, chunk_size=10))
    parquet = pq.ParquetFile(io.BytesIO(data))
    assert parquet.schema_arrow == RAW_SCHEMA
    assert parquet.num_row_groups == 5  # 42 rows in chunks of 10
    table = parquet.read()
    assert table.num_rows == 7 * CRITERIA
    assert table.column("winner").to_pylist()[0] == "base"
    assert sum(table.column("is_gold").to_pylist()) == CRITERIA


@pytest.mark.parametrize("file_format", RAW_FORMATS)
def test_every_raw_export_streams_several_chunks_rather_than_one_blob(judged, file_format) -> None:
    chunks = list(judgements_export(campaign=judged, file_format=file_format, chunk_size=6))
    assert len(chunks) >= 7
    assert all(isinstance(chunk, bytes) for chunk in chunks)


def test_filters_leave_out_gold_items_and_flagged_annotators(judged, second_annotator) -> None:
    AnnotatorFlag.objects.create(annotator=second_annotator, reason="rubber-stamping")
    filtered = judgements_csv(campaign=judged, filters=VoteFilters(exclude_flagged=True, exclude_gold=True))
    rows = read_csv(b"".join(filtered))
    assert len(rows) == 3 * CRITERIA
    assert {row["annotator"] for row in rows} == {"ann"}
    assert {row["is_gold"] for row in rows} == {"false"}


def test_the_raw_export_needs_a_few_queries_per_chunk_however_many_judgements_it_holds(
    judged, annotator, django_assert_max_num_queries
) -> None:
    for _ in range(10):
        factories.judgement(factories.comparison(judged), annotator, "a")
    # The cursor's query, then per chunk one each for its comparisons, its answer flags and its adjudications, and
    # one for annotators not seen before.
    with django_assert_max_num_queries(1 + 4):
        rows = read_csv(b"".join(judgements_csv(campaign=judged, chunk_size=1000)))
    assert len(rows) == 17 * CRITERIA
    with django_assert_max_num_queries(1 + 4 * 11):
        rows = read_csv(b"".join(judgements_csv(campaign=judged, chunk_size=10)))
    assert len(rows) == 17 * CRITERIA


def test_the_export_judgements_command_writes_csv_to_stdout_and_parquet_to_a_file(judged, tmp_path) -> None:
    out = io.StringIO()
    call_command("export_judgements", "--campaign", "Export me", "--format", "csv", stdout=out)
    assert len(read_csv(out.getvalue().encode())) == 7 * CRITERIA
    target = tmp_path / "judgements.parquet"
    call_command("export_judgements", "--campaign", "Export me", "--format", "parquet", "--out", str(target))
    assert pq.read_table(target).num_rows == 7 * CRITERIA


def test_the_export_stats_command_prints_exactly_the_statistics_json(judged) -> None:
    out = io.StringIO()
    call_command("export_stats", "--campaign", "Export me", "--format", "json", "--n-boot", "50", stdout=out)
    printed = json.loads(out.getvalue())
    expected = campaign_statistics_json(campaign=judged, n_boot=50)
    assert printed == json.loads(json.dumps(expected, default=_json_default))
    assert {"pairs", "leaderboard", "agreement", "position_bias"} <= set(printed)


def test_the_export_stats_command_prints_one_table_as_csv_with_variants_named(judged) -> None:
    out = io.StringIO()
    call_command("export_stats", "--campaign", "Export me", "--format", "csv", "--n-boot", "20", stdout=out)
    rows = read_csv(out.getvalue().encode())
    assert rows
    assert {row["variant_a"] for row in rows} == {"base"}
    assert {row["criterion"] for row in rows} == set(judged.criterion_slugs)


# Downloads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("judgements.csv", "text/csv"),
        ("judgements.jsonl", "application/x-ndjson"),
        ("judgements.parquet", "application/vnd.apache.parquet"),
        ("dpo.jsonl", "application/x-ndjson"),
    ],
)
def test_a_researcher_downloads_each_raw_format_as_a_streamed_attachment(
    client, researcher, judged, name, content_type
) -> None:
    client.force_login(researcher)
    response = client.get(f"/stats/{judged.pk}/export/{name}")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith(content_type)
    stem, extension = name.split(".")
    assert response["Content-Disposition"] == f'attachment; filename="export-me-{stem}.{extension}"'
    assert b"".join(response.streaming_content)


def test_the_download_applies_the_filters_of_the_query_string(client, admin_user, judged) -> None:
    client.force_login(admin_user)
    everything = client.get(f"/stats/{judged.pk}/export/judgements.csv?include_gold=on")
    without_gold = client.get(f"/stats/{judged.pk}/export/judgements.csv")
    assert len(read_csv(b"".join(everything.streaming_content))) == 7 * CRITERIA
    assert len(read_csv(b"".join(without_gold.streaming_content))) == 6 * CRITERIA


def test_the_statistics_download_serves_json_and_a_csv_table(client, researcher, judged) -> None:
    client.force_login(researcher)
    as_json = client.get(f"/stats/{judged.pk}/export/statistics.json")
    assert as_json.status_code == 200
    assert "leaderboard" in json.loads(b"".join(as_json.streaming_content))
    as_csv = client.get(f"/stats/{judged.pk}/export/statistics.csv?table=leaderboard")
    assert as_csv.status_code == 200
    assert as_csv["Content-Disposition"].endswith('statistics-leaderboard.csv"')


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("judgements.xlsx", b"Unknown format 'xlsx': use one of csv, jsonl, parquet."),
        ("statistics.parquet", b"Unknown format 'parquet': use one of csv, json."),
        ("statistics.csv?table=nope", b"Unknown table 'nope'"),
        ("judgements.csv?since=yesterday", b"Bad filter: since"),
        ("dpo.jsonl?min_agreement=2", b"Bad selection rule: min_agreement"),
    ],
)
def test_a_bad_format_or_filter_gets_a_400_that_says_what_is_wrong(client, researcher, judged, url, message) -> None:
    client.force_login(researcher)
    response = client.get(f"/stats/{judged.pk}/export/{url}")
    assert response.status_code == 400
    assert message in response.content


def test_annotators_and_outsiders_are_refused_and_anonymous_users_sent_to_log_in(
    client, annotator, outsider, judged
) -> None:
    url = f"/stats/{judged.pk}/export/judgements.csv"
    assert client.get(url).status_code == 302
    for user in (annotator, outsider):
        client.force_login(user)
        assert client.get(url).status_code == 403


def test_an_unknown_campaign_is_a_404(client, researcher) -> None:
    client.force_login(researcher)
    assert client.get("/stats/999999/export/judgements.csv").status_code == 404


def test_answers_with_quotes_commas_newlines_and_unicode_survive_csv_and_jsonl(annotator) -> None:
    campaign = factories.campaign(name="Tricky")
    tricky = 'He said "no", then:\n- 100 °C\n- ✓ done'
    comparison = factories.comparison(campaign, texts=(tricky, "plain"))
    factories.judgement(comparison, annotator, {"overall": "a"})
    (row,) = read_csv(b"".join(judgements_csv(campaign=campaign)))
    (record,) = [json.loads(line) for line in b"".join(judgements_jsonl(campaign=campaign)).splitlines()]
    assert row["response_a"] == record["response_a"] == tricky


# Simulated judgements and retrieved passages ----------------------------------------------------------------


@pytest.fixture
def with_simulated(judged):
    """The judged campaign plus one simulated judgement (a scripted annotator's) on its first comparison."""
    oracle = factories.user("oracle-0", "annotator")
    first = judged.comparisons.order_by("pk").first()
    factories.judgement(first, oracle, "b", simulated=True)
    return judged


def test_the_export_commands_leave_simulated_judgements_out_unless_asked(with_simulated, tmp_path) -> None:
    out = io.StringIO()
    call_command("export_judgements", "--campaign", "Export me", "--format", "csv", stdout=out)
    rows = read_csv(out.getvalue().encode())
    assert len(rows) == 7 * CRITERIA and "oracle-0" not in {row["annotator"] for row in rows}
    assert {row["is_simulated"] for row in rows} == {"false"}
    target = tmp_path / "all.parquet"
    call_command(
        "export_judgements",
        "--campaign",
        "Export me",
        "--format",
        "parquet",
        "--out",
        str(target),
        "--include-simulated",
    )
    table = pq.read_table(target)
    assert table.num_rows == 8 * CRITERIA and sum(table.column("is_simulated").to_pylist()) == CRITERIA

    def overall_b_wins(*extra: str) -> int:
        out = io.StringIO()
        call_command("export_stats", "--campaign", "Export me", "--format", "json", "--n-boot", "0", *extra, stdout=out)
        return next(row["wins_b"] for row in json.loads(out.getvalue())["pairs"] if row["criterion"] == "overall")

    assert overall_b_wins() == 3  # people: b won three of the six ordinary judgements
    assert overall_b_wins("--include-simulated") == 4


def test_the_download_counts_simulated_judgements_only_with_include_simulated(
    client, researcher, with_simulated
) -> None:
    client.force_login(researcher)
    url = f"/stats/{with_simulated.pk}/export/judgements.csv"
    assert len(read_csv(b"".join(client.get(url).streaming_content))) == 6 * CRITERIA
    rows = read_csv(b"".join(client.get(url, {"include_simulated": "on"}).streaming_content))
    assert len(rows) == 7 * CRITERIA
    assert {row["annotator"] for row in rows if row["is_simulated"] == "true"} == {"oracle-0"}


def test_the_raw_exports_carry_each_answers_retrieved_passages_as_json_text(annotator) -> None:
    campaign = factories.campaign(name="Retrieval")
    comparison = factories.comparison(campaign)
    passages = [{"document": "guide.md", "chunk": 2, "text": "Keep objects at 18 °C.", "score": 0.81}]
    comparison.candidate_b.retrieved = passages
    comparison.candidate_b.save(update_fields=["retrieved"])
    factories.judgement(comparison, annotator, {"overall": "b"})

    (row,) = read_csv(b"".join(judgements_csv(campaign=campaign)))
    (record,) = [json.loads(line) for line in b"".join(judgements_jsonl(campaign=campaign)).splitlines()]
    table = pq.read_table(io.BytesIO(b"".join(judgements_parquet(campaign=campaign))))
    for exported in (row, record, table.to_pylist()[0]):
        assert json.loads(exported["retrieved_a"]) == []
        assert json.loads(exported["retrieved_b"]) == passages
