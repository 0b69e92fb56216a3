"""Importing pairwise judgements collected elsewhere: Prefloop's JSONL shape and Chatbot Arena's."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import IntegrityError

from evaluator.models import (
    Assignment,
    Campaign,
    Candidate,
    Comparison,
    CriterionChoice,
    Judgement,
    ModelVariant,
    Prompt,
)
from evaluator.parsing.judgements import JudgementFileError, parse_judgement_file
from evaluator.services.imports import judgements_import
from evaluator.services.rating import assignment_next
from tests import factories

pytestmark = pytest.mark.django_db

SLUGS = ["factual_accuracy", "relevance", "safety", "alignment", "formatting", "overall"]


def jsonl(*records: object) -> bytes:
    return "\n".join(json.dumps(record) for record in records).encode()


def prefloop_line(**fields: object) -> dict[str, object]:
    return {
        "prompt_id": "q1",
        "prompt": "What is the boiling point of water?",
        "model_a": "alpha",
        "model_b": "beta",
        "response_a": "100 °C at sea level.",
        "response_b": "Around 90 °C.",
        "annotator": "imported-ann",
        "criteria": {slug: "a" for slug in SLUGS},
        "shown_left": "b",
        "time_ms": 4200,
        **fields,
    }


def arena_line(**fields: object) -> dict[str, object]:
    return {
        "question_id": "arena-7",
        "model_a": "gamma",
        "model_b": "delta",
        "winner": "model_b",
        "judge": "arena_user_1",
        "conversation_a": [{"role": "user", "content": "Tell a joke."}, {"role": "assistant", "content": "Knock."}],
        "conversation_b": [{"role": "user", "content": "Tell a joke."}, {"role": "assistant", "content": "Pun."}],
        "turn": 1,
        "language": "English",
        **fields,
    }


def stored_counts() -> dict[str, int]:
    models = (Prompt, ModelVariant, Candidate, Comparison, Assignment, Judgement, CriterionChoice)
    return {model.__name__: model.objects.count() for model in models} | {"users": get_user_model().objects.count()}


def test_it_imports_prefloop_lines_creating_prompts_variants_comparisons_and_annotators() -> None:
    campaign = factories.campaign(name="Imported")
    summary = judgements_import(
        campaign=campaign, data=jsonl(prefloop_line(), prefloop_line(annotator="second", shown_left="a"))
    )
    assert (summary.judgements, summary.prompts_created, summary.variants_created) == (2, 1, 2)
    assert (summary.comparisons_created, summary.annotators_created) == (1, 2)
    comparison = Comparison.objects.get()
    assert comparison.prompt.external_id == "q1"
    assert comparison.prompt.text == "What is the boiling point of water?"
    assert (comparison.variant_a.name, comparison.variant_b.name) == ("alpha", "beta")
    assert comparison.variant_a.base_model == "imported:alpha"
    assert comparison.candidate_a.text == "100 °C at sea level."
    judgement = Judgement.objects.get(annotator__username="imported-ann")
    assert judgement.time_on_task_ms == 4200
    assert judgement.assignment.left_is_a is False  # shown_left "b"
    assert judgement.assignment.completed_at is not None
    assert dict(judgement.choices.values_list("criterion", "outcome")) == {slug: "a" for slug in SLUGS}
    user = judgement.annotator
    assert not user.has_usable_password()
    assert list(user.groups.values_list("name", flat=True)) == ["annotator"]


def test_a_line_whose_model_a_has_the_higher_id_is_canonicalised_and_its_outcomes_flipped() -> None:
    campaign = factories.campaign(name="Flip")
    beta = factories.variant(name="beta")  # beta gets the lower id, so it becomes variant a
    factories.variant(name="alpha")
    criteria = {**{slug: "a" for slug in SLUGS}, "safety": "b", "formatting": "tie"}
    judgements_import(campaign=campaign, data=jsonl(prefloop_line(criteria=criteria, shown_left="a")))
    comparison = Comparison.objects.get()
    assert comparison.variant_a == beta
    assert comparison.candidate_a.text == "Around 90 °C."
    assert comparison.candidate_b.text == "100 °C at sea level."
    outcomes = dict(CriterionChoice.objects.values_list("criterion", "outcome"))
    assert outcomes["overall"] == "b"  # alpha won, and alpha is now b
    assert outcomes["safety"] == "a"
    assert outcomes["formatting"] == "tie"
    assert Assignment.objects.get().left_is_a is False  # alpha (now b) was shown on the left


def test_a_line_without_shown_left_is_recorded_with_a_on_the_left() -> None:
    campaign = factories.campaign(name="No side")
    line = prefloop_line()
    del line["shown_left"]
    del line["time_ms"]
    judgements_import(campaign=campaign, data=jsonl(line))
    assert Assignment.objects.get().left_is_a is True
    assert Judgement.objects.get().time_on_task_ms == 0


def test_it_imports_arena_lines_as_overall_judgements_with_both_bad_as_a_tie() -> None:
    campaign = factories.campaign(name="Arena")
    data = jsonl(
        arena_line(),
        arena_line(judge="arena_user_2", winner="tie (bothbad)"),
        arena_line(question_id=8, judge="arena_user_2", winner="model_a", conversation_a=None, conversation_b=None),
    )
    summary = judgements_import(campaign=campaign, data=data)
    assert summary.judgements == 3
    assert set(CriterionChoice.objects.values_list("criterion", flat=True)) == {"overall"}
    first = Comparison.objects.get(prompt__external_id="arena-7")
    assert first.prompt.text == "Tell a joke."
    assert (first.variant_a.name, first.candidate_a.text, first.candidate_b.text) == ("gamma", "Knock.", "Pun.")
    outcomes = dict(
        CriterionChoice.objects.filter(judgement__comparison=first).values_list(
            "judgement__annotator__username", "outcome"
        )
    )
    assert outcomes == {"arena_user_1": "b", "arena_user_2": "tie"}
    without_text = Prompt.objects.get(external_id="8")
    assert without_text.text == "(prompt text not imported: question 8)"


def test_other_answers_of_the_same_models_make_another_comparison_with_the_next_sample_index() -> None:
    campaign = factories.campaign(name="Samples")
    judgements_import(campaign=campaign, data=jsonl(prefloop_line(), prefloop_line(response_a="Boiling: 100 °C.")))
    assert Comparison.objects.count() == 2
    assert sorted(Candidate.objects.filter(variant__name="alpha").values_list("sample_index", flat=True)) == [0, 1]
    assert Candidate.objects.filter(variant__name="beta").count() == 1


def test_an_existing_campaign_prompt_and_variant_are_reused() -> None:
    campaign = factories.campaign(name="Reuse")
    prompt = factories.prompt(campaign, external_id="q1", text="Stored text.")
    alpha = factories.variant(name="alpha")
    judgements_import(campaign=campaign, data=jsonl(prefloop_line()))
    comparison = Comparison.objects.get()
    assert comparison.prompt == prompt
    assert comparison.variant_a == alpha
    assert Prompt.objects.count() == 1


@pytest.mark.parametrize(
    ("lines", "line", "field", "problem"),
    [
        ([prefloop_line(), "{not json"], 2, None, "invalid JSON"),
        ([prefloop_line(), ["a list"]], 2, None, "expected a JSON object"),
        ([{"prompt_id": "q1"}], 1, "criteria", "missing"),
        ([prefloop_line(criteria={"overall": "a", "humour": "b"})], 1, "criteria.humour", "unknown criterion"),
        ([prefloop_line(criteria={"overall": "left"})], 1, "criteria.overall", "must be one of a, b, tie"),
        ([prefloop_line(criteria={"safety": "a"})], 1, "criteria.overall", "missing"),
        ([prefloop_line(criteria=["a"])], 1, "criteria", "must be an object, not list"),
        ([prefloop_line(prompt=42)], 1, "prompt", "must be a string, not int"),
        ([prefloop_line(prompt="  ")], 1, "prompt", "must not be empty"),
        ([prefloop_line(response_a="ok\x00")], 1, "response_a", "contains a NUL character"),
        ([{k: v for k, v in prefloop_line().items() if k != "response_b"}], 1, "response_b", "missing"),
        ([prefloop_line(model_b="alpha")], 1, "model_b", "the same model as model_a"),
        ([prefloop_line(shown_left="left")], 1, "shown_left", "must be 'a' or 'b'"),
        ([prefloop_line(time_ms=-3)], 1, "time_ms", "must be a non-negative integer"),
        ([prefloop_line(time_ms="fast")], 1, "time_ms", "must be a non-negative integer"),
        ([prefloop_line(rating=5)], 1, "rating", "unknown field"),
        (
            [
                prefloop_line(),
                prefloop_line(
                    model_a="beta", model_b="alpha", response_a="Around 90 °C.", response_b="100 °C at sea level."
                ),
            ],
            2,
            "annotator",
            "already judged",
        ),
        ([arena_line(winner="model_c")], 1, "winner", "must be one of model_a, model_b, tie, tie (bothbad)"),
        ([arena_line(judge=None)], 1, "judge", "missing"),
        ([{k: v for k, v in arena_line().items() if k != "question_id"}], 1, "question_id", "missing"),
        ([arena_line(conversation_a="text")], 1, "conversation_a", "must be a list of messages"),
        (
            [arena_line(conversation_b=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\x00"}])],
            1,
            "conversation_b[1]",
            "contains a NUL character",
        ),
    ],
)
def test_every_error_names_the_line_and_the_field(lines, line, field, problem) -> None:
    data = "\n".join(item if isinstance(item, str) else json.dumps(item) for item in lines).encode()
    with pytest.raises(JudgementFileError) as caught:
        parse_judgement_file(data, criteria=SLUGS)
    assert caught.value.line == line
    assert caught.value.field == field
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"line {line}")


def test_an_error_on_the_last_line_stores_nothing_at_all() -> None:
    campaign = factories.campaign(name="All or nothing")
    before = stored_counts()
    data = jsonl(prefloop_line(), arena_line(), prefloop_line(prompt_id="q2", criteria={"overall": "x"}))
    with pytest.raises(JudgementFileError, match=r"line 3, field 'criteria.overall'"):
        judgements_import(campaign=campaign, data=data)
    assert stored_counts() == before


def test_importing_the_same_file_twice_is_refused_and_stores_nothing_more() -> None:
    campaign = factories.campaign(name="Twice")
    data = jsonl(prefloop_line(), arena_line())
    judgements_import(campaign=campaign, data=data)
    before = stored_counts()
    with pytest.raises(JudgementFileError, match=r"line 1, field 'annotator': 'imported-ann' already judged"):
        judgements_import(campaign=campaign, data=data)
    assert stored_counts() == before


def test_the_command_imports_a_file_and_reports_errors_with_the_line(tmp_path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(prefloop_line(), arena_line()))
    with pytest.raises(CommandError, match="no campaign named 'New'"):
        call_command("import_judgements", str(good), "--campaign", "New")
    call_command("import_judgements", str(good), "--campaign", "New", "--create")
    assert Campaign.objects.get(name="New").comparisons.count() == 2
    with pytest.raises(CommandError, match=r"line 1, field 'annotator'.*nothing was imported"):
        call_command("import_judgements", str(good), "--campaign", "New")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(arena_line(winner="model_z")))
    with pytest.raises(CommandError, match=r"bad.jsonl: line 1, field 'winner'"):
        call_command("import_judgements", str(bad), "--campaign", "New")


@pytest.mark.django_db
def test_imported_comparisons_count_as_full_for_the_assignment_engine(annotator) -> None:
    campaign = Campaign.objects.create(name="imported", overlap=1)
    line = {
        "prompt_id": "q1",
        "prompt": "Why?",
        "model_a": "m1",
        "model_b": "m2",
        "response_a": "A",
        "response_b": "B",
        "annotator": "someone",
        "criteria": {slug: "a" for slug in campaign.criterion_slugs},
    }
    judgements_import(campaign=campaign, data=json.dumps(line).encode())

    comparison = Comparison.objects.get()
    assert (comparison.live_assignments, comparison.judgement_count, comparison.vote_margin) == (1, 1, 1.0)
    assert assignment_next(annotator=annotator) is None  # k = 1 is reached: nothing to hand out


def nothing_stored() -> dict[str, int]:
    return {name: 0 for name in stored_counts()}


@pytest.mark.parametrize(("winner", "shown"), [(["model_a"], "list"), ({"model_a": True}, "dict")])
def test_an_arena_winner_that_is_a_list_or_an_object_is_refused_naming_the_line(winner, shown) -> None:
    campaign = factories.campaign(name="Arena shapes")
    with pytest.raises(JudgementFileError) as caught:
        judgements_import(campaign=campaign, data=jsonl(arena_line(), arena_line(judge="other", winner=winner)))
    assert str(caught.value) == (
        f"line 2, field 'winner': must be one of model_a, model_b, tie, tie (bothbad), not {shown}"
    )
    assert stored_counts() == nothing_stored()


def test_a_file_that_is_not_utf8_is_refused_naming_the_line_and_the_byte() -> None:
    campaign = factories.campaign(name="Latin-1")
    first = b"\xef\xbb\xbf" + jsonl(prefloop_line()) + b"\n"  # the byte-order mark counts in the offset
    before_bad_byte = first + b'{"prompt": "caf'
    data = before_bad_byte + b'\xe9"}\n'
    with pytest.raises(JudgementFileError) as caught:
        judgements_import(campaign=campaign, data=data)
    assert str(caught.value) == f"line 2: the file is not UTF-8 (byte {len(before_bad_byte)})"
    assert stored_counts() == nothing_stored()


def test_a_jsonl_line_whose_text_holds_u2028_or_u0085_imports_intact() -> None:
    campaign = factories.campaign(name="Separators")
    prompt = "First line\u2028second line\u2029third\u0085fourth"
    response = "Yes\u2028no\u0085maybe"
    line = prefloop_line(prompt=prompt, response_a=response)
    # Written unescaped, with CRLF line ends: only "\n" may end a line, and its "\r" is dropped.
    data = "\r\n".join(json.dumps(record, ensure_ascii=False) for record in (line, arena_line())).encode() + b"\r\n"
    assert "\u2028".encode() in data
    summary = judgements_import(campaign=campaign, data=data)
    assert summary.judgements == 2
    comparison = Comparison.objects.get(prompt__external_id="q1")
    assert comparison.prompt.text == prompt
    assert comparison.candidate_a.text == response


def test_a_refused_file_leaves_no_campaign_made_by_create_behind(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(prefloop_line(), arena_line(winner="model_z")))
    with pytest.raises(CommandError) as caught:
        call_command("import_judgements", str(bad), "--campaign", "Fresh", "--create")
    assert str(caught.value) == (
        f"{bad}: line 2, field 'winner': must be one of model_a, model_b, tie, tie (bothbad), not 'model_z'; "
        "nothing was imported"
    )
    assert not Campaign.objects.exists()
    assert stored_counts() == nothing_stored()


def test_a_file_the_database_refuses_leaves_no_campaign_variants_prompts_or_users_behind(tmp_path, monkeypatch) -> None:
    def refuse(**kwargs: object) -> None:
        raise IntegrityError("duplicate key")

    # The last write of an import failing, as when a concurrent import of the same file gets there first.
    monkeypatch.setattr("evaluator.services.imports.comparison_counters_refresh", refuse)
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(prefloop_line(), arena_line()))
    with pytest.raises(CommandError) as caught:
        call_command("import_judgements", str(good), "--campaign", "Fresh", "--create")
    assert str(caught.value) == (f"{good}: the database refused the import (duplicate key); nothing was imported")
    assert not Campaign.objects.exists()
    assert stored_counts() == nothing_stored()


def test_the_command_says_nothing_was_imported_once_when_a_file_is_imported_twice(tmp_path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(prefloop_line(), arena_line()))
    call_command("import_judgements", str(good), "--campaign", "Twice", "--create")
    before = stored_counts()
    with pytest.raises(CommandError) as caught:
        call_command("import_judgements", str(good), "--campaign", "Twice")
    assert str(caught.value) == (
        f"{good}: line 1, field 'annotator': 'imported-ann' already judged prompt 'q1' (alpha vs beta) in this "
        "campaign (was the file imported before?); nothing was imported"
    )
    assert stored_counts() == before
