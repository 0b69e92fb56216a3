"""The built-in tiny model: deterministic, complete, loadable in 4-bit, with a working chat template."""

import json
import os
import subprocess
import sys
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from training.generation.hf import generate, load_for_generation
from training.generation.settings import GenerationRequest, GenerationSettings
from training.tiny import (
    IM_END,
    IM_START,
    build_tiny_model,
    ensure_tiny_model,
    is_complete_tiny_model,
    load_corpus,
)

REPO = Path(__file__).resolve().parents[2]
SHORT_PRETRAINING = 20


def test_the_same_seed_builds_bit_identical_weights_and_tokenizer(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "first", seed=3, pretrain_steps=SHORT_PRETRAINING)
    second = build_tiny_model(tmp_path / "second", seed=3, pretrain_steps=SHORT_PRETRAINING)

    first_weights = load_file(first / "model.safetensors")
    second_weights = load_file(second / "model.safetensors")
    assert first_weights.keys() == second_weights.keys()
    for name, tensor in first_weights.items():
        assert torch.equal(tensor, second_weights[name]), name
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()


def test_a_different_seed_builds_different_weights(tmp_path: Path) -> None:
    one = build_tiny_model(tmp_path / "one", seed=1, pretrain_steps=SHORT_PRETRAINING)
    two = build_tiny_model(tmp_path / "two", seed=2, pretrain_steps=SHORT_PRETRAINING)

    embeddings = [load_file(model / "model.safetensors")["model.embed_tokens.weight"] for model in (one, two)]
    assert not torch.equal(*embeddings)


def test_the_tiny_model_is_a_small_llama_that_learned_its_corpus(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    marker = json.loads((tiny_model_dir / "prefloop_tiny.json").read_text())

    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (64, 2, 4)
    assert config["max_position_embeddings"] == 512
    # Cross-entropy of uniform guessing over 2000 tokens is ln(2000) = 7.6; pretraining must get far below it.
    assert marker["final_loss"] < 1.0
    assert is_complete_tiny_model(tiny_model_dir)


def test_ensure_reuses_a_complete_model_without_rebuilding_it(tiny_model_dir: Path) -> None:
    written_at = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns

    assert ensure_tiny_model(tiny_model_dir) == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == written_at


def test_two_processes_racing_to_build_leave_one_complete_model_and_no_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "tiny-model"
    script = "import sys; from pathlib import Path; from training.tiny import ensure_tiny_model; " + (
        f"print(ensure_tiny_model(Path(sys.argv[1]), pretrain_steps={SHORT_PRETRAINING}))"
    )
    # One thread each: two racers on two cores, rather than four threads spinning for them.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(target)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outcomes = [racer.communicate(timeout=120) for racer in racers]

    assert [racer.returncode for racer in racers] == [0, 0], [err.decode()[-2000:] for _, err in outcomes]
    assert [out.decode().strip() for out, _ in outcomes] == [str(target), str(target)]
    assert is_complete_tiny_model(target, pretrain_steps=SHORT_PRETRAINING)
    assert sorted(path.name for path in target.parent.iterdir()) == ["tiny-model"]


def test_ensure_refuses_to_replace_a_directory_that_is_not_a_tiny_model(tmp_path: Path) -> None:
    foreign = tmp_path / "models"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's files")

    with pytest.raises(FileExistsError, match="not a Prefloop tiny model"):
        ensure_tiny_model(foreign)
    assert (foreign / "notes.txt").read_text() == "someone else's files"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models"]


def test_ensure_replaces_a_model_built_by_another_recipe(tmp_path: Path) -> None:
    target = build_tiny_model(tmp_path / "tiny-model", pretrain_steps=SHORT_PRETRAINING)

    ensure_tiny_model(target, pretrain_steps=SHORT_PRETRAINING + 1)

    assert json.loads((target / "prefloop_tiny.json").read_text())["pretrain_steps"] == SHORT_PRETRAINING + 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny-model"]


def test_the_chat_template_opens_an_assistant_turn_only_when_asked(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is an archive?"},
    ]

    with_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    without_prompt = tokenizer.apply_chat_template(messages, tokenize=False)

    system_turn = f"{IM_START}system\nBe brief.{IM_END}\n"
    assert without_prompt == system_turn + f"{IM_START}user\nWhat is an archive?{IM_END}\n"
    assert with_prompt == without_prompt + f"{IM_START}assistant\n"
    assert tokenizer.eos_token == IM_END
    assert tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)


def test_the_chat_template_renders_an_assistant_answer_after_the_prompt(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = [{"role": "user", "content": "What is LoRA?"}]
    answer = [{"role": "assistant", "content": "Low-rank adapters."}]

    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + answer, tokenize=False)

    # DPO splits prompt from completion where the two renderings diverge, so the prompt must be a prefix.
    assert full.startswith(prompt_ids)
    assert full.endswith(f"Low-rank adapters.{IM_END}\n")


def test_the_chat_template_rejects_an_unknown_role(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    with pytest.raises(Exception, match="knows the roles system, user and assistant"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "42"}], tokenize=False)


def test_it_loads_in_4bit_nf4_with_double_quantization_on_cpu_and_generates(tiny_model_dir: Path) -> None:
    model, tokenizer = load_for_generation(str(tiny_model_dir), quantization="4bit", device="cpu")

    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_state.quant_type == "nf4"
    assert q_proj.weight.quant_state.nested  # double quantisation: the block scales are quantised too
    [answer] = generate(
        model,
        tokenizer,
        [GenerationRequest("q", [{"role": "user", "content": "What is QLoRA?"}])],
        GenerationSettings(max_new_tokens=40, temperature=0),
        seed=0,
    )
    assert answer.completion_tokens > 3
    assert len(answer.text.split()) > 3


def test_greedy_answers_repeat_the_corpus_in_full_precision_and_mostly_in_4bit(tiny_model_dir: Path) -> None:
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    quantized, tokenizer = load_for_generation(str(tiny_model_dir), quantization="4bit", device="cpu")
    pairs = load_corpus()
    requests = [GenerationRequest(q, [{"role": "user", "content": q}]) for q, _ in pairs]
    settings = GenerationSettings(max_new_tokens=12, temperature=0)

    def answers_starting_right(model: PreTrainedModel) -> int:
        results = generate(model, tokenizer, requests, settings, seed=0, batch_size=16)
        corpus_answers = dict(pairs)
        return sum(result.text.split()[:3] == corpus_answers[result.key].split()[:3] for result in results)

    # The pretraining memorises most of the 80 answers; NF4 rounding costs a few.
    assert answers_starting_right(full) >= 70
    assert answers_starting_right(quantized) >= 60


def test_it_reads_a_corpus_answer_that_holds_line_separators(tmp_path: Path) -> None:
    answer = "line\u2028separator, paragraph\u2029separator, next\x85line"
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"question": "Why?", "answer": answer}, ensure_ascii=False) + "\n", encoding="utf-8")

    assert load_corpus(path) == [("Why?", answer)]
