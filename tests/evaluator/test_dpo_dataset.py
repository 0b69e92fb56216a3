"""The DPO preference dataset: selection rules, the JSONL and Hugging Face writers, and a round trip into TRL."""

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from evaluator.batching import WRITE_BATCH
from evaluator.models import AnnotatorFlag, Prompt
from evaluator.selectors.dpo_dataset import SelectionRules, dpo_hf_write, dpo_jsonl_write, preference_records_select
from tests import factories
from training.preferences import read_preference_jsonl

pytestmark = pytest.mark.django_db


def pair(record: dict) -> tuple[str, str, str]:
    return record["prompt"][0]["content"], record["chosen"][0]["content"], record["rejected"][0]["content"]


@pytest.fixture
def raters(annotator, second_annotator):
    return [annotator, second_annotator, factories.user("cleo", "annotator")]


@pytest.fixture
def base_tuned(db):
    return factories.variant(name="base"), factories.variant(name="tuned")


def comparison(campaign, variants, name: str):
    return factories.comparison(campaign, variants=variants, texts=(f"{name} by base", f"{name} by tuned"))


def test_by_default_every_decisive_overall_judgement_is_one_record_and_ties_are_dropped(raters, base_tuned) -> None:
    campaign = factories.campaign()
    first = comparison(campaign, base_tuned, "one")
    factories.judgement(first, raters[0], {"overall": "a", "safety": "b"})
    factories.judgement(first, raters[1], {"overall": "b"})
    factories.judgement(first, raters[2], {"overall": "tie"})
    records = preference_records_select(campaign=campaign)
    assert [pair(record)[1:] for record in records] == [
        ("one by base", "one by tuned"),
        ("one by tuned", "one by base"),
    ]
    assert records[0] == {
        "prompt": [{"role": "user", "content": first.prompt.text}],
        "chosen": [{"role": "assistant", "content": "one by base"}],
        "rejected": [{"role": "assistant", "content": "one by tuned"}],
    }


def test_another_criterion_can_decide(raters, base_tuned) -> None:
    campaign = factories.campaign()
    factories.judgement(comparison(campaign, base_tuned, "one"), raters[0], {"overall": "a", "safety": "b"})
    records = preference_records_select(campaign=campaign, rules=SelectionRules(criterion="safety"))
    assert [pair(record)[1] for record in records] == ["one by tuned"]


def test_weights_combine_criteria_and_a_zero_score_is_a_tie(raters, base_tuned) -> None:
    campaign = factories.campaign()
    # overall a (+1), factual_accuracy b twice weighted (-0.5 × 2 = -1 would tie); here: +1 - 0.5 = +0.5 → a.
    factories.judgement(comparison(campaign, base_tuned, "one"), raters[0], {"overall": "a", "factual_accuracy": "b"})
    # overall tie (0), factual_accuracy b (-0.5) → b.
    factories.judgement(comparison(campaign, base_tuned, "two"), raters[0], {"overall": "tie", "factual_accuracy": "b"})
    # overall a (+1), safety b (-1) → 0: a tie, dropped.
    factories.judgement(comparison(campaign, base_tuned, "three"), raters[0], {"overall": "a", "safety": "b"})
    rules = SelectionRules(weights={"overall": 1, "factual_accuracy": 0.5, "safety": 1})
    records = preference_records_select(campaign=campaign, rules=rules)
    assert [pair(record)[1] for record in records] == ["one by base", "two by tuned"]


def test_min_agreement_keeps_one_record_per_comparison_whose_majority_is_strong_enough(raters, base_tuned) -> None:
    campaign = factories.campaign(overlap=3)
    unanimous, two_of_three, split = (comparison(campaign, base_tuned, name) for name in ("all", "most", "split"))
    for rater in raters:
        factories.judgement(unanimous, rater, {"overall": "b"})
    for rater, outcome in zip(raters, ("a", "a", "b"), strict=True):
        factories.judgement(two_of_three, rater, {"overall": outcome})
    for rater, outcome in zip(raters, ("a", "b", "tie"), strict=True):
        factories.judgement(split, rater, {"overall": outcome})
    strict = preference_records_select(campaign=campaign, rules=SelectionRules(min_agreement=0.8))
    assert [pair(record)[1] for record in strict] == ["all by tuned"]
    loose = preference_records_select(campaign=campaign, rules=SelectionRules(min_agreement=0.6))
    assert [pair(record)[1] for record in loose] == ["all by tuned", "most by base"]


def test_a_majority_of_ties_makes_no_record(raters, base_tuned) -> None:
    campaign = factories.campaign(overlap=3)
    tied = comparison(campaign, base_tuned, "tied")
    for rater, outcome in zip(raters, ("tie", "tie", "a"), strict=True):
        factories.judgement(tied, rater, {"overall": outcome})
    assert preference_records_select(campaign=campaign, rules=SelectionRules(min_agreement=0.5)) == []


