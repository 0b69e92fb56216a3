"""A DPO dataset uses a judge's verdicts only when asked (download ?judge=, command --judge), and its metadata then
names the judge."""

import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from evaluator.models import JobStatus, Judge, JudgeJob
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def judged(annotator):
    """A campaign of three pairs: one a person preferred a on, one the judge found b in both orders (no person
    rated it), one the judge split. The judge has a finished job on the campaign."""
    campaign = factories.campaign(name="Judged campaign")
    human, decided, split = (factories.comparison(campaign, texts=(f"a{i}", f"b{i}")) for i in range(3))
    factories.judgement(human, annotator, "a")
    judge = Judge.objects.create(
        name="Ünïcode judge", kind="endpoint", base_url="http://127.0.0.1:9/v1", model_name="judge-model"
    )
    JudgeJob.objects.create(judge=judge, campaign=campaign, criteria=["overall"], status=JobStatus.SUCCEEDED)
    for pair, choices in ((decided, ("right", "left")), (split, ("left", "left"))):
        factories.judge_verdicts(judge, pair, choices)
    return campaign, judge


def chosen(lines: list[dict]) -> list[str]:
    return sorted(record["chosen"][0]["content"] for record in lines)


def download(client, campaign, **params: str):
    response = client.get(reverse("export_dpo", args=[campaign.pk]), params)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def test_the_download_leaves_the_judge_out_unless_asked_and_then_names_it(client, researcher, judged) -> None:
    campaign, judge = judged
    client.force_login(researcher)

    plain, body = download(client, campaign)
    assert chosen([json.loads(line) for line in body.splitlines()]) == ["a0"]
    metadata = json.loads(plain["Prefloop-Dataset-Metadata"])
    assert metadata["sources"] == {"human_judgements": True, "judge": None} and metadata["records"] == 1

    with_judge, body = download(client, campaign, judge=str(judge.pk))
    assert chosen([json.loads(line) for line in body.splitlines()]) == ["a0", "b1"]  # the split pair adds nothing
    assert f"dpo-judge-{judge.pk}.jsonl" in with_judge["Content-Disposition"]
    named = json.loads(with_judge["Prefloop-Dataset-Metadata"])["sources"]["judge"]
    assert named["pk"] == judge.pk and named["name"] == "Ünïcode judge"

    alone, body = download(client, campaign, judge=str(judge.pk), metadata="on")
    assert alone["Content-Type"] == "application/json"
    assert json.loads(body)["sources"]["judge"]["name"] == "Ünïcode judge"
    assert json.loads(body)["rules"]["judge_id"] == judge.pk


@pytest.mark.parametrize("value", ["999999", "one"])
def test_the_download_refuses_a_judge_that_is_not_the_campaigns(client, researcher, judged, value) -> None:
    campaign, judge = judged
    client.force_login(researcher)

    response, body = download(client, campaign, judge=value)

    assert response.status_code == 400
    assert f"Unknown judge '{value}'" in body.decode() and f"{judge.pk} (Ünïcode judge)" in body.decode()


def test_the_statistics_page_offers_the_campaigns_judges_for_the_dpo_download(client, researcher, judged) -> None:
    campaign, judge = judged
    client.force_login(researcher)

    page = client.get(reverse("stats_campaign", args=[campaign.pk])).content.decode()

    assert 'name="judge"' in page and f'<option value="{judge.pk}">Ünïcode judge</option>' in page
    assert "None (human judgements only)" in page


def test_the_command_writes_metadata_beside_the_dataset_naming_the_judge_only_when_asked(judged, tmp_path) -> None:
    campaign, judge = judged
    plain = tmp_path / "plain.jsonl"
    call_command("export_dpo_dataset", "--campaign", campaign.name, "--out", str(plain), "--format", "jsonl")
    assert chosen([json.loads(line) for line in plain.read_text().splitlines()]) == ["a0"]
    metadata = json.loads((tmp_path / "plain.jsonl.metadata.json").read_text())
    assert metadata["sources"]["judge"] is None and metadata["rules"]["judge_id"] is None

    out = tmp_path / "judged.jsonl"
    call_command(
        "export_dpo_dataset",
        "--campaign",
        campaign.name,
        "--out",
        str(out),
        "--format",
        "jsonl",
        "--judge",
        str(judge.pk),
    )
    assert chosen([json.loads(line) for line in out.read_text().splitlines()]) == ["a0", "b1"]
    metadata = json.loads((tmp_path / "judged.jsonl.metadata.json").read_text(encoding="utf-8"))
    assert metadata["sources"]["judge"]["name"] == "Ünïcode judge" and metadata["records"] == 2
    assert metadata["campaign"] == {"id": campaign.pk, "name": campaign.name}


def test_the_command_refuses_an_unknown_or_idle_judge_and_weights_with_a_judge(judged, tmp_path) -> None:
    campaign, judge = judged
    out = tmp_path / "never.jsonl"
    base = ["export_dpo_dataset", "--campaign", campaign.name, "--out", str(out), "--format", "jsonl"]
    idle = Judge.objects.create(name="idle", kind="endpoint", base_url="http://127.0.0.1:9/v1", model_name="m")

    with pytest.raises(CommandError, match="no judge with id 999999"):
        call_command(*base, "--judge", "999999")
    with pytest.raises(CommandError, match=r"'idle'.*has no verdicts on 'Judged campaign'"):
        call_command(*base, "--judge", str(idle.pk))
    with pytest.raises(CommandError, match="not with weights"):
        call_command(*base, "--judge", str(judge.pk), "--weights", '{"overall": 1}')
    assert not list(tmp_path.iterdir())
