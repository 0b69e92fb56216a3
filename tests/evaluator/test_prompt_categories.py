"""Prompt categories: imported with the prompt file, a filter and a leaderboard per category on the statistics page."""

import json

import pytest

from evaluator.models import Prompt
from evaluator.parsing.prompts import PromptFileError, parse_prompt_file
from evaluator.selectors.campaigns import VoteFilters
from evaluator.services.imports import prompts_import
from tests import factories

pytestmark = pytest.mark.django_db

MARKDOWN = "# Plan\n\n1. **Read** the question\n2. Answer it\n- a note\n"


def test_the_category_is_imported_from_a_jsonl_key_or_a_csv_column_and_is_optional() -> None:
    campaign = factories.campaign()
    jsonl = b'{"id": "j1", "prompt": "Sum 2 and 2?", "category": " maths "}\n{"id": "j2", "prompt": "Hello?"}\n'
    assert prompts_import(campaign=campaign, file_name="p.jsonl", data=jsonl) == 2
    csv = b"id,prompt,category\nc1,Write a loop,coding\nc2,Say hi,\n"
    assert prompts_import(campaign=campaign, file_name="p.csv", data=csv) == 2
    stored = dict(Prompt.objects.filter(campaign=campaign).values_list("external_id", "category"))
    assert stored == {"j1": "maths", "j2": "", "c1": "coding", "c2": ""}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"id": "a", "prompt": "x", "category": 3}', "line 1: field 'category' must be a string, not int"),
        (
            json.dumps({"id": "a", "prompt": "x", "category": "c" * 65}).encode(),
            "line 1: field 'category' is longer than 64 characters",
        ),
    ],
)
def test_a_bad_category_refuses_the_file_naming_the_line(data: bytes, problem: str) -> None:
    with pytest.raises(PromptFileError) as error:
        parse_prompt_file("p.jsonl", data)
    assert str(error.value) == problem


def test_the_category_filter_round_trips_through_a_snapshot_s_json() -> None:
    filters = VoteFilters(category="coding", exclude_outliers=True)
    assert VoteFilters.from_json(json.loads(json.dumps(filters.to_json()))) == filters
    with pytest.raises(ValueError, match="category must be a category name or null"):
        VoteFilters.from_json({"category": 7})


def categorised_campaign(annotators):
    """Two categories with opposite winners: the tuned variant wins coding, the base variant wins maths."""
    campaign = factories.campaign(name="Categories", overlap=len(annotators))
    base, tuned = factories.variant(name="base"), factories.variant(name="tuned")
    for category, winner, count in (("coding", "b", 4), ("maths", "a", 3)):
        for _ in range(count):
            comparison = factories.comparison(campaign, variants=(base, tuned), texts=(MARKDOWN, "Plain answer."))
            Prompt.objects.filter(pk=comparison.prompt_id).update(category=category)
            for annotator in annotators:
                factories.judgement(comparison, annotator, winner)
    return campaign


def test_the_statistics_page_has_a_leaderboard_per_category_and_a_category_filter(
    client, researcher, annotator, second_annotator
) -> None:
    campaign = categorised_campaign([annotator, second_annotator])
    client.force_login(researcher)

    response = client.get(f"/stats/{campaign.pk}/")
    assert response.status_code == 200
    boards = {board.category: board for board in response.context["report"].arena.categories}
    assert sorted(boards) == ["coding", "maths"]
    assert boards["coding"].votes == 8 and boards["coding"].rows[0]["variant_name"] == "tuned"
    assert boards["maths"].rows[0]["variant_name"] == "base"
    html = response.content.decode()
    assert "Leaderboards per prompt category" in html and "?category=coding" in html

    coding = client.get(f"/stats/{campaign.pk}/", {"category": "coding"}).context["report"]
    assert coding.n_votes == 8
    assert [board.category for board in coding.arena.categories] == ["coding"]


def test_the_page_and_the_json_export_show_style_controlled_ratings_beside_the_raw_ones(
    client, researcher, annotator, second_annotator
) -> None:
    campaign = categorised_campaign([annotator, second_annotator])
    client.force_login(researcher)
    response = client.get(f"/stats/{campaign.pk}/")
    sections = {section.slug: section for section in response.context["report"].arena.style_sections}
    assert set(sections) == set(campaign.criterion_slugs)
    overall = sections["overall"]
    assert {row["variant_name"] for row in overall.rows} == {"base", "tuned"}
    assert {row["label"] for row in overall.coefficients} == {
        "Answer length",
        "Markdown headers",
        "List items",
        "Bold spans",
    }
    html = response.content.decode()
    assert "Style control" in html and "Style-controlled" in html

    export = client.get(f"/stats/{campaign.pk}/export/statistics.json")
    assert export.status_code == 200
    report = json.loads(b"".join(export.streaming_content))
    assert {row["variant"] for row in report["style_control"]["leaderboard"]} == {"base", "tuned"}
    assert {row["category"] for row in report["category_leaderboards"]} == {"coding", "maths"}
    assert {row["variant"] for row in report["category_leaderboards"]} == {"base", "tuned"}