def test_held_out_prompts_gold_items_and_flagged_annotators_are_kept_out(raters, base_tuned) -> None:
    campaign = factories.campaign()
    kept = comparison(campaign, base_tuned, "kept")
    held = comparison(campaign, base_tuned, "held")
    gold = comparison(campaign, base_tuned, "gold")
    gold.gold_outcome = "a"
    gold.save(update_fields=["gold_outcome"])
    for item in (kept, held, gold):
        factories.judgement(item, raters[0], {"overall": "a"})
    factories.judgement(kept, raters[1], {"overall": "b"})
    AnnotatorFlag.objects.create(annotator=raters[1], reason="clicks left every time")
    rules = SelectionRules(held_out_prompts=frozenset({held.prompt.external_id}))
    assert [pair(r)[1] for r in preference_records_select(campaign=campaign, rules=rules)] == ["kept by base"]
    everyone = SelectionRules(held_out_prompts=[held.prompt.external_id], include_gold=True, exclude_flagged=False)
    chosen = [pair(r)[1] for r in preference_records_select(campaign=campaign, rules=everyone)]
    assert chosen == ["kept by base", "gold by base", "kept by tuned"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_agreement": 0}, "min_agreement must be a number in (0, 1]"),
        ({"min_agreement": 1.5}, "min_agreement must be a number in (0, 1]"),
        ({"weights": {}}, "weights must be a non-empty mapping"),
        ({"weights": {"overall": "1"}}, "the weight of 'overall' must be a finite number"),
        ({"weights": {"overall": 0}}, "at least one weight must be non-zero"),
        ({"criterion": ""}, "criterion must be a non-empty string"),
    ],
)
def test_bad_selection_rules_are_refused_with_a_clear_message(fields, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SelectionRules(**fields)


def test_the_jsonl_and_hf_writers_hold_the_same_records(raters, base_tuned, tmp_path) -> None:
    from datasets import load_from_disk

    campaign = factories.campaign()
    for name in ("one", "two"):
        factories.judgement(comparison(campaign, base_tuned, name), raters[0], {"overall": "b"})
    records = preference_records_select(campaign=campaign)
    dpo_jsonl_write(records, tmp_path / "prefs.jsonl")
    dpo_hf_write(records, tmp_path / "prefs-hf")
    assert read_preference_jsonl(tmp_path / "prefs.jsonl") == records
    assert load_from_disk(str(tmp_path / "prefs-hf")).to_list() == records


def test_the_command_writes_either_format_under_the_given_rules(raters, base_tuned, tmp_path) -> None:
    campaign = factories.campaign(name="DPO command")
    one, two = comparison(campaign, base_tuned, "one"), comparison(campaign, base_tuned, "two")
    factories.judgement(one, raters[0], {"overall": "a", "safety": "b"})
    factories.judgement(two, raters[0], {"overall": "b", "safety": "b"})
    held_out = tmp_path / "held-out.txt"
    held_out.write_text(f"# test prompts\n{two.prompt.external_id}\n")
    out = tmp_path / "prefs.jsonl"
    call_command(
        "export_dpo_dataset",
        *("--campaign", "DPO command", "--out", str(out), "--format", "jsonl"),
        *("--weights", '{"overall": 1, "safety": 2}', "--held-out-prompts", str(held_out)),
    )
    assert [pair(r)[1] for r in read_preference_jsonl(out)] == ["one by tuned"]
    call_command("export_dpo_dataset", "--campaign", "DPO command", "--out", str(tmp_path / "hf"), "--format", "hf")
    assert (tmp_path / "hf" / "dataset_info.json").is_file()
    with pytest.raises(CommandError, match="unknown criterion humour"):
        call_command("export_dpo_dataset", "--campaign", "DPO command", "--out", str(out), "--format", "jsonl",
                     "--criterion", "humour")  # fmt: skip
    with pytest.raises(CommandError, match="min_agreement must be"):
        call_command("export_dpo_dataset", "--campaign", "DPO command", "--out", str(out), "--format", "jsonl",
                     "--min-agreement", "3")  # fmt: skip


@pytest.mark.training
def test_a_dataset_exported_from_a_campaign_trains_one_dpo_step_unchanged(
    raters, base_tuned, tmp_path, tiny_model_dir: Path
) -> None:
    from datasets import load_from_disk

    from training.dpo import DPOJobConfig, build_dpo_trainer

    campaign = factories.campaign(name="Round trip")
    for index in range(4):
        item = factories.comparison(
            campaign,
            variants=base_tuned,
            texts=(f"The answer is {index}.", f"I do not know about {index}."),
        )
        factories.judgement(item, raters[0], {"overall": "a"})
        factories.judgement(item, raters[1], {"overall": "a" if index % 2 else "tie"})
    folder = tmp_path / "hf"
    call_command("export_dpo_dataset", "--campaign", "Round trip", "--out", str(folder), "--format", "hf")
    records = load_from_disk(str(folder)).to_list()
    assert len(records) == 6
    config = DPOJobConfig.from_dict(
        {
            "base_model": str(tiny_model_dir),
            "dataset_path": str(folder),
            "output_dir": str(tmp_path / "run"),
            "max_steps": 1,
            "learning_rate": 1e-3,
            "max_length": 128,
            "per_device_train_batch_size": 2,
            "qlora": {"lora_r": 8, "lora_alpha": 16},
        }
    )
    trainer = build_dpo_trainer(config, records)
    output = trainer.train()
    assert trainer.state.global_step == 1
    assert output.training_loss == pytest.approx(0.6931, abs=1e-2)
    assert json.loads(json.dumps(records)) == records  # plain JSON, nothing edited on the way in


def test_more_held_out_prompts_than_a_statement_can_bind_are_kept_out(raters, base_tuned) -> None:
    campaign = factories.campaign()
    kept = comparison(campaign, base_tuned, "kept")
    held = comparison(campaign, base_tuned, "held")
    for item in (kept, held):
        factories.judgement(item, raters[0], {"overall": "a"})
    # Past PostgreSQL's 65,535 bound parameters a statement: one `NOT IN` list of them could not be sent.
    extra = [f"bulk-{number}" for number in range(70_000)]
    Prompt.objects.bulk_create(
        (Prompt(campaign=campaign, external_id=external_id, text="Question?") for external_id in extra),
        batch_size=WRITE_BATCH,
    )
    held_out = frozenset({held.prompt.external_id, *extra})
    records = preference_records_select(campaign=campaign, rules=SelectionRules(held_out_prompts=held_out))
    assert [pair(record)[1] for record in records] == ["kept by base"]
