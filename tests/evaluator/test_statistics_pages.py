"""The statistics page, its charts and the REST API over the same numbers."""

import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from evaluator import services
from evaluator.models import AnnotatorFlag
from evaluator.plots import Interval, interval_chart
from tests import factories

pytestmark = pytest.mark.django_db


def judged_campaign(annotators, *, wins_for_b: int = 6, ties: int = 2):
    """A campaign of two variants where b wins `wins_for_b` comparisons and `ties` are ties, rated by everyone."""
    campaign = factories.campaign(name="Stats", overlap=len(annotators))
    base = factories.variant(name="base <b>model</b>")
    tuned = factories.variant(name="tuned", parent=base)
    for index in range(wins_for_b + ties):
        comparison = factories.comparison(campaign, variants=(base, tuned))
        side = "right" if index < wins_for_b else "tie"
        for annotator in annotators:
            assignment = factories.assignment(comparison, annotator, left_is_a=True)
            services.judgement_submit(
                token=str(assignment.token),
                annotator=annotator,
                choices={slug: side for slug in campaign.criterion_slugs},
            )
    return campaign, base, tuned


def test_the_statistics_page_shows_tables_charts_and_escapes_variant_names(
    client, researcher, annotator, second_annotator
) -> None:
    campaign, _, _ = judged_campaign([annotator, second_annotator])
    client.force_login(researcher)
    response = client.get(f"/stats/{campaign.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count("<svg") >= 2 * len(campaign.criterion_slugs)
    assert "base &lt;b&gt;model&lt;/b&gt;" in html and "<b>model</b>" not in html
    overall = next(section for section in response.context["report"].sections if section.slug == "overall")
    row = overall.pairs[0]
    assert (row["wins_a"], row["wins_b"], row["ties"]) == (0, 12, 4)
    assert row["p_value"] == pytest.approx(2 / 4096)


def test_the_filters_narrow_the_votes_and_bad_dates_are_reported(
    client, researcher, annotator, second_annotator
) -> None:
    campaign, _, _ = judged_campaign([annotator, second_annotator])
    AnnotatorFlag.objects.create(annotator=annotator, reason="always picks the same side")
    client.force_login(researcher)
    everyone = client.get(f"/stats/{campaign.pk}/").context["report"].n_votes
    bad = client.get(f"/stats/{campaign.pk}/", {"since": "2030-01-02", "until": "2030-01-01"})
    assert bad.status_code == 400
    assert "The start date is after the end date." in bad.content.decode()
    future = client.get(f"/stats/{campaign.pk}/", {"since": "2999-01-01"}).context["report"]
    assert future.n_votes == 0 and not future.sections
    majority = client.get(f"/stats/{campaign.pk}/", {"view": "prompt"}).context["report"]
    assert majority.n_votes == everyone // 2  # two annotators agree everywhere: one majority per comparison
    unflagged = client.get(f"/stats/{campaign.pk}/", {"exclude_flagged": "on"}).context["report"]
    assert unflagged.n_votes == everyone // 2


def test_the_api_needs_a_researcher_token_and_returns_the_statistics(annotator, second_annotator, researcher) -> None:
    campaign, base, tuned = judged_campaign([annotator, second_annotator])
    api = APIClient()
    assert api.get("/api/campaigns/").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=annotator).key}")
    assert api.get("/api/campaigns/").status_code == 403

    api.credentials(HTTP_AUTHORIZATION=f"Token {services.api_token_rotate(user=researcher)}")
    campaigns = api.get("/api/campaigns/").json()
    assert [c["name"] for c in campaigns] == ["Stats"] and campaigns[0]["comparison_count"] == 8
    stats = api.get(f"/api/campaigns/{campaign.pk}/statistics/", {"n_boot": 200}).json()
    overall = next(row for row in stats["pairs"] if row["criterion"] == "overall")
    assert (overall["variant_a"], overall["variant_b"]) == (base.name, tuned.name)
    assert (overall["wins_a"], overall["wins_b"], overall["ties"]) == (0, 12, 4)
    assert {"left_share", "p_value"} <= set(stats["position_bias"])
    assert api.get(f"/api/campaigns/{campaign.pk}/statistics/", {"n_boot": 5}).status_code == 400

    csv = api.get(f"/api/campaigns/{campaign.pk}/judgements.csv")
    assert csv.status_code == 200 and csv["Content-Disposition"].startswith("attachment")
    rows = b"".join(csv.streaming_content).decode().splitlines()
    assert len(rows) == 1 + 16 * len(campaign.criterion_slugs)  # header + judgements × criteria
    dpo = b"".join(api.get(f"/api/campaigns/{campaign.pk}/dpo.jsonl").streaming_content).decode().splitlines()
    assert len(dpo) == 12 and json.loads(dpo[0])["chosen"][0]["role"] == "assistant"
    assert api.get(f"/api/campaigns/{campaign.pk}/judgements.xlsx").status_code == 400
    assert api.get("/api/campaigns/999999/statistics/").status_code == 404


def test_the_openapi_schema_lists_the_statistics_endpoint(researcher) -> None:
    api = APIClient()
    api.force_authenticate(researcher)
    schema = api.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    assert "/api/campaigns/{campaign_id}/statistics/" in json.loads(schema.content)["paths"]


def test_a_chart_escapes_its_labels() -> None:
    svg = interval_chart([Interval("<script>alert(1)</script>", 0.5, 0.4, 0.6)], lo=0, hi=1, reference=0.5, title="t")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
