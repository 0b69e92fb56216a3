import json

import pytest
from django.core.management import CommandError, call_command

from evaluator.errors import ServiceError
from evaluator.models import Campaign, Prompt
from evaluator.parsing.prompts import PromptFileError, parse_prompt_file
from evaluator.services.imports import prompts_import
from tests import factories


def jsonl(*records: object) -> bytes:
    return "\n".join(json.dumps(record) for record in records).encode()


def test_it_parses_jsonl_and_csv_alike() -> None:
    from_jsonl = parse_prompt_file("p.jsonl", jsonl({"id": "a", "prompt": "Why?", "reference": "Because."}))
    from_csv = parse_prompt_file("p.csv", b"id,prompt,reference\na,Why?,Because.\n")
    assert from_jsonl == from_csv
    assert from_csv[0].external_id == "a"
    assert from_csv[0].reference == "Because."


@pytest.mark.parametrize(
    ("name", "data", "line", "problem"),
    [
        ("p.jsonl", b'{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": "x"', 2, "invalid JSON"),
        ("p.jsonl", b'{"id": "a", "prompt": "ok"}\n["a list"]', 2, "expected a JSON object"),
        ("p.jsonl", b'{"id": "a", "prompt": "ok"}\n\n{"id": "b"}', 3, "field 'prompt' is missing or empty"),
        ("p.jsonl", b'{"id": "a", "prompt": 42}', 1, "field 'prompt' must be a string, not int"),
        ("p.jsonl", b'{"id": "a", "prompt": "ok", "answer": "x"}', 1, "unknown field(s) answer"),
        ("p.jsonl", b'{"id": "a", "prompt": "ok"}\n{"id": "a", "prompt": "again"}', 2, "id 'a' repeats line 1"),
        ("p.csv", b"id,text\na,hello\n", 1, "the header lacks column(s) prompt"),
        ("p.csv", b"id,prompt\na,hello\nb,\n", 3, "field 'prompt' is missing or empty"),
        ("p.csv", b"id,prompt\na,hello,extra\n", 2, "more values than header columns"),
        ("p.jsonl", b'{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": "a\\u0000b"}', 2, "'prompt' contains a NUL"),
        ("p.csv", b"id,prompt,context\na,hello,x\x00y\n", 2, "field 'context' contains a NUL character"),
    ],
)
def test_a_malformed_file_gets_an_error_naming_the_line_and_the_problem(
    name: str, data: bytes, line: int, problem: str
) -> None:
    with pytest.raises(PromptFileError) as caught:
        parse_prompt_file(name, data)
    assert caught.value.line == line
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("p.txt", b"hello", "unsupported file type"),
        ("p.jsonl", b"\xff\xfe\x00", "not UTF-8"),
        ("p.jsonl", b"\n\n", "holds no prompts"),
    ],
)
def test_a_file_that_is_not_a_prompt_file_is_refused_whole(name: str, data: bytes, problem: str) -> None:
    with pytest.raises(PromptFileError, match=problem):
        parse_prompt_file(name, data)


@pytest.mark.django_db
def test_nothing_from_a_file_with_one_bad_line_is_stored() -> None:
    campaign = factories.campaign()
    data = jsonl({"id": "a", "prompt": "fine"}, {"id": "b", "prompt": "fine too"}) + b'\n{"id": "c"}'
    with pytest.raises(PromptFileError):
        prompts_import(campaign=campaign, file_name="p.jsonl", data=data)
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_it_refuses_ids_the_campaign_already_has_and_stores_nothing() -> None:
    campaign = factories.campaign()
    prompts_import(campaign=campaign, file_name="p.jsonl", data=jsonl({"id": "a", "prompt": "one"}))
    with pytest.raises(ServiceError, match="already has prompt id"):
        prompts_import(
            campaign=campaign, file_name="p.jsonl", data=jsonl({"id": "new", "prompt": "x"}, {"id": "a", "prompt": "y"})
        )
    assert list(Prompt.objects.values_list("external_id", flat=True)) == ["a"]


