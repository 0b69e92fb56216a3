"""Batched generation: input order, exact token counts, left padding that changes nothing, recorded seeds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from training.generate import (
    GeneratedText,
    GenerationRequest,
    GenerationSettings,
    chat_prompt_ids,
    generate,
)

REPO = Path(__file__).resolve().parents[2]

QUESTIONS = [
    "A long question, so that this prompt needs no padding while the short ones below need plenty of it: "
    "how should a small museum store old photographs and negatives?",
    "What is DPO?",
    "What is an archive, and why do archives keep records in the order their creator used?",
    "What is LoRA?",
    "Why are ties left out of a DPO dataset?",
    "What is a replica and why do museums use them?",
    "What is top-p sampling?",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def requests_for(questions: list[str]) -> list[GenerationRequest]:
    return [
        GenerationRequest(key=f"q{index}", messages=[{"role": "user", "content": question}])
        for index, question in enumerate(questions)
    ]


GREEDY = GenerationSettings(max_new_tokens=48, temperature=0)


def test_it_returns_results_in_input_order(tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase]) -> None:
    requests = requests_for(QUESTIONS)

    results = generate(*tiny, requests, GREEDY, seed=0, batch_size=3)

    assert [result.key for result in results] == [request.key for request in requests]
    assert all(isinstance(result, GeneratedText) and result.text for result in results)


def test_batched_greedy_answers_equal_one_at_a_time_answers(
    tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    requests = requests_for(QUESTIONS)

    batched = generate(*tiny, requests, GREEDY, seed=0, batch_size=4)
    alone = [generate(*tiny, [request], GREEDY, seed=0, batch_size=1)[0] for request in requests]

    assert [(r.text, r.prompt_tokens, r.completion_tokens) for r in batched] == [
        (r.text, r.prompt_tokens, r.completion_tokens) for r in alone
    ]


def test_token_counts_are_exact_and_leave_out_padding(
    tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = tiny
    requests = requests_for(QUESTIONS)

    results = generate(model, tokenizer, requests, GREEDY, seed=0, batch_size=len(requests))

    prompt_lengths = [len(chat_prompt_ids(tokenizer, request.messages)) for request in requests]
    assert [result.prompt_tokens for result in results] == prompt_lengths
    assert len(set(prompt_lengths)) > 1  # so the batch really was padded
    for request, result in zip(requests, results, strict=True):
        prompt = tokenizer(
            tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
            return_tensors="pt",
        )
        # Unbatched, the output has no padding: its new tokens are exactly the completion.
        output = model.generate(**prompt, max_new_tokens=GREEDY.max_new_tokens, do_sample=False)
        completion = output[0, prompt["input_ids"].shape[1] :]
        assert result.completion_tokens == len(completion)
        assert result.text == tokenizer.decode(completion, skip_special_tokens=True).strip()
    # Some answers end early: in the batch they were followed by padding, which must not have been counted.
    finished = [result for result in results if result.completion_tokens < GREEDY.max_new_tokens]
    assert finished and len({result.completion_tokens for result in results}) > 1


def test_only_the_new_tokens_are_decoded(tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase]) -> None:
    [result] = generate(*tiny, requests_for(["What is greedy decoding?"]), GREEDY, seed=0)

    assert "What is greedy decoding?" not in result.text
    assert "<|im_start|>" not in result.text and "<|im_end|>" not in result.text
    assert result.text == result.text.strip()


def test_each_batch_is_seeded_with_the_seed_plus_its_index(
    tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    results = generate(*tiny, requests_for(QUESTIONS), GREEDY, seed=100, batch_size=3)

    # Seven prompts in batches of three: batches 0, 1 and 2.
    assert sorted(result.seed for result in results) == [100, 100, 100, 101, 101, 101, 102]
    assert all(result.latency_ms >= 0 for result in results)


def test_sampling_with_the_same_seed_repeats_and_another_seed_differs(
    tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    requests = requests_for(QUESTIONS)
    hot = GenerationSettings(max_new_tokens=32, temperature=1.5, top_p=1.0)

    first = [result.text for result in generate(*tiny, requests, hot, seed=7, batch_size=4)]
    again = [result.text for result in generate(*tiny, requests, hot, seed=7, batch_size=4)]
    other = [result.text for result in generate(*tiny, requests, hot, seed=8, batch_size=4)]

    assert first == again
    assert first != other


def test_it_generates_nothing_for_no_requests(tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase]) -> None:
    assert generate(*tiny, [], GREEDY, seed=0) == []


def test_generation_settings_default_to_sampling_and_round_trip_through_a_dict() -> None:
    settings = GenerationSettings.from_dict({"max_new_tokens": 32, "temperature": 0, "top_p": 1})

    assert settings.to_dict() == {"max_new_tokens": 32, "temperature": 0.0, "top_p": 1.0}
    assert settings.greedy
    assert GenerationSettings.from_dict(settings.to_dict()) == settings
    defaults = GenerationSettings(max_new_tokens=96, temperature=0.7, top_p=0.95)
    assert GenerationSettings.from_dict({}) == defaults
    assert not GenerationSettings().greedy


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer from 1 to 8192, got 0"),
        ({"max_new_tokens": 12.5}, "max_new_tokens must be an integer"),
        ({"max_new_tokens": "96"}, "max_new_tokens must be an integer"),
        ({"max_new_tokens": True}, "max_new_tokens must be an integer"),
        ({"temperature": -0.1}, r"temperature must be a number from 0 \(greedy\) to 5, got -0.1"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"temperature": float("nan")}, "temperature must be a number"),
        ({"top_p": 0}, "top_p must be a number greater than 0 and at most 1, got 0"),
        ({"top_p": 1.5}, "top_p must be a number greater than 0 and at most 1"),
        ({"top_k": 5}, r"unknown generation setting key\(s\): top_k; known: max_new_tokens, temperature, "),
    ],
)
def test_generation_settings_refuse_bad_values_naming_the_field(
    values: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationSettings.from_dict(values)


def test_generation_settings_refuse_a_non_mapping() -> None:
    with pytest.raises(ValueError, match="generation settings must be a mapping, got list"):
        GenerationSettings.from_dict([("temperature", 0.5)])  # type: ignore[arg-type]


def test_the_generate_command_writes_one_answer_per_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = ['{"id": "heritage-1", "prompt": "What is oral history?"}', '{"id": 2, "prompt": "What is RAG?"}']
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "answers.jsonl"

    completed = subprocess.run(
        [sys.executable, "-m", "training.generate", "--model", str(tiny_model_dir), "--prompts", str(prompts),
         "--out", str(out), "--quantization", "4bit", "--temperature", "0", "--max-new-tokens", "16"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["key"] for row in rows] == ["heritage-1", "2"]
    assert all(row["text"] and 0 < row["completion_tokens"] <= 16 for row in rows)
