"""QLoRA SFT on the tiny model in 4-bit: the loss is logged, the adapter trains, the base does not; the data
builders name the line of a bad record."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from training.preferences import PreferenceFileError, read_preference_jsonl, write_jsonl
from training.sft import (
    SFTFileError,
    SFTJobConfig,
    build_sft_trainer,
    main,
    read_sft_jsonl,
    sft_records,
    sft_records_from_preferences,
    sft_records_from_qa,
    train_sft,
)

# Real TRL/PEFT training or merging on the tiny model: left out of `make test-fast`.
pytestmark = pytest.mark.training


def job_config(model: Path, dataset: Path, output_dir: Path, **overrides: Any) -> SFTJobConfig:
    values = {
        "base_model": str(model),
        "dataset_path": str(dataset),
        "output_dir": str(output_dir),
        "max_steps": 3,
        "learning_rate": 1e-3,
        "max_length": 128,
        "qlora": {"lora_r": 8, "lora_alpha": 16},
        **overrides,
    }
    return SFTJobConfig.from_dict(values)


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict[str, str]]) -> Path:
    """Twelve question-answer lines from the tiny model's corpus, with an extra key that is ignored."""
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    lines = [
        json.dumps({"id": index, "question": row["question"], "answer": row["answer"]})
        for index, row in enumerate(corpus[:12])
    ]
    path.write_text("\n".join(lines) + "\n\n")
    return path


def test_it_trains_on_the_chosen_answers_of_a_preference_file_and_logs_the_loss_of_every_step(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    logged: list[dict[str, Any]] = []

    result = train_sft(
        job_config(tiny_model_dir, preference_file, tmp_path, dataset_format="preferences"), on_log=logged.append
    )

    step_logs = [entry for entry in logged if "loss" in entry]
    assert [entry["step"] for entry in step_logs] == [1, 2, 3]
    assert all(entry["loss"] > 0 for entry in step_logs)
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert written == logged == result.metrics
    assert result.steps == 3 and result.start_step == 0 and not result.stopped_early
    assert result.train_loss == pytest.approx(sum(entry["loss"] for entry in step_logs) / 3, rel=1e-3)
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert weights and all(".lora_A." in name or ".lora_B." in name for name in weights)
    assert all(tensor.abs().sum() > 0 for name, tensor in weights.items() if ".lora_B." in name)
    assert (result.adapter_dir / "tokenizer.json").is_file()


def test_training_changes_the_lora_weights_and_leaves_the_base_weights_alone(
    tiny_model_dir: Path, qa_file: Path, tmp_path: Path
) -> None:
    config = job_config(tiny_model_dir, qa_file, tmp_path, dataset_format="qa")
    trainer = build_sft_trainer(config, sft_records(config))
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}

    trainer.train()

    after = dict(trainer.model.named_parameters())
    lora = [name for name in before if "lora_" in name]
    base = [name for name in before if "lora_" not in name]
    assert lora and base
    assert any("q_proj.base_layer" in name for name in base)  # the 4-bit weights are among those checked
    assert [name for name in lora if ".lora_B." in name and torch.equal(before[name], after[name])] == []
    assert [name for name in base if not torch.equal(before[name], after[name])] == []


def test_the_loss_covers_only_the_answer_unless_the_config_asks_for_the_whole_conversation(
    tiny_model_dir: Path, qa_file: Path, tmp_path: Path
) -> None:
    answers_only = build_sft_trainer(
        job_config(tiny_model_dir, qa_file, tmp_path / "a", dataset_format="qa"), sft_records_from_qa(qa_file)
    )
    whole = build_sft_trainer(
        job_config(tiny_model_dir, qa_file, tmp_path / "b", dataset_format="qa", completion_only_loss=False),
        sft_records_from_qa(qa_file),
    )

    first, conversation = answers_only.train_dataset[0], whole.train_dataset[0]
    # The prompt's tokens (the chat-templated question and the assistant header) carry the label -100: no loss.
    masked = first["labels"].count(-100)
    assert 0 < masked < len(first["labels"])
    assert first["labels"][masked:] == first["input_ids"][masked:]
    assert conversation["input_ids"] == first["input_ids"]
    assert conversation["labels"] == conversation["input_ids"]


