"""The transformers backend: batched, chat-templated answer generation for model variants (a base model,
optionally PEFT adapters).

Prompts are grouped by token length into left-padded batches so little compute goes to padding; results come
back in input order with exact token counts, latency, and the seed each answer was sampled with. Every answer
is sampled from its own random stream, so one answer regenerated alone from its stored seed and settings is the
same text as it was in its batch. Variants that share a base model are generated with one loaded base carrying
all their adapters (load_base_with_adapters, generate_for_variants), not one base copy per variant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training.generation.settings import (
    GeneratedText,
    GenerationRequest,
    GenerationSettings,
    Quantization,
    checked_quantization,
    plan_answers,
    plan_variants,
)
from training.validation import is_int

# torch and transformers are imported inside the functions that use them: the web app imports this package to
# validate generation settings and should not pay seconds and hundreds of megabytes for that.
if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

# A transformers causal LM (GenerationMixin) or a PeftModel wrapping one. The two share no base class that
# declares generate(), so the alias stays loose rather than lying to the type checker.
CausalLM = Any


def load_for_generation(
    base_model: str,
    *,
    adapter_path: str | None = None,
    quantization: Quantization = "none",
    device: str | None = None,
) -> tuple[CausalLM, PreTrainedTokenizerBase]:
    """Load a base model (a Hub id, a local folder, a .gguf file or a shipped short name: training.models),
    optionally quantised, optionally with a PEFT adapter on top.

    The model is returned in eval mode.

    "4bit" is NF4 with double quantisation computing in bfloat16 on CUDA and float32 on CPU (as unquantised
    models do); "8bit" is LLM.int8(), which computes in float16.
    """
    model, tokenizer = load_base(base_model, quantization=quantization, device=device)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    model.eval()
    return model, tokenizer


def load_base(
    base_model: str, *, quantization: Quantization = "none", device: str | None = None
) -> tuple[CausalLM, PreTrainedTokenizerBase]:
    """The base model and its tokenizer, loaded as load_for_generation describes, without any adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.device import compute_dtype, pick_device
    from training.models import resolve_model

    quantization = checked_quantization(quantization)
    device = device or pick_device()
    # A GGUF is converted once into a cached folder; a Hub id or a folder comes back as it is.
    base_model = resolve_model(base_model)
    # LLM.int8() multiplies in float16 and would cast (and warn) on every matmul given anything else.
    dtype = torch.float16 if quantization == "8bit" else compute_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model: CausalLM = AutoModelForCausalLM.from_pretrained(
        base_model,
        dtype=dtype,
        device_map=device,  # "cuda" means this process's GPU (LOCAL_RANK), "cpu" the CPU
        quantization_config=quantization_config(quantization, dtype),
    )
    model.eval()
    return model, tokenizer


def quantization_config(quantization: Quantization, dtype: torch.dtype) -> Any:
    """The BitsAndBytesConfig for a quantization name, or None for "none"."""
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


@dataclass
class MultiAdapterModel:
    """One loaded base model carrying the PEFT adapters of several variants.

    `adapter_names` maps each variant to the name its adapter was loaded under in `model`, or to None for a
    variant that is the plain base. Variants with the same adapter path share one loaded copy of it.
    """

    model: CausalLM
    tokenizer: PreTrainedTokenizerBase
    adapter_names: dict[str, str | None]

    @contextmanager
    def activated(self, variant: str) -> Iterator[CausalLM]:
        """The model with `variant`'s adapter active (all adapters off for the plain base) inside the block."""
        if variant not in self.adapter_names:
            known = ", ".join(self.adapter_names) or "none"
            raise ValueError(f"no variant {variant!r} was loaded; loaded: {known}")
        name = self.adapter_names[variant]
        if name is not None:
            self.model.set_adapter(name)
            yield self.model
            return
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            with self.model.disable_adapter():  # every adapter off for the block, back on after it
                yield self.model
        else:  # no variant has an adapter: nothing was wrapped
            yield self.model


