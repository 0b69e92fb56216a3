"""The transformers backend: input order, exact token counts, left padding that changes nothing, a reproducible
seed per answer, and several adapters on one loaded base."""

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from training.generation.hf import (
    batches_by_length,
    chat_prompt_ids,
    generate,
    generate_for_variants,
    load_base_with_adapters,
    load_for_generation,
)
from training.generation.settings import GeneratedText, GenerationRequest, GenerationSettings

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


def without_latency(results: list[GeneratedText]) -> list[tuple[object, ...]]:
    """Everything an answer records except its wall time, which no two runs share."""
    return [(r.key, r.sample_index, r.text, r.prompt_tokens, r.completion_tokens, r.seed) for r in results]


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


def test_each_answer_is_seeded_with_the_seed_plus_its_position(
    tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    results = generate(*tiny, requests_for(QUESTIONS[:3]), GREEDY, seed=100, batch_size=2, samples_per_prompt=2)

    assert [(r.key, r.sample_index, r.seed) for r in results] == [
        ("q0", 0, 100), ("q0", 1, 101), ("q1", 0, 102), ("q1", 1, 103), ("q2", 0, 104), ("q2", 1, 105),
    ]  # fmt: skip
    assert all(result.latency_ms >= 0 for result in results)


def test_prompts_of_similar_length_share_a_batch_shortest_first() -> None:
    lengths = [5, 50, 6, 49, 7, 48, 6]

    batches = batches_by_length(lengths, 3)

    assert batches == [[0, 2, 6], [4, 5, 3], [1]]
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))


