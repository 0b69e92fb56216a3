"""Answers of model variants that share a base model: one loaded base carrying every variant's adapter.

The web app's generation service opens one Generator per group of variants sharing a base, then asks it for one
answer per request, chunk by chunk:

    generator = open_generator("var/models/tiny", {"base": None, "dpo-1": "var/runs/1/adapter"})
    answers = generator.answer("dpo-1", [AnswerRequest(key="7:0", prompt="What is DPO?", seed=448)], settings)

Each answer is sampled with its request's own seed, so an answer regenerated alone from its stored seed and
settings is the same text. The backends behind it live in hf.py (transformers, the default) and vllm.py; the
plain settings and result types in settings.py; the command line in cli.py (`python -m training.generation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from training.generation.hf import MultiAdapterModel, generate_for_variants, load_base_with_adapters
from training.generation.settings import GeneratedText, GenerationRequest, GenerationSettings, checked_quantization
from training.generation.vllm import VLLMBackend, require_vllm
from training.rag import Passage, Retriever, rag_messages
from training.validation import is_int

BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class AnswerRequest:
    """One prompt to answer once, sampled with `seed`; `key` comes back on its answer."""

    key: str
    prompt: str
    seed: int


@dataclass(frozen=True)
class Retrieval:
    """What a retrieval (RAG) variant adds to each prompt: the `top_k` passages `retriever` finds for it, put
    into the prompt by `template` (training.rag.DEFAULT_TEMPLATE when None)."""

    retriever: Retriever
    top_k: int
    template: str | None = None


@dataclass(frozen=True)
class Answer:
    """One answer to an AnswerRequest. Token counts exclude padding; latency_ms is the wall time of the batch (on
    vLLM: of the call) it was generated in; `retrieved` holds the passages put into its prompt, as
    Passage.to_dict() gives them, and is empty without retrieval."""

    key: str
    text: str
    seed: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    retrieved: list[dict[str, Any]]


class Generator:
    """One loaded base model carrying several variants' adapters, on transformers (`engine` a MultiAdapterModel)
    or vLLM (a VLLMBackend); open_generator opens one. `batch_size` is how many prompts the transformers backend
    answers at once (vLLM schedules its own batches)."""

    def __init__(self, engine: MultiAdapterModel | VLLMBackend, *, batch_size: int = 8) -> None:
        _check_batch_size(batch_size)
        self.engine = engine
        self.batch_size = batch_size

    def answer(
        self,
        adapter_key: str,
        requests: Sequence[AnswerRequest],
        settings: GenerationSettings,
        *,
        retrieval: Retrieval | None = None,
    ) -> list[Answer]:
        """One answer per request, in request order, from the variant loaded as `adapter_key`, decoded as
        `settings` say (their samples_per_prompt aside: every request is one answer, seeded with its own seed).
        With `retrieval`, each prompt goes to the model inside the retrieval template, with its passages."""
        found: list[list[Passage]] = (
            retrieval.retriever.search_many([request.prompt for request in requests], retrieval.top_k)
            if retrieval is not None
            else [[] for _ in requests]
        )
        chats = [
            GenerationRequest(
                key=request.key, messages=_messages(request.prompt, passages, retrieval), seed=request.seed
            )
            for request, passages in zip(requests, found, strict=True)
        ]
        results = self._generate(adapter_key, chats, settings)
        return [
            Answer(
                key=result.key,
                text=result.text,
                seed=result.seed,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                latency_ms=result.latency_ms,
                retrieved=[passage.to_dict() for passage in passages],
            )
            for result, passages in zip(results, found, strict=True)
        ]

    def _generate(
        self, adapter_key: str, requests: list[GenerationRequest], settings: GenerationSettings
    ) -> list[GeneratedText]:
        # Every request carries its own seed (seed=0 goes unused) and is answered once, whatever the settings'
        # samples_per_prompt: results come back one per request, in request order.
        if isinstance(self.engine, MultiAdapterModel):
            return generate_for_variants(
                self.engine,
                self.engine.tokenizer,
                {adapter_key: requests},
                {adapter_key: settings},
                seed=0,
                batch_size=self.batch_size,
                samples_per_prompt=1,
            )[adapter_key]
        return self.engine.generate_for_variants(
            {adapter_key: requests}, {adapter_key: settings}, seed=0, samples_per_prompt=1
        )[adapter_key]


def open_generator(
    base_model: str,
    adapters: Mapping[str, str | None],
    *,
    quantization: str = "none",
    backend: str = "transformers",
    batch_size: int = 8,
) -> Generator:
    """Load `base_model` once (Hub id or local path, quantised as `quantization` says: none, 4bit or 8bit) with
    every adapter of `adapters` (key -> PEFT/LoRA adapter path; None or "" for the plain base) on it.

    `backend` is "transformers" or "vllm"; vllm raises VLLMUnavailableError, saying how to install it, where it
    cannot be imported. Raises ValueError for a bad argument or an adapter that cannot be loaded.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    _check_batch_size(batch_size)
    checked = checked_quantization(quantization)
    if backend == "vllm":
        require_vllm(alternative="use the transformers backend")
        return Generator(VLLMBackend(base_model, adapters, quantization=checked), batch_size=batch_size)
    return Generator(load_base_with_adapters(base_model, adapters, checked), batch_size=batch_size)


def _messages(prompt: str, passages: Sequence[Passage], retrieval: Retrieval | None) -> list[dict[str, str]]:
    """The chat for one prompt: the prompt alone as the user's message, or inside the retrieval template."""
    if retrieval is None:
        return [{"role": "user", "content": prompt}]
    return rag_messages(prompt, passages, retrieval.template)


def _check_batch_size(batch_size: object) -> None:
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