def load_base_with_adapters(
    base_model: str,
    adapters: Mapping[str, str | None],
    quantization: Quantization = "none",
    *,
    device: str | None = None,
) -> MultiAdapterModel:
    """Load `base_model` once (optionally quantised, as load_for_generation does) and every variant's PEFT
    adapter onto it; `adapters` maps variant names to adapter paths, None (or "") meaning the plain base.

    All adapters must have been trained on this base. Each is loaded once, however many variants use it.
    """
    if not adapters:
        raise ValueError("adapters must name at least one variant (with None for the plain base)")
    for variant in adapters:
        if not isinstance(variant, str) or not variant:
            raise ValueError(f"variant names must be non-empty strings, got {variant!r}")
    model, tokenizer = load_base(base_model, quantization=quantization, device=device)
    # PEFT keeps adapters in a ModuleDict, whose keys cannot hold dots: variant names are free text, so
    # adapters get names of their own.
    from peft import PeftModel

    names: dict[str, str] = {}
    for variant, path in adapters.items():
        if not path or path in names:
            continue
        names[path] = f"adapter_{len(names)}"
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(path, adapter_name=names[path])
            else:
                model = PeftModel.from_pretrained(model, path, adapter_name=names[path])
        except (OSError, ValueError) as error:
            raise ValueError(f"variant {variant!r}: cannot load the adapter {path!r}: {error}") from error
    model.eval()
    return MultiAdapterModel(
        model=model,
        tokenizer=tokenizer,
        adapter_names={variant: names[path] if path else None for variant, path in adapters.items()},
    )


def generate_for_variants(
    model: MultiAdapterModel,
    tokenizer: PreTrainedTokenizerBase,
    requests_by_variant: Mapping[str, Sequence[GenerationRequest]],
    settings_by_variant: Mapping[str, GenerationSettings],
    *,
    seed: int,
    batch_size: int = 8,
    samples_per_prompt: int | None = None,
) -> dict[str, list[GeneratedText]]:
    """Answer each variant's requests with its own settings on the one loaded model, switching adapters
    between variants; results by variant, each list in the order of its requests. Each variant answers every
    request its settings' samples_per_prompt times, unless `samples_per_prompt` overrides that for all.

    Each variant's answers are seeded as generate() seeds them, so they equal what generate() gives on a model
    carrying that variant's adapter alone.
    """
    # Refuses unknown variants, missing settings and bad seeds before any variant is generated.
    plan_variants(
        requests_by_variant,
        settings_by_variant,
        loaded=model.adapter_names,
        seed=seed,
        samples_per_prompt=samples_per_prompt,
    )
    results = {}
    for variant, requests in requests_by_variant.items():
        with model.activated(variant) as active:
            results[variant] = generate(
                active,
                tokenizer,
                requests,
                settings_by_variant[variant],
                seed=seed,
                batch_size=batch_size,
                samples_per_prompt=samples_per_prompt,
            )
    return results