def test_an_answer_regenerated_alone_from_its_stored_seed_is_the_same_text(
    tiny: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    requests = requests_for(QUESTIONS)
    hot = GenerationSettings(max_new_tokens=32, temperature=1.3, top_p=0.9)

    results = generate(*tiny, requests, hot, seed=40, batch_size=4, samples_per_prompt=2)

    assert len(results) == 2 * len(requests) and len({result.seed for result in results}) == len(results)
    by_key = {request.key: request for request in requests}
    for result in results:
        stored = GenerationRequest(key=result.key, messages=by_key[result.key].messages, seed=result.seed)
        [again] = generate(*tiny, [stored], hot, seed=0, batch_size=1)
        assert (again.text, again.completion_tokens, again.seed) == (result.text, result.completion_tokens, result.seed)
    # The two samples of a prompt are two different draws, not one answer twice.
    samples = {key: [r.text for r in results if r.key == key] for key in by_key}
    assert sum(first != second for first, second in samples.values()) >= len(requests) - 1


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


def test_one_base_with_several_adapters_answers_as_each_adapter_loaded_on_its_own_base(
    tiny_model_dir: Path, adapters: dict[str, str]
) -> None:
    variants = {"tuned a": adapters["a"], "plain": None, "tuned.b": adapters["b"], "a again": adapters["a"]}
    settings = {
        "tuned a": GREEDY,
        "plain": GenerationSettings(max_new_tokens=24, temperature=0),
        "tuned.b": GenerationSettings(max_new_tokens=40, temperature=0),
        "a again": GenerationSettings(max_new_tokens=12, temperature=0),
    }
    requests = requests_for(QUESTIONS[:5])

    loaded = load_base_with_adapters(str(tiny_model_dir), variants, "none", device="cpu")
    together = generate_for_variants(
        loaded, loaded.tokenizer, dict.fromkeys(variants, requests), settings, seed=3, batch_size=3
    )

    assert len(loaded.model.peft_config) == 2  # "a again" reuses the adapter "tuned a" loaded
    for variant, path in variants.items():
        model, tokenizer = load_for_generation(str(tiny_model_dir), adapter_path=path, device="cpu")
        alone = generate(model, tokenizer, requests, settings[variant], seed=3, batch_size=3)
        assert without_latency(together[variant]) == without_latency(alone), variant
    texts = {variant: [result.text for result in results] for variant, results in together.items()}
    assert texts["tuned a"] != texts["plain"] != texts["tuned.b"] != texts["tuned a"]  # the adapters really differ
    assert max(result.completion_tokens for result in together["a again"]) <= 12


def test_sampled_answers_of_a_shared_base_are_reproduced_by_generate_on_that_adapter_alone(
    tiny_model_dir: Path, adapters: dict[str, str]
) -> None:
    hot = GenerationSettings(max_new_tokens=24, temperature=1.2, top_p=0.95)
    requests = requests_for(QUESTIONS[:4])
    loaded = load_base_with_adapters(str(tiny_model_dir), {"a": adapters["a"], "b": adapters["b"]}, device="cpu")

    together = generate_for_variants(
        loaded, loaded.tokenizer, {"b": requests, "a": requests}, {"a": hot, "b": hot}, seed=11, samples_per_prompt=2
    )

    model, tokenizer = load_for_generation(str(tiny_model_dir), adapter_path=adapters["b"], device="cpu")
    alone = generate(model, tokenizer, requests, hot, seed=11, samples_per_prompt=2)
    assert without_latency(together["b"]) == without_latency(alone)
    assert list(together) == ["b", "a"]
    assert [r.text for r in together["a"]] != [r.text for r in together["b"]]


def test_each_variant_answers_as_many_samples_as_its_own_settings_ask_for(tiny_model_dir: Path) -> None:
    loaded = load_base_with_adapters(str(tiny_model_dir), {"two": None, "one": None}, device="cpu")
    requests = requests_for(QUESTIONS[:2])
    settings = {"two": GenerationSettings(max_new_tokens=4, samples_per_prompt=2), "one": GenerationSettings(4)}

    results = generate_for_variants(loaded, loaded.tokenizer, {"two": requests, "one": requests}, settings, seed=7)

    assert [(r.key, r.sample_index) for r in results["two"]] == [("q0", 0), ("q0", 1), ("q1", 0), ("q1", 1)]
    assert [(r.key, r.sample_index) for r in results["one"]] == [("q0", 0), ("q1", 0)]
    overridden = generate_for_variants(
        loaded, loaded.tokenizer, {"two": requests}, settings, seed=7, samples_per_prompt=1
    )
    assert [r.sample_index for r in overridden["two"]] == [0, 0]


def test_a_four_bit_base_carries_several_adapters(tiny_model_dir: Path, adapters: dict[str, str]) -> None:
    loaded = load_base_with_adapters(
        str(tiny_model_dir), {"a": adapters["a"], "b": adapters["b"]}, "4bit", device="cpu"
    )

    results = generate_for_variants(
        loaded, loaded.tokenizer, {"a": requests_for(QUESTIONS[:2]), "b": requests_for(QUESTIONS[:2])},
        {"a": GREEDY, "b": GREEDY}, seed=0,
    )  # fmt: skip

    assert "Linear4bit" in type(loaded.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__
    assert all(result.text for answers in results.values() for result in answers)
    assert [r.text for r in results["a"]] != [r.text for r in results["b"]]


def test_it_refuses_variants_without_an_adapter_or_settings_before_generating_anything(
    tiny_model_dir: Path, adapters: dict[str, str]
) -> None:
    loaded = load_base_with_adapters(str(tiny_model_dir), {"a": adapters["a"]}, device="cpu")
    requests = requests_for(QUESTIONS[:1])

    with pytest.raises(ValueError, match=r"no adapter loaded for variant\(s\) 'b'; loaded: \['a'\]"):
        generate_for_variants(loaded, loaded.tokenizer, {"a": requests, "b": requests}, {"a": GREEDY}, seed=0)
    with pytest.raises(ValueError, match=r"no generation settings for variant\(s\) 'a'"):
        generate_for_variants(loaded, loaded.tokenizer, {"a": requests}, {}, seed=0)


def test_it_names_the_variant_whose_adapter_cannot_be_loaded(tiny_model_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-adapter"

    with pytest.raises(ValueError, match=f"variant 'broken': cannot load the adapter '{missing}'"):
        load_base_with_adapters(str(tiny_model_dir), {"plain": None, "broken": str(missing)}, device="cpu")
    with pytest.raises(ValueError, match="adapters must name at least one variant"):
        load_base_with_adapters(str(tiny_model_dir), {}, device="cpu")
