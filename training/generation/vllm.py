"""The vLLM backend: one vLLM engine with LoRA adapters, for GPU workers where vLLM is installed.

The transformers backend (training.generation.hf) stays the default and the tested one; this backend answers the
same requests with the same settings and returns the same GeneratedText results, from one vLLM engine serving the
base model and every variant's LoRA adapter (one LoRARequest per adapter, mixed freely within vLLM's batches). Each
answer is sampled with its own seed (SamplingParams(seed=...)), so it is reproducible on this backend, but vLLM's
sampler is not transformers': the same seed gives a different text on the other backend.

Install it on the GPU worker (`pip install vllm`, which pins its own torch), then:

    python -m training.generation --backend vllm --model Qwen/Qwen2.5-0.5B-Instruct --prompts prompts.jsonl \\
        --out answers.jsonl --adapter base= --adapter dpo-1=var/artifacts/training-jobs/1/adapter
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from training.generation.hf import chat_prompt_ids
from training.generation.settings import (
    GeneratedText,
    GenerationRequest,
    GenerationSettings,
    PlannedAnswer,
    Quantization,
    checked_quantization,
    plan_variants,
)
from training.models import resolve_model

INSTALL_HINT = "pip install vllm"


class VLLMUnavailableError(RuntimeError):
    """The vLLM backend was selected on a machine where vLLM cannot be imported."""


def available() -> bool:
    """Whether `import vllm` works here."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def require_vllm(alternative: str = "use --backend transformers") -> None:
    """Raise VLLMUnavailableError, saying how to install vLLM or what to do instead, when it cannot be imported."""
    if not available():
        raise VLLMUnavailableError(
            f"the vllm backend needs vLLM, which is not installed here: run `{INSTALL_HINT}` on a CUDA GPU "
            f"worker, or {alternative}"
        )


class VLLMBackend:
    """One vLLM engine on `base_model` serving every variant; `adapters` maps variant names to LoRA adapter
    paths, None (or "") meaning the plain base. Extra keyword arguments go to vllm.LLM (gpu_memory_utilization,
    max_model_len, …)."""

    def __init__(
        self,
        base_model: str,
        adapters: Mapping[str, str | None],
        *,
        quantization: Quantization = "none",
        max_lora_rank: int = 64,
        **engine_args: Any,
    ) -> None:
        if not adapters:
            raise ValueError("adapters must name at least one variant (with None for the plain base)")
        if checked_quantization(quantization) == "8bit":
            # vLLM quantises bitsandbytes weights in-flight to 4 bits only.
            raise ValueError("quantization 8bit is not available with the vllm backend; use 4bit or none")
        require_vllm()
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        paths = list(dict.fromkeys(path for path in adapters.values() if path))
        # vLLM numbers adapters from 1; variants with the same adapter path share one request (and GPU slot).
        by_path = {path: LoRARequest(f"adapter_{number}", number, path) for number, path in enumerate(paths, 1)}
        self.lora_requests: dict[str, Any] = {
            variant: by_path[path] if path else None for variant, path in adapters.items()
        }
        # A GGUF base is served from its converted folder, as the transformers backend loads it.
        options: dict[str, Any] = {"model": resolve_model(base_model), **engine_args}
        if paths:
            options.update(enable_lora=True, max_loras=len(paths), max_lora_rank=max_lora_rank)
        if quantization == "4bit":
            options["quantization"] = "bitsandbytes"
        self.llm = LLM(**options)
        self.tokenizer = self.llm.get_tokenizer()

    def generate_for_variants(
        self,
        requests_by_variant: Mapping[str, Sequence[GenerationRequest]],
        settings_by_variant: Mapping[str, GenerationSettings],
        *,
        seed: int,
        samples_per_prompt: int | None = None,
    ) -> dict[str, list[GeneratedText]]:
        """Answer each variant's requests with its settings and adapter, seeded as the transformers backend seeds them
        (each request its settings' samples_per_prompt times unless `samples_per_prompt` overrides that);
        results by variant, in request order. vLLM schedules all the answers of all variants together, so
        latency_ms is the wall time of the whole call."""
        from vllm.inputs import TokensPrompt

        planned = plan_variants(
            requests_by_variant,
            settings_by_variant,
            loaded=self.lora_requests,
            seed=seed,
            samples_per_prompt=samples_per_prompt,
        )
        # (variant, request, planned answer, prompt ids), in result order
        jobs: list[tuple[str, GenerationRequest, PlannedAnswer, list[int]]] = []
        for variant, answers in planned.items():
            requests = requests_by_variant[variant]
            prompts = [chat_prompt_ids(self.tokenizer, request.messages) for request in requests]
            jobs.extend((variant, requests[a.request_index], a, prompts[a.request_index]) for a in answers)
        results: dict[str, list[GeneratedText]] = {variant: [] for variant in requests_by_variant}
        if not jobs:
            return results
        params = [sampling_params(settings_by_variant[variant], answer.seed) for variant, _, answer, _ in jobs]
        started = time.perf_counter()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for *_, ids in jobs],
            params,
            lora_request=[self.lora_requests[variant] for variant, *_ in jobs],
            use_tqdm=False,
        )
        latency_ms = round((time.perf_counter() - started) * 1000)
        for (variant, request, answer, ids), output in zip(jobs, outputs, strict=True):
            completion = output.outputs[0]
            results[variant].append(
                GeneratedText(
                    key=request.key,
                    sample_index=answer.sample_index,
                    text=completion.text.strip(),
                    prompt_tokens=len(ids),
                    completion_tokens=len(completion.token_ids),
                    latency_ms=latency_ms,
                    seed=answer.seed,
                )
            )
        return results


def sampling_params(settings: GenerationSettings, seed: int) -> Any:
    """vLLM's SamplingParams for one answer: decoded as `settings` say, nothing of the model's own defaults, the
    special tokens left out of the text."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,  # 0 is greedy in vLLM too
        top_p=settings.top_p if not settings.greedy else 1.0,
        repetition_penalty=1.0,
        seed=seed,
        skip_special_tokens=True,
    )