def generate(
    model: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[GenerationRequest],
    settings: GenerationSettings,
    *,
    seed: int,
    batch_size: int = 8,
    samples_per_prompt: int | None = None,
) -> list[GeneratedText]:
    """Answer every request `samples_per_prompt` times (default: the settings' samples_per_prompt); results in
    the order of `requests`, then of samples.

    Answers are sorted by prompt length and cut into batches of `batch_size`. Each answer is sampled with its
    own seed (see plan_answers), independently of the other rows of its batch.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    samples = settings.samples_per_prompt if samples_per_prompt is None else samples_per_prompt
    planned = plan_answers(requests, seed=seed, samples_per_prompt=samples)
    prompts = [chat_prompt_ids(tokenizer, request.messages) for request in requests]
    lengths = [len(prompts[answer.request_index]) for answer in planned]
    results: list[GeneratedText | None] = [None] * len(planned)
    for batch in batches_by_length(lengths, batch_size):
        members = [planned[index] for index in batch]
        completions, latency_ms = generate_batch(
            model,
            tokenizer,
            [prompts[answer.request_index] for answer in members],
            settings,
            seeds=[answer.seed for answer in members],
        )
        texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
        for index, answer, completion, text in zip(batch, members, completions, texts, strict=True):
            results[index] = GeneratedText(
                key=requests[answer.request_index].key,
                sample_index=answer.sample_index,
                text=text.strip(),
                prompt_tokens=len(prompts[answer.request_index]),
                completion_tokens=len(completion),
                latency_ms=latency_ms,
                seed=answer.seed,
            )
    return [result for result in results if result is not None]


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into `lengths` cut into batches of at most `batch_size`, shortest first.

    Similar lengths share a batch, so short prompts are not padded to the longest prompt of the whole set. The
    sort is stable: equal lengths (a request's samples) keep their order.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of `messages` in the model's chat template, ending with the opening of the assistant turn."""
    chat = [dict(message) for message in messages]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    # The template already writes any BOS token the model expects; the tokenizer adding one would double it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def generate_batch(
    model: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    settings: GenerationSettings,
    *,
    seeds: Sequence[int],
) -> tuple[list[list[int]], int]:
    """Generate for one batch of prompt ids, row i sampled with seeds[i]; return each prompt's new tokens (cut
    after the first stop token) and the batch's wall time in milliseconds."""
    import torch
    from transformers import LogitsProcessorList

    if len(seeds) != len(prompts):
        raise ValueError(f"one seed per prompt is needed, got {len(seeds)} for {len(prompts)} prompts")
    pad_id = pad_token_id(tokenizer)
    stop_ids = stop_token_ids(model, tokenizer)
    input_ids, attention_mask = left_pad(prompts, pad_id, device=model.device)
    processors = LogitsProcessorList()
    if not settings.greedy:
        processors.append(RowSeededSampler(settings, seeds, prompt_width=input_ids.shape[1], device=model.device))
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=stop_ids or None,
            # Sampling happens in RowSeededSampler, which leaves one finite score per row for argmax to pick.
            do_sample=False,
            # The model's own defaults would otherwise apply (Qwen2.5 ships a repetition penalty of 1.05).
            repetition_penalty=1.0,
            logits_processor=processors,
        )
    latency_ms = round((time.perf_counter() - started) * 1000)
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    return [cut_after_stop(row, stop_ids) for row in new_tokens], latency_ms


class RowSeededSampler:
    """Temperature and top-p sampling with one random stream per batch row, as a logits processor.

    transformers samples every row of a batch from the one global generator, so a row's answer would depend on
    which rows shared its batch and in what order. Here row i draws its uniforms from its own generator seeded
    with seeds[i] (on the CPU, so a seed means the same on any device), and picks its token by inverse CDF over
    the vocabulary in id order: an answer is the same in any batch, alone included, up to the last bits of the
    logits, which padding may change (as it may change a greedy answer).
    """

    def __init__(
        self, settings: GenerationSettings, seeds: Sequence[int], *, prompt_width: int, device: torch.device | str
    ) -> None:
        import torch

        self.temperature = settings.temperature
        self.top_p = settings.top_p
        self.prompt_width = prompt_width
        uniforms = [
            torch.rand(settings.max_new_tokens, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            for seed in seeds
        ]
        self.uniforms = torch.stack(uniforms).to(device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        step = input_ids.shape[1] - self.prompt_width
        probs = torch.softmax(scores.float() / self.temperature, dim=-1).double()
        if self.top_p < 1:
            # Keep the most likely tokens until their mass reaches top_p, the token crossing it included.
            ranked, ranks = probs.sort(dim=-1, descending=True, stable=True)
            drop_ranked = ranked.cumsum(dim=-1) - ranked >= self.top_p
            drop = torch.zeros_like(drop_ranked).scatter(-1, ranks, drop_ranked)
            probs = probs.masked_fill(drop, 0.0)
        cumulative = probs.cumsum(dim=-1)
        target = self.uniforms[:, step : step + 1] * cumulative[:, -1:]
        tokens = torch.searchsorted(cumulative, target, right=True).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, tokens, 0.0)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, *, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: a decoder continues at the right end, so prompts must end there."""
    import torch

    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def cut_after_stop(tokens: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """The tokens up to and including the first stop token; what follows it is padding."""
    for position, token in enumerate(tokens):
        if token in stop_ids:
            return list(tokens[: position + 1])
    return list(tokens)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad id, or its EOS id for tokenizers without one (Llama's, for one)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad batches with")
    return int(pad_id)


def stop_token_ids(model: CausalLM, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends an answer: the model's generation EOS ids (chat models often list several) and the
    tokenizer's EOS."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [*ids, tokenizer.eos_token_id]
    return sorted({int(token) for token in ids if token is not None})