def test_the_command_trains_from_a_yaml_config_and_prints_the_adapter_dir(
    tiny_model_dir: Path, qa_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = tmp_path / "messages.jsonl"
    write_jsonl(sft_records_from_qa(qa_file), messages)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_config(tiny_model_dir, messages, tmp_path / "run", max_steps=2).to_dict()))

    status = main(["--config", str(job)])

    assert status == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "run" / "adapter")
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("dataset_format: csv\n", "dataset_format must be one of messages, preferences, qa, got 'csv'"),
        ("completion_only_loss: 1\n", "completion_only_loss must be true or false, got 1"),
        ("beta: 0.1\n", r"unknown config key\(s\): beta; known: base_model, "),
    ],
)
def test_the_command_exits_2_naming_the_field_of_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"base_model: m\ndataset_path: d.jsonl\noutput_dir: {tmp_path / 'out'}\n{content}")

    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(job)])

    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_the_command_exits_2_naming_the_line_of_a_bad_dataset(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "qa.jsonl"
    dataset.write_text('{"question": "Why?", "answer": "Because."}\n{"question": "How?"}\n')
    job = tmp_path / "job.yaml"
    job.write_text(
        f"base_model: {tiny_model_dir}\ndataset_path: {dataset}\ndataset_format: qa\noutput_dir: {tmp_path / 'out'}\n"
    )

    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(job)])

    assert exit_.value.code == 2
    assert "line 2: missing key(s): answer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_preference_records_become_conversations_ending_in_their_chosen_answer(preference_file: Path) -> None:
    preferences = read_preference_jsonl(preference_file)

    records = sft_records_from_preferences(preference_file)

    assert len(records) == len(preferences)
    assert records[0] == {"messages": [*preferences[0]["prompt"], *preferences[0]["chosen"]]}
    assert all(record["messages"][-1]["role"] == "assistant" for record in records)


def test_a_bad_preference_file_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "preferences.jsonl"
    path.write_text('{"prompt": [{"role": "user", "content": "Hi"}], "chosen": []}\n')

    with pytest.raises(PreferenceFileError, match="line 1: missing key"):
        sft_records_from_preferences(path)


def test_question_answer_lines_become_user_and_assistant_messages(qa_file: Path, corpus: list[dict[str, str]]) -> None:
    records = sft_records_from_qa(qa_file)

    assert len(records) == 12
    assert records[0] == {
        "messages": [
            {"role": "user", "content": corpus[0]["question"]},
            {"role": "assistant", "content": corpus[0]["answer"]},
        ]
    }


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"question": "Q", "answer": "A"}\n{"question": "Q",\n', r"line 2: not valid JSON \(.* at column \d+\)"),
        ('["Q", "A"]\n', "line 1: expected a JSON object, got list"),
        ('{"question": "Q"}\n', r"line 1: missing key\(s\): answer"),
        ('{"question": "  ", "answer": "A"}\n', "line 1: question must be a non-empty string, got '  '"),
        ('\n{"question": "Q", "answer": 42}\n', "line 2: answer must be a non-empty string, got 42"),
        ("\n\n", "the file is empty; it holds no question-answer records"),
    ],
)
def test_a_bad_question_answer_file_is_refused_naming_the_line_and_the_problem(
    tmp_path: Path, lines: str, message: str
) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(lines)

    with pytest.raises(SFTFileError, match=message):
        sft_records_from_qa(path)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "hello"}, 'line 1: messages: expected a non-empty list of {"role", "content"} messages'),
        ({"messages": [{"role": "user"}]}, 'message 1: expected an object with exactly the keys "role" and'),
        ({"messages": [{"role": "tool", "content": "x"}]}, "message 1: role must be system or user or assistant"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "there is no user message"),
        (
            {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
            "the last message must be the assistant's non-empty answer",
        ),
    ],
)
def test_a_bad_conversation_file_is_refused_naming_the_line_and_the_problem(
    tmp_path: Path, record: dict[str, Any], message: str
) -> None:
    path = tmp_path / "messages.jsonl"
    path.write_text(json.dumps(record) + "\n")

    with pytest.raises(SFTFileError, match=re.escape(message)):
        read_sft_jsonl(path)


def test_a_config_round_trips_through_yaml_with_its_sft_fields(tmp_path: Path) -> None:
    config = SFTJobConfig(
        base_model="m", dataset_path="qa.jsonl", output_dir="out", dataset_format="qa", completion_only_loss=False
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))

    assert SFTJobConfig.from_yaml(path) == config
    assert config.learning_rate == 2e-4


# Inside a JSON string these need no escape, and json.dumps(ensure_ascii=False) writes them as they are.
SEPARATORS = "line\u2028separator, paragraph\u2029separator, next\x85line"


def test_it_reads_a_question_and_answer_that_hold_line_separators(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    write_jsonl([{"question": f"Why? {SEPARATORS}", "answer": SEPARATORS}], path)

    assert sft_records_from_qa(path) == [
        {
            "messages": [
                {"role": "user", "content": f"Why? {SEPARATORS}"},
                {"role": "assistant", "content": SEPARATORS},
            ]
        }
    ]


def test_it_reads_a_conversation_whose_answer_holds_line_separators(tmp_path: Path) -> None:
    record = {"messages": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": SEPARATORS}]}
    path = tmp_path / "messages.jsonl"
    write_jsonl([record], path)

    assert read_sft_jsonl(path) == [record]


def test_it_reads_question_answer_files_with_windows_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'{"question": "One?", "answer": "Yes."}\r\n\r\n{"question": "Two?", "answer": "No."}\r\n')

    assert [record["messages"][1]["content"] for record in sft_records_from_qa(path)] == ["Yes.", "No."]