@pytest.mark.django_db
def test_the_import_page_names_the_line_and_stores_nothing(client, admin_user, tmp_path) -> None:
    campaign = factories.campaign()
    client.force_login(admin_user)
    upload = tmp_path / "prompts.jsonl"
    upload.write_bytes(jsonl({"id": "a", "prompt": "fine"}) + b"\nnot json")
    with upload.open("rb") as handle:
        response = client.post(f"/manage/campaigns/{campaign.pk}/prompts/", {"file": handle}, follow=True)
    assert response.status_code == 200
    assert "prompts.jsonl: line 2: invalid JSON" in response.content.decode()
    assert "Nothing was imported" in response.content.decode()
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_the_import_page_refuses_an_oversized_upload(client, admin_user, settings, tmp_path) -> None:
    settings.PREFLOOP_MAX_UPLOAD_BYTES = 1024
    campaign = factories.campaign()
    client.force_login(admin_user)
    upload = tmp_path / "big.jsonl"
    upload.write_bytes(jsonl(*({"id": str(i), "prompt": "x" * 50} for i in range(40))))
    with upload.open("rb") as handle:
        response = client.post(f"/manage/campaigns/{campaign.pk}/prompts/", {"file": handle}, follow=True)
    assert "the limit is 1,024" in response.content.decode()
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_the_command_imports_a_file_and_reports_errors_with_the_line(tmp_path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("id,prompt\nq1,What is LoRA?\nq2,What is DPO?\n")
    call_command("import_prompts", str(good), "--campaign", "cmd", "--create")
    assert Prompt.objects.filter(campaign__name="cmd").count() == 2

    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt\nq3,Fine\nq4,\n")
    with pytest.raises(CommandError, match=r"bad.csv: line 3: field 'prompt' is missing or empty"):
        call_command("import_prompts", str(bad), "--campaign", "cmd")
    assert Prompt.objects.filter(campaign__name="cmd").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["p.jsonl", "p.csv"])
def test_a_file_that_is_not_utf8_is_refused_naming_the_line_and_the_byte(name: str) -> None:
    campaign = factories.campaign()
    first = b"\xef\xbb\xbf" + (b'{"id": "a", "prompt": "fine"}\n' if name == "p.jsonl" else b"id,prompt\n")
    before_bad_byte = first + (b'{"id": "b", "prompt": "caf' if name == "p.jsonl" else b"b,caf")
    data = before_bad_byte + (b'\xe9"}\n' if name == "p.jsonl" else b"\xe9\n")
    with pytest.raises(PromptFileError) as caught:
        prompts_import(campaign=campaign, file_name=name, data=data)
    assert str(caught.value) == f"line 2: the file is not UTF-8 (byte {len(before_bad_byte)})"
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_a_jsonl_line_whose_text_holds_u2028_or_u0085_imports_intact() -> None:
    campaign = factories.campaign()
    records = [
        {"id": "a", "prompt": "One\u2028two\u2029three", "reference": "Four\u0085five"},
        {"id": "b", "prompt": "Plain"},
    ]
    # Written unescaped, with CRLF line ends: only "\n" may end a line, and its "\r" is dropped.
    data = "\r\n".join(json.dumps(record, ensure_ascii=False) for record in records).encode() + b"\r\n"
    assert "\u2028".encode() in data
    assert prompts_import(campaign=campaign, file_name="p.jsonl", data=data) == 2
    stored = Prompt.objects.get(external_id="a")
    assert (stored.text, stored.reference) == ("One\u2028two\u2029three", "Four\u0085five")


@pytest.mark.django_db
def test_a_csv_field_holding_u2028_or_u0085_imports_intact() -> None:
    campaign = factories.campaign()
    text = 'id,prompt,reference\r\na,One\u2028two\u2029three,Four\u0085five\r\nb,"Quoted\u2028and\nsplit",\r\n'
    assert prompts_import(campaign=campaign, file_name="p.csv", data=text.encode()) == 2
    stored = dict(Prompt.objects.values_list("external_id", "text"))
    assert stored == {"a": "One\u2028two\u2029three", "b": "Quoted\u2028and\nsplit"}
    assert Prompt.objects.get(external_id="a").reference == "Four\u0085five"


@pytest.mark.django_db
def test_a_refused_file_leaves_no_campaign_made_by_create_behind(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt\nq1,Fine\nq2,\n")
    with pytest.raises(CommandError) as caught:
        call_command("import_prompts", str(bad), "--campaign", "fresh", "--create")
    assert str(caught.value) == f"{bad}: line 3: field 'prompt' is missing or empty; nothing was imported"
    assert not Campaign.objects.exists()
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_the_command_says_nothing_was_imported_once_when_ids_are_taken(tmp_path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl({"id": "a", "prompt": "one"}))
    call_command("import_prompts", str(good), "--campaign", "cmd", "--create")
    with pytest.raises(CommandError) as caught:
        call_command("import_prompts", str(good), "--campaign", "cmd")
    assert str(caught.value) == f"{good}: The campaign already has prompt id(s): a; nothing was imported"
    assert list(Prompt.objects.values_list("external_id", flat=True)) == ["a"]
