"""Optional generation backend: vLLM with LoRA adapters, for GPU workers where vLLM is installed.

The transformers path in training.generate stays the default and the tested one; this backend answers the same
requests with the same settings and returns the same GeneratedText results, from one vLLM engine serving the base
model and every variant's LoRA adapter (one LoRARequest per adapter, mixed freely within vLLM's batches). Each
answer is sampled with its own seed (SamplingParams(seed=...)), so it is reproducible on this backend, but vLLM's
sampler is not transformers': the same seed gives a different text on the other backend.

Install it on the GPU worker (`pip install vllm`, which pins its own torch), then:

    python -m training.generate --backend vllm --model Qwen/Qwen2.5-0.5B-Instruct --prompts prompts.jsonl \
        --out answers.jsonl --adapter base= --adapter dpo-1=var/artifacts/training-jobs/1/adapter
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from training.generate import (
    QUANTIZATIONS,
    GeneratedText,
    GenerationRequest,
    GenerationSettings,
    Quantization,
    chat_prompt_ids,
    plan_answers,
)

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
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
        if quantization == "8bit":
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
        options: dict[str, Any] = {"model": base_model, **engine_args}
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
        """Answer each variant's requests with its settings and adapter, seeded as training.generate seeds them
        (each request its settings' samples_per_prompt times unless `samples_per_prompt` overrides that);
        results by variant, in request order. vLLM schedules all the answers of all variants together, so
        latency_ms is the wall time of the whole call."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        unknown = [variant for variant in requests_by_variant if variant not in self.lora_requests]
        if unknown:
            loaded = sorted(self.lora_requests)
            raise ValueError(f"no adapter loaded for variant(s) {', '.join(map(repr, unknown))}; loaded: {loaded}")
        unset = [variant for variant in requests_by_variant if variant not in settings_by_variant]
        if unset:
            raise ValueError(f"no generation settings for variant(s) {', '.join(map(repr, unset))}")
        jobs = []  # (variant, request, planned answer, prompt ids), in result order
        for variant, requests in requests_by_variant.items():
            prompts = [chat_prompt_ids(self.tokenizer, request.messages) for request in requests]
            samples = (
                settings_by_variant[variant].samples_per_prompt if samples_per_prompt is None else samples_per_prompt
            )
            for answer in plan_answers(requests, seed=seed, samples_per_prompt=samples):
                jobs.append((variant, requests[answer.request_index], answer, prompts[answer.request_index]))
        params = []
        for variant, _, answer, _ in jobs:
            settings = settings_by_variant[variant]
            params.append(
                SamplingParams(
                    max_tokens=settings.max_new_tokens,
                    temperature=settings.temperature,  # 0 is greedy in vLLM too
                    top_p=settings.top_p if not settings.greedy else 1.0,
                    repetition_penalty=1.0,
                    seed=answer.seed,
                    skip_special_tokens=True,
                )
            )
        started = time.perf_counter()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for *_, ids in jobs],
            params,
            lora_request=[self.lora_requests[variant] for variant, *_ in jobs],
            use_tqdm=False,
        )
        latency_ms = round((time.perf_counter() - started) * 1000)
        results: dict[str, list[GeneratedText]] = {variant: [] for variant in requests_by_variant}
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
