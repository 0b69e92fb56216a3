"""QLoRA DPO on the tiny model in 4-bit: the loss is logged, the adapter trains, the base does not."""

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from training.dpo import DPOJobConfig, build_dpo_trainer, train_dpo
from training.generation.hf import generate, load_for_generation
from training.generation.settings import GenerationRequest, GenerationSettings
from training.preferences import read_preference_jsonl
from training.trainer_common import QLoRASettings, TrainingResult, latest_checkpoint

# Real TRL/PEFT training or merging on the tiny model: left out of `make test-fast`.
pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]


def job_config(model: Path, dataset: Path, output_dir: Path, **overrides: Any) -> DPOJobConfig:
    # A learning rate far above a real run's, so that three steps move the adapter visibly.
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
    return DPOJobConfig.from_dict(values)


@pytest.fixture(scope="module")
def trained(
    tiny_model_dir: Path, preference_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainingResult, list[dict[str, Any]], Path]:
    """One three-step run, shared by the tests that inspect its outputs."""
    output_dir = tmp_path_factory.mktemp("dpo-run")
    logged: list[dict[str, Any]] = []
    result = train_dpo(job_config(tiny_model_dir, preference_file, output_dir), on_log=logged.append)
    return result, logged, output_dir


def test_the_loss_of_every_step_is_logged_to_the_callback_and_to_metrics_jsonl(
    trained: tuple[TrainingResult, list[dict[str, Any]], Path],
) -> None:
    result, logged, output_dir = trained

    step_logs = [entry for entry in logged if "loss" in entry]
    assert [entry["step"] for entry in step_logs] == [1, 2, 3]
    assert {entry["max_steps"] for entry in step_logs} == {3}
    # DPO's loss starts at ln 2 exactly: the adapter is zero, so the policy equals the reference.
    assert step_logs[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert all("rewards/margins" in entry for entry in step_logs)
    written = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert written == logged == result.metrics
    assert result.steps == 3
    assert result.train_loss == pytest.approx(sum(entry["loss"] for entry in step_logs) / 3, rel=1e-3)
    assert not result.stopped_early


def test_it_saves_only_lora_weights_and_they_moved_from_their_zero_start(
    trained: tuple[TrainingResult, list[dict[str, Any]], Path],
) -> None:
    result, _, output_dir = trained

    assert result.adapter_dir == output_dir / "adapter"
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert config["peft_type"] == "LORA" and config["r"] == 8
    assert weights and all(".lora_A." in name or ".lora_B." in name for name in weights)
    lora_b = [tensor for name, tensor in weights.items() if ".lora_B." in name]
    # LoRA initialises B to zero; every B that is non-zero now was moved by training.
    assert all(tensor.abs().sum() > 0 for tensor in lora_b)
    assert (result.adapter_dir / "tokenizer.json").is_file()
    assert not (output_dir / "checkpoints").exists()


def test_the_adapter_loads_back_for_generation_and_changes_the_model(
    trained: tuple[TrainingResult, list[dict[str, Any]], Path], tiny_model_dir: Path
) -> None:
    result, _, _ = trained
    model, tokenizer = load_for_generation(
        str(tiny_model_dir), adapter_path=str(result.adapter_dir), quantization="4bit", device="cpu"
    )
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is DPO?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(chat, add_special_tokens=False, return_tensors="pt")

    with torch.inference_mode():
        adapted = model(**inputs).logits
        with model.disable_adapter():
            base = model(**inputs).logits
    [answer] = generate(
        model,
        tokenizer,
        [GenerationRequest("dpo", [{"role": "user", "content": "What is DPO?"}])],
        GenerationSettings(max_new_tokens=24, temperature=0),
        seed=0,
    )

    assert not torch.allclose(adapted, base)
    assert answer.text and answer.completion_tokens > 0


def test_training_changes_the_lora_weights_and_leaves_the_base_weights_alone(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    config = job_config(tiny_model_dir, preference_file, tmp_path)
    trainer = build_dpo_trainer(config, read_preference_jsonl(preference_file))
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}

    trainer.train()

    after = dict(trainer.model.named_parameters())
    lora = [name for name in before if "lora_" in name]
    base = [name for name in before if "lora_" not in name]
    assert lora and base
    assert any("q_proj.base_layer" in name for name in base)  # the 4-bit weights are among those checked
    assert [name for name in lora if ".lora_B." in name and torch.equal(before[name], after[name])] == []
    assert [name for name in base if not torch.equal(before[name], after[name])] == []


def test_the_same_seed_trains_the_same_adapter(
    trained: tuple[TrainingResult, list[dict[str, Any]], Path],
    tiny_model_dir: Path,
    preference_file: Path,
    tmp_path: Path,
) -> None:
    result, _, _ = trained

    again = train_dpo(job_config(tiny_model_dir, preference_file, tmp_path))

    first = load_file(result.adapter_dir / "adapter_model.safetensors")
    second = load_file(again.adapter_dir / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_should_stop_ends_training_early_and_still_saves_the_adapter(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    asked: list[int] = []

    def stop_after_first_step() -> bool:
        asked.append(1)
        return True

    result = train_dpo(
        job_config(tiny_model_dir, preference_file, tmp_path, max_steps=10), should_stop=stop_after_first_step
    )

    assert result.stopped_early
    assert result.steps == 1
    assert asked == [1]
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def stop_after(step: int) -> Callable[[], bool]:
    """A should_stop that answers True at the end of optimizer step `step` (it is asked once per step)."""
    asked = itertools.count(1)
    return lambda: next(asked) >= step


def test_a_run_stopped_after_step_4_and_resumed_from_its_checkpoint_ends_as_an_uninterrupted_run(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    def config(output_dir: Path) -> DPOJobConfig:
        return job_config(tiny_model_dir, preference_file, output_dir, max_steps=6, save_steps=2)

    uninterrupted = train_dpo(config(tmp_path / "whole"))
    run_dir = tmp_path / "interrupted"
    checkpoints: list[tuple[Path, int]] = []
    first = train_dpo(
        config(run_dir), should_stop=stop_after(4), on_checkpoint=lambda path, step: checkpoints.append((path, step))
    )
    resume_from = latest_checkpoint(run_dir)
    logged: list[dict[str, Any]] = []
    resumed = train_dpo(
        config(run_dir),
        on_log=logged.append,
        on_checkpoint=lambda path, step: checkpoints.append((path, step)),
        resume_from_checkpoint=resume_from,
    )

    assert first.stopped_early and first.steps == 4 and first.start_step == 0
    assert resume_from == run_dir / "checkpoints" / "checkpoint-4"
    assert checkpoints == [(run_dir / "checkpoints" / f"checkpoint-{step}", step) for step in (2, 4, 6)]
    assert not resumed.stopped_early and resumed.start_step == 4 and resumed.steps == 6
    assert [entry["step"] for entry in logged if "loss" in entry] == [5, 6]
    written = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in written if "loss" in entry] == [1, 2, 3, 4, 5, 6]
    assert [entry for entry in written if "train_runtime" in entry] == [logged[-1]]
    whole_losses = [entry["loss"] for entry in uninterrupted.metrics if "loss" in entry]
    assert [entry["loss"] for entry in written if "loss" in entry] == whole_losses
    # The checkpoint restores the adapter (in the bfloat16 TRL keeps a QLoRA adapter in: see training.trainers),
    # optimizer, scheduler and RNG states, and the data order is skipped forward: the resumed run repeats the
    # uninterrupted one bit for bit.
    whole = load_file(uninterrupted.adapter_dir / "adapter_model.safetensors")
    joined = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert whole.keys() == joined.keys()
    assert [name for name in whole if not torch.equal(whole[name], joined[name])] == []
    # save_total_limit 2: the oldest checkpoint went when the third was written.
    kept = sorted(path.name for path in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-4", "checkpoint-6"]


def test_a_stop_between_checkpoints_still_leaves_a_complete_checkpoint_of_its_step_and_nothing_half_written(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    checkpoints: list[int] = []

    result = train_dpo(
        job_config(tiny_model_dir, preference_file, tmp_path, max_steps=6, save_steps=2),
        should_stop=stop_after(3),
        on_checkpoint=lambda path, step: checkpoints.append(step),
    )

    assert result.stopped_early and result.steps == 3
    assert checkpoints == [2, 3]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint-3"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter", "checkpoints", "metrics.jsonl"]


def test_latest_checkpoint_skips_the_folders_a_killed_run_left_half_written(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    for step, state in [
        (2, {"global_step": 2}),
        (10, {"global_step": 10}),
        (12, None),  # killed before trainer_state.json, which the Trainer writes last
        (14, "cut short"),  # killed while writing it
        (16, {"global_step": 15}),  # not this folder's state
    ]:
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(
                json.dumps(state)[:-3] if state == "cut short" else json.dumps(state)
            )
    (checkpoints / "checkpoint-last").mkdir()

    assert latest_checkpoint(tmp_path) == checkpoints / "checkpoint-10"
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-10"
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_resuming_from_a_half_written_checkpoint_is_refused_before_anything_is_touched(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "checkpoints" / "checkpoint-4"
    broken.mkdir(parents=True)
    config = job_config(tiny_model_dir, preference_file, tmp_path / "run", max_steps=6, save_steps=2)

    with pytest.raises(ValueError, match=r"cannot resume from .*checkpoint-4: the checkpoint is incomplete"):
        train_dpo(config, resume_from_checkpoint=broken)
    with pytest.raises(ValueError, match="is not a checkpoint folder"):
        train_dpo(config, resume_from_checkpoint=tmp_path)

    assert not (tmp_path / "run").exists()


def test_the_command_trains_from_a_yaml_config_and_prints_the_adapter_dir(
    tiny_model_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    config = job_config(tiny_model_dir, preference_file, tmp_path / "run", max_steps=2)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(config.to_dict()))

    completed = run_dpo_command(job)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == str(tmp_path / "run" / "adapter")
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 3  # two steps and the summary


def test_the_command_exits_2_naming_the_field_of_a_bad_config(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("base_model: m\ndataset_path: d.jsonl\noutput_dir: out\nbeta: -1\n")

    completed = run_dpo_command(job)

    assert completed.returncode == 2
    assert "beta must be a number > 0, got -1" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_the_command_exits_2_naming_the_line_of_a_bad_dataset(tmp_path: Path, tiny_model_dir: Path) -> None:
    dataset = tmp_path / "preferences.jsonl"
    dataset.write_text('{"prompt": []}\n')
    job = tmp_path / "job.yaml"
    job.write_text(f"base_model: {tiny_model_dir}\ndataset_path: {dataset}\noutput_dir: {tmp_path / 'out'}\n")

    completed = run_dpo_command(job)

    assert completed.returncode == 2
    assert "line 1: missing key(s): chosen, rejected" in completed.stderr


def run_dpo_command(job: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training.dpo", "--config", str(job)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = DPOJobConfig(
        base_model="Qwen/Qwen2.5-0.5B-Instruct",
        dataset_path="prefs.jsonl",
        output_dir="out",
        beta=0.2,
        qlora=QLoRASettings(lora_r=4, target_modules=["q_proj", "v_proj"]),
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))

    assert DPOJobConfig.from_yaml(path) == config
    assert config.to_dict()["qlora"] == {
        "load_in_4bit": True,
        "quant_type": "nf4",
        "double_quant": True,
        "lora_r": 4,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"],
    }


REQUIRED = {"base_model": "m", "dataset_path": "d.jsonl", "output_dir": "out"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"beta": 0}, "beta must be a number > 0, got 0"),
        ({"learning_rate": -1e-5}, "learning_rate must be a number > 0 and < 1, got -1e-05"),
        ({"num_train_epochs": "two"}, "num_train_epochs must be a number > 0, got 'two'"),
        ({"max_steps": 0}, r"max_steps must be -1 \(train num_train_epochs\) or an integer >= 1, got 0"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be an integer >= 1, got 0"),
        (
            {"gradient_accumulation_steps": 1.5},
            "gradient_accumulation_steps must be an integer >= 1, got 1.5",
        ),
        ({"max_length": 4}, "max_length must be an integer >= 8, got 4"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"logging_steps": True}, "logging_steps must be an integer >= 1, got True"),
        ({"optim": "adam"}, "optim must be one of paged_adamw_8bit, .*, got 'adam'"),
        ({"save_steps": -5}, "save_steps must be an integer >= 0, got -5"),
        ({"output_dir": ""}, "output_dir must be a non-empty string, got ''"),
        ({"qlora": {"lora_r": 0}}, "qlora.lora_r must be an integer >= 1, got 0"),
        ({"qlora": {"lora_dropout": 1.0}}, "qlora.lora_dropout must be a number >= 0 and < 1, got 1.0"),
        ({"qlora": {"quant_type": "int4"}}, "qlora.quant_type must be one of nf4, fp4, got 'int4'"),
        ({"qlora": {"load_in_4bit": "yes"}}, "qlora.load_in_4bit must be true or false, got 'yes'"),
        ({"qlora": {"target_modules": []}}, "qlora.target_modules must be"),
        ({"qlora": {"rank": 8}}, r"unknown qlora key\(s\): rank; known: load_in_4bit, "),
        ({"qlora": [8]}, "qlora must be a mapping, got list"),
        ({"betta": 0.1, "lr": 1}, r"unknown config key\(s\): betta, lr; known: base_model, "),
    ],
)
def test_a_bad_config_is_refused_with_a_message_naming_the_field(
    values: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        DPOJobConfig.from_dict({**REQUIRED, **values})


def test_a_config_without_its_required_keys_is_refused_naming_them() -> None:
    with pytest.raises(ValueError, match=r"missing required key\(s\): dataset_path, output_dir"):
        DPOJobConfig.from_dict({"base_model": "m"})
