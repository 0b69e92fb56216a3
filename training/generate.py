"""Batched, chat-templated answer generation for one model variant (a base model, optionally a PEFT adapter).

Prompts are grouped by token length into left-padded batches so little compute goes to padding; results come
back in input order with exact token counts and the seed each batch was sampled with.

Run:

    python -m training.generate --model var/models/tiny --prompts prompts.jsonl --out answers.jsonl \
        [--adapter DIR] [--quantization 4bit] [--max-new-tokens 96] [--temperature 0.7] [--top-p 0.95] \
        [--seed 0] [--batch-size 8]

`prompts.jsonl` has one {"id": ..., "prompt": ...} object a line; each output line is a GeneratedText as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.validation import check_known_keys, is_int, is_number

# torch and transformers are imported inside the functions that use them: the web app imports this module to
# validate generation settings and should not pay seconds and hundreds of megabytes for that.
if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

# A transformers causal LM (GenerationMixin) or a PeftModel wrapping one. The two share no base class that
# declares generate(), so the alias stays loose rather than lying to the type checker.
CausalLM = Any

Quantization = Literal["none", "4bit", "8bit"]
QUANTIZATIONS: tuple[str, ...] = ("none", "4bit", "8bit")

MAX_NEW_TOKENS_LIMIT = 8192
TEMPERATURE_LIMIT = 5.0


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode. These three values alone decide it: the model's own defaults (top_k, repetition penalty)
    are switched off so that a stored settings record reproduces its answers. Temperature 0 means greedy."""

    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.95

    def __post_init__(self) -> None:
        if not is_int(self.max_new_tokens) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            expected = f"an integer from 1 to {MAX_NEW_TOKENS_LIMIT}"
            raise ValueError(f"max_new_tokens must be {expected}, got {self.max_new_tokens!r}")
        if not is_number(self.temperature) or not 0 <= self.temperature <= TEMPERATURE_LIMIT:
            expected = f"a number from 0 (greedy) to {TEMPERATURE_LIMIT:g}"
            raise ValueError(f"temperature must be {expected}, got {self.temperature!r}")
        if not is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number greater than 0 and at most 1, got {self.top_p!r}")
        # Integers are accepted for the float fields (a form or YAML may give 1 for 1.0); store them as floats
        # so to_dict() is the same whichever was given.
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationSettings:
        """Settings from a plain mapping; missing keys take their defaults, unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError(f"generation settings must be a mapping, got {type(data).__name__}")
        check_known_keys("generation setting", data, cls)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationRequest:
    """One chat to answer; `key` comes back on its result."""

    key: str
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class GeneratedText:
    """One answer. Token counts exclude padding; completion_tokens includes the end-of-turn token when the
    model produced one. latency_ms is the wall time of the whole batch the answer was generated in, and seed
    the seed that batch was sampled with."""

    key: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    seed: int


def load_for_generation(
    base_model: str,
    *,
    adapter_path: str | None = None,
    quantization: Quantization = "none",
    device: str | None = None,
) -> tuple[CausalLM, PreTrainedTokenizerBase]:
    """Load a base model (Hub id or local path), optionally quantised, optionally with a PEFT adapter on top.

    The model is returned in eval mode.

    "4bit" is NF4 with double quantisation computing in bfloat16 on CUDA and float32 on CPU (as unquantised
    models do); "8bit" is LLM.int8(), which computes in float16.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.device import compute_dtype, pick_device

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    device = device or pick_device()
    # LLM.int8() multiplies in float16 and would cast (and warn) on every matmul given anything else.
    dtype = torch.float16 if quantization == "8bit" else compute_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model: CausalLM = AutoModelForCausalLM.from_pretrained(
        base_model,
        dtype=dtype,
        device_map=device,  # "cuda" means this process's GPU (LOCAL_RANK), "cpu" the CPU
        quantization_config=quantization_config(quantization, dtype),
    )
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
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


def generate(
    model: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[GenerationRequest],
    settings: GenerationSettings,
    *,
    seed: int,
    batch_size: int = 8,
) -> list[GeneratedText]:
    """Answer every request; results in the order of `requests`.

    Requests are sorted by prompt length and cut into batches of `batch_size`; batch i is sampled after
    seeding with `seed + i`, the seed recorded on its results.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    prompts = [chat_prompt_ids(tokenizer, request.messages) for request in requests]
    # Similar lengths share a batch, so short prompts are not padded to the longest prompt of the whole set.
    order = sorted(range(len(requests)), key=lambda index: len(prompts[index]))
    results: list[GeneratedText | None] = [None] * len(requests)
    for batch_index, start in enumerate(range(0, len(order), batch_size)):
        members = order[start : start + batch_size]
        batch_seed = seed + batch_index
        completions, latency_ms = generate_batch(
            model, tokenizer, [prompts[index] for index in members], settings, seed=batch_seed
        )
        texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
        for index, completion, text in zip(members, completions, texts, strict=True):
            results[index] = GeneratedText(
                key=requests[index].key,
                text=text.strip(),
                prompt_tokens=len(prompts[index]),
                completion_tokens=len(completion),
                latency_ms=latency_ms,
                seed=batch_seed,
            )
    return [result for result in results if result is not None]


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
    seed: int,
) -> tuple[list[list[int]], int]:
    """Generate for one batch of prompt ids; return each prompt's new tokens (cut after the first stop token)
    and the batch's wall time in milliseconds."""
    import torch

    pad_id = pad_token_id(tokenizer)
    stop_ids = stop_token_ids(model, tokenizer)
    input_ids, attention_mask = left_pad(prompts, pad_id, device=model.device)
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=stop_ids or None,
            **decoding_kwargs(settings),
        )
    latency_ms = round((time.perf_counter() - started) * 1000)
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    return [cut_after_stop(row, stop_ids) for row in new_tokens], latency_ms


def decoding_kwargs(settings: GenerationSettings) -> dict[str, Any]:
    """generate() arguments for the settings, overriding the model's sampling defaults."""
    if settings.greedy:
        return {"do_sample": False}
    return {
        "do_sample": True,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": 0,  # 0 disables top-k, which transformers would otherwise apply with k=50
        "repetition_penalty": 1.0,
    }


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


def read_prompts_jsonl(path: Path) -> list[GenerationRequest]:
    """Requests from a JSONL file of {"id", "prompt"} objects, each prompt sent as one user message."""
    requests = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or "id" not in row:
            raise ValueError(f'{path}:{number}: expected an object with "id" and a string "prompt"')
        messages = [{"role": "user", "content": row["prompt"]}]
        requests.append(GenerationRequest(key=str(row["id"]), messages=messages))
    return requests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="base model: Hugging Face id or local directory")
    parser.add_argument("--prompts", required=True, type=Path, help='JSONL file of {"id", "prompt"} objects')
    parser.add_argument("--out", required=True, type=Path, help="JSONL file to write the answers to")
    parser.add_argument("--adapter", help="PEFT adapter directory to load on top of the base model")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="none")
    parser.add_argument("--max-new-tokens", type=int, default=GenerationSettings.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=GenerationSettings.temperature)
    parser.add_argument("--top-p", type=float, default=GenerationSettings.top_p)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        settings = GenerationSettings(args.max_new_tokens, args.temperature, args.top_p)
        requests = read_prompts_jsonl(args.prompts)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    model, tokenizer = load_for_generation(
        args.model,
        adapter_path=args.adapter,
        quantization=args.quantization,
    )
    results = generate(model, tokenizer, requests, settings, seed=args.seed, batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as out:
        for result in results:
            out.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    print(f"wrote {len(results)} answers to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
