"""The statistics page, its charts and the REST API over the same numbers."""

import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from evaluator.models import AnnotatorFlag
from evaluator.services.accounts import api_token_rotate
from evaluator.services.rating import judgement_submit
from evaluator.stats.plots import Interval, interval_chart
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
            judgement_submit(
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

    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_rotate(user=researcher)}")
    campaigns = api.get("/api/campaigns/").json()
    assert [c["name"] for c in campaigns] == ["Stats"] and campaigns[0]["comparison_count"] == 8
    stats = api.get(f"/api/campaigns/{campaign.pk}/statistics/", {"n_boot": 200}).json()
    overall = next(row for row in stats["pairs"] if row["criterion"] == "overall")
    assert (overall["variant_a"], overall["variant_b"]) == (base.name, tuned.name)
    assert (overall["wins_a"], overall["wins_b"], overall["ties"]) == (0, 12, 4)
    assert {"left_share", "p_value"} <= set(stats["position_bias"])
    assert api.get(f"/api/campaigns/{campaign.pk}/statistics/", {"n_boot": 5}).status_code == 400
    # The page's filters hold for the API too: no prompt has this category, and versions start at 1.
    assert (
        api.get(f"/api/campaigns/{campaign.pk}/statistics/", {"n_boot": 200, "category": "poems"}).json()["pairs"] == []
    )
    assert api.get(f"/api/campaigns/{campaign.pk}/statistics/", {"guideline_version": 0}).status_code == 400

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


# Simulated judgements ----------------------------------------------------------------------------------------------


def with_scripted_votes(campaign) -> None:
    """One simulated judgement per comparison of the campaign, for variant a, by a scripted account."""
    oracle = factories.user("oracle-0", "annotator")
    for comparison in campaign.comparisons.all():
        factories.judgement(comparison, oracle, "a", simulated=True)


def test_the_statistics_page_counts_simulated_judgements_only_when_the_filter_asks(
    client, researcher, annotator, second_annotator
) -> None:
    campaign, _, _ = judged_campaign([annotator, second_annotator])
    with_scripted_votes(campaign)
    client.force_login(researcher)
    people = client.get(f"/stats/{campaign.pk}/")
    assert "Include simulated judgements" in people.content.decode()
    everyone = client.get(f"/stats/{campaign.pk}/", {"include_simulated": "on"}).context["report"]
    assert everyone.n_votes == people.context["report"].n_votes * 3 // 2  # a third judge on every comparison
    overall = next(section for section in everyone.sections if section.slug == "overall")
    assert (overall.pairs[0]["wins_a"], overall.pairs[0]["wins_b"]) == (8, 12)


def test_the_api_counts_simulated_judgements_only_with_include_simulated(
    annotator, second_annotator, researcher
) -> None:
    campaign, _, _ = judged_campaign([annotator, second_annotator])
    with_scripted_votes(campaign)
    api = APIClient()
    api.force_authenticate(researcher)
    url = f"/api/campaigns/{campaign.pk}/statistics/"

    def overall_wins(**query) -> tuple[int, int]:
        stats = api.get(url, {"n_boot": 100, **query}).json()
        row = next(row for row in stats["pairs"] if row["criterion"] == "overall")
        return row["wins_a"], row["wins_b"]

    assert overall_wins() == (0, 12)
    assert overall_wins(include_simulated="true") == (8, 12)
    assert api.get(url, {"include_simulated": "maybe"}).status_code == 400
    csv = api.get(f"/api/campaigns/{campaign.pk}/judgements.csv", {"include_simulated": "true"})
    assert len(b"".join(csv.streaming_content).decode().splitlines()) == 1 + 24 * len(campaign.criterion_slugs)


# The answers page --------------------------------------------------------------------------------------------------


def test_the_answers_page_shows_prompts_answers_as_sanitized_markdown_and_retrieved_passages(
    client, researcher, annotator, second_annotator
) -> None:
    campaign, _, _ = judged_campaign([annotator, second_annotator], wins_for_b=1, ties=0)
    answer = campaign.comparisons.get().candidate_b
    answer.text = "**Keep it cool.** <script>alert(1)</script>"
    answer.retrieved = [
        {"document": "care <guide>.md", "chunk": 3, "text": "Store at *18 °C*.", "score": 0.8123},
        "not a passage",
    ]
    answer.save(update_fields=["text", "retrieved"])
    client.force_login(researcher)
    stats = client.get(f"/stats/{campaign.pk}/").content.decode()
    assert f'href="/stats/{campaign.pk}/answers/"' in stats

    response = client.get(f"/stats/{campaign.pk}/answers/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<strong>Keep it cool.</strong>" in html and "<script>alert(1)</script>" not in html
    assert "care &lt;guide&gt;.md, chunk 3 · score 0.812" in html and "<em>18 °C</em>" in html
    assert "Retrieved passages (1)" in html
    assert "tuned" in html and "base &lt;b&gt;model&lt;/b&gt;" in html and "sample 0" in html


def test_the_answers_page_is_paginated_in_a_fixed_number_of_queries(
    client, researcher, django_assert_num_queries
) -> None:
    campaign = factories.campaign()
    base, tuned = factories.variant(name="base"), factories.variant(name="tuned")
    client.force_login(researcher)
    url = f"/stats/{campaign.pk}/answers/"
    factories.comparison(campaign, variants=(base, tuned))
    # Session, the user with their roles, campaign, the count and the page (answers with prompts and variants).
    with django_assert_num_queries(5):
        assert len(client.get(url).context["page"].object_list) == 2
    for _ in range(30):
        factories.comparison(campaign, variants=(base, tuned))
    with django_assert_num_queries(5):
        assert len(client.get(url).context["page"].object_list) == 25

    last = client.get(url, {"page": 3})
    assert len(last.context["page"].object_list) == 62 - 50
    assert "Page 3 of 3" in last.content.decode() and "Next" not in last.content.decode()
    assert client.get(url, {"page": "x"}).context["page"].number == 1


def test_the_answers_page_is_for_researchers_and_admins(client, annotator, outsider, admin_user) -> None:
    campaign = factories.campaign()
    url = f"/stats/{campaign.pk}/answers/"
    for user in (annotator, outsider):
        client.force_login(user)
        assert client.get(url).status_code == 403
    client.force_login(admin_user)
    assert client.get(url).status_code == 200
    assert client.get("/stats/999999/answers/").status_code == 404
