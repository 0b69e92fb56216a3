"""Answer a JSONL file of prompts with one or more variants of a base model (PEFT adapters on it).

Run:

    python -m training.generation --model var/models/tiny --prompts prompts.jsonl --out answers.jsonl \\
        [--adapter NAME=PATH ...] [--backend transformers|vllm] [--quantization 4bit] [--max-new-tokens 96] \\
        [--temperature 0.7] [--top-p 0.95] [--samples-per-prompt 1] [--seed 0] [--batch-size 8]

`prompts.jsonl` has one {"id": ..., "prompt": ...} object a line. Each `--adapter NAME=PATH` adds a variant
answering every prompt with that PEFT adapter (`NAME=` alone: the plain base); without any, the base alone
answers as variant "base". Each output line is a GeneratedText as JSON with its "variant". A bad option or
prompt file exits with status 2 and says what is wrong.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from training.generation.hf import generate_for_variants, load_base_with_adapters
from training.generation.settings import (
    QUANTIZATIONS,
    GeneratedText,
    GenerationRequest,
    GenerationSettings,
    plan_answers,
)
from training.generation.vllm import VLLMBackend, VLLMUnavailableError
from training.lines import read_lines


def read_prompts_jsonl(path: Path) -> list[GenerationRequest]:
    """Requests from a JSONL file of {"id", "prompt"} objects, each prompt sent as one user message."""
    requests = []
    for number, line in enumerate(read_lines(path), start=1):
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


def parse_adapter_options(values: Sequence[str]) -> dict[str, str | None]:
    """Variants from `--adapter NAME=PATH` options (`NAME=`: the plain base); none given: the base as "base"."""
    adapters: dict[str, str | None] = {}
    for value in values:
        name, equals, path = value.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--adapter must be NAME=PATH (NAME= for the plain base), got {value!r}")
        if name.strip() in adapters:
            raise ValueError(f"--adapter names the variant {name.strip()!r} twice")
        adapters[name.strip()] = path.strip() or None
    return adapters or {"base": None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser()
    args = parser.parse_args(argv)
    try:
        settings = GenerationSettings(args.max_new_tokens, args.temperature, args.top_p, args.samples_per_prompt)
        adapters = parse_adapter_options(args.adapter)
        requests = read_prompts_jsonl(args.prompts)
        plan_answers(requests, seed=args.seed, samples_per_prompt=settings.samples_per_prompt)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    requests_by_variant = {variant: requests for variant in adapters}
    settings_by_variant = {variant: settings for variant in adapters}
    if args.backend == "vllm":
        try:
            backend = VLLMBackend(args.model, adapters, quantization=args.quantization)
        except (VLLMUnavailableError, ValueError) as error:
            parser.error(str(error))
        results = backend.generate_for_variants(requests_by_variant, settings_by_variant, seed=args.seed)
    else:
        loaded = load_base_with_adapters(args.model, adapters, args.quantization)
        results = generate_for_variants(
            loaded,
            loaded.tokenizer,
            requests_by_variant,
            settings_by_variant,
            seed=args.seed,
            batch_size=args.batch_size,
        )
    write_answers(args.out, results)
    count = sum(len(answers) for answers in results.values())
    print(f"wrote {count} answers from {len(results)} variant(s) to {args.out}")
    return 0


def command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="base model: Hugging Face id or local directory")
    parser.add_argument("--prompts", required=True, type=Path, help='JSONL file of {"id", "prompt"} objects')
    parser.add_argument("--out", required=True, type=Path, help="JSONL file to write the answers to")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a variant answering with this PEFT adapter on the base (NAME= for the plain base); repeatable",
    )
    parser.add_argument(
        "--backend",
        choices=("transformers", "vllm"),
        default="transformers",
        help="vllm: vLLM with LoRA adapters, on a GPU machine where vLLM is installed",
    )
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="none")
    parser.add_argument("--max-new-tokens", type=int, default=GenerationSettings.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=GenerationSettings.temperature)
    parser.add_argument("--top-p", type=float, default=GenerationSettings.top_p)
    parser.add_argument("--samples-per-prompt", type=int, default=GenerationSettings.samples_per_prompt)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch (transformers backend)")
    return parser


def write_answers(path: Path, results: Mapping[str, Sequence[GeneratedText]]) -> None:
    """One JSON object a line: each answer with its "variant", variant by variant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for variant, answers in results.items():
            for answer in answers:
                out.write(json.dumps({"variant": variant, **asdict(answer)}, ensure_ascii=False) + "\n")
