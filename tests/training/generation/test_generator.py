"""The one entry point of generation: a Generator opened on a base with several adapters answers plain requests,
one answer per request with its own seed, with or without retrieved passages."""

from pathlib import Path

import pytest

from training.generation import Answer, AnswerRequest, Generator, Retrieval, open_generator
from training.generation.hf import generate_for_variants, load_base_with_adapters
from training.generation.settings import GeneratedText, GenerationRequest, GenerationSettings
from training.rag import Retriever, build_index, rag_messages

PROMPTS = [
    "What is DPO?",
    "A longer question, so that the batch needs padding: how should a small museum store old photographs?",
    "What is LoRA?",
    "Why are ties left out of a DPO dataset?",
]
HOT = GenerationSettings(max_new_tokens=20, temperature=1.2, top_p=0.95)


def answer_requests(prompts: list[str], *, first_seed: int = 640) -> list[AnswerRequest]:
    return [
        AnswerRequest(key=f"{index}:0", prompt=prompt, seed=first_seed + 64 * index)
        for index, prompt in enumerate(prompts)
    ]


def without_latency(answers: list[Answer]) -> list[tuple[object, ...]]:
    return [(a.key, a.text, a.seed, a.prompt_tokens, a.completion_tokens, a.retrieved) for a in answers]


def as_answer(result: GeneratedText, retrieved: list[dict[str, object]]) -> tuple[object, ...]:
    return (result.key, result.text, result.seed, result.prompt_tokens, result.completion_tokens, retrieved)


@pytest.fixture(scope="module")
def generator(tiny_model_dir: Path, adapters: dict[str, str]) -> Generator:
    return open_generator(str(tiny_model_dir), {"tuned": adapters["a"], "plain": None}, batch_size=3)


def test_each_request_gets_one_answer_sampled_with_its_own_seed_as_the_chats_of_a_shared_base_give_it(
    generator: Generator, tiny_model_dir: Path, adapters: dict[str, str]
) -> None:
    requests = answer_requests(PROMPTS)

    answers = generator.answer("tuned", requests, HOT)

    loaded = load_base_with_adapters(str(tiny_model_dir), {"tuned": adapters["a"]})
    chats = [
        GenerationRequest(key=r.key, messages=[{"role": "user", "content": r.prompt}], seed=r.seed) for r in requests
    ]
    expected = generate_for_variants(
        loaded, loaded.tokenizer, {"tuned": chats}, {"tuned": HOT}, seed=0, batch_size=3, samples_per_prompt=1
    )["tuned"]
    assert without_latency(answers) == [as_answer(result, []) for result in expected]
    assert [answer.seed for answer in answers] == [request.seed for request in requests]
    assert all(answer.text and answer.latency_ms >= 0 for answer in answers)


def test_an_answer_asked_again_alone_with_its_seed_is_the_same_text(generator: Generator) -> None:
    answers = generator.answer("plain", answer_requests(PROMPTS), HOT)

    again = [generator.answer("plain", [request], HOT)[0] for request in answer_requests(PROMPTS)]

    assert without_latency(again) == without_latency(answers)


def test_the_settings_sample_count_does_not_multiply_the_answers(generator: Generator) -> None:
    three_samples = GenerationSettings(max_new_tokens=8, temperature=0.9, samples_per_prompt=3)

    answers = generator.answer("plain", answer_requests(PROMPTS[:2]), three_samples)

    assert [answer.key for answer in answers] == ["0:0", "1:0"]


def test_the_adapters_answer_differently(generator: Generator) -> None:
    greedy = GenerationSettings(max_new_tokens=24, temperature=0)

    tuned = generator.answer("tuned", answer_requests(PROMPTS), greedy)
    plain = generator.answer("plain", answer_requests(PROMPTS), greedy)

    assert [answer.text for answer in tuned] != [answer.text for answer in plain]


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> Retriever:
    documents = [
        ("dpo.md", "DPO trains a model on pairs of answers, one preferred over the other, without a reward model."),
        ("lora.md", "LoRA adds small low-rank matrices beside the frozen weights and trains only those."),
        ("museum.txt", "Photographs keep best in a cool, dry, dark store, in acid-free sleeves and boxes."),
    ]
    index_dir = tmp_path_factory.mktemp("generation-rag") / "index"
    build_index(documents, index_dir, chunk_size=200, chunk_overlap=20)
    return Retriever.load(index_dir)


def test_a_retrieval_variant_answers_with_its_passages_in_the_template_and_returns_them(
    generator: Generator, retriever: Retriever, tiny_model_dir: Path
) -> None:
    requests = answer_requests(PROMPTS[:3])
    template = "Passages:\n{context}\n\nAnswer briefly: {question}"

    answers = generator.answer("plain", requests, HOT, retrieval=Retrieval(retriever, top_k=2, template=template))

    found = retriever.search_many([request.prompt for request in requests], 2)
    loaded = load_base_with_adapters(str(tiny_model_dir), {"plain": None})
    chats = [
        GenerationRequest(key=r.key, messages=rag_messages(r.prompt, passages, template), seed=r.seed)
        for r, passages in zip(requests, found, strict=True)
    ]
    expected = generate_for_variants(
        loaded, loaded.tokenizer, {"plain": chats}, {"plain": HOT}, seed=0, batch_size=3, samples_per_prompt=1
    )["plain"]
    retrieved = [[passage.to_dict() for passage in passages] for passages in found]
    assert without_latency(answers) == [as_answer(*pair) for pair in zip(expected, retrieved, strict=True)]
    assert [len(answer.retrieved) for answer in answers] == [2, 2, 2]
    assert answers[0].retrieved[0]["document"] == "dpo.md"
    plain = generator.answer("plain", requests, HOT)
    assert all(
        with_passages.prompt_tokens > alone.prompt_tokens for with_passages, alone in zip(answers, plain, strict=True)
    )


def test_no_requests_get_no_answers(generator: Generator, retriever: Retriever) -> None:
    assert generator.answer("plain", [], HOT) == []
    assert generator.answer("plain", [], HOT, retrieval=Retrieval(retriever, top_k=2)) == []


def test_it_refuses_an_adapter_key_it_did_not_load(generator: Generator) -> None:
    with pytest.raises(ValueError, match=r"no adapter loaded for variant\(s\) 'other'"):
        generator.answer("other", answer_requests(PROMPTS[:1]), HOT)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "onnx"}, "backend must be one of transformers, vllm, got 'onnx'"),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1, got 0"),
        ({"quantization": "2bit"}, "quantization must be one of none, 4bit, 8bit, got '2bit'"),
    ],
)
def test_opening_refuses_bad_options_before_loading_anything(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_generator("no/such-model", {"base": None}, **options)  # type: ignore[arg-type]
