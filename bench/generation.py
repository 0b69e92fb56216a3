"""Batched vs one-prompt-at-a-time generation on the same model, side by side in one run.

    python bench/generation.py [--model PATH_OR_ID] [--prompts 64] [--batch-size 16] [--max-new-tokens 48]

Without --model it builds (or reuses) the offline tiny model under var/models/tiny. Decoding is greedy, so both
ways must produce the same answers (checked); the ratio of their tokens/s is the figure of merit (target: at least
6× at batch 16). Run it on an otherwise idle machine: the two runs are sequential.
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.generate import GenerationRequest, GenerationSettings, generate, load_for_generation  # noqa: E402
from training.tiny import ensure_tiny_model  # noqa: E402

QUESTIONS = [
    "What does a museum conservator do?",
    "Why are archives digitised?",
    "What is intangible cultural heritage?",
    "What is a LoRA adapter?",
    "How does QLoRA save memory?",
    "What does the beta of DPO control?",
    "How is a World Heritage site nominated?",
    "When should I use retrieval instead of fine-tuning?",
]


def timed(model, tokenizer, requests, settings, batch_size: int) -> tuple[list[str], int, float]:
    started = time.perf_counter()
    results = generate(model, tokenizer, requests, settings, seed=0, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return [result.text for result in results], sum(result.completion_tokens for result in results), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model id or path (default: the built-in tiny model)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    model_ref = args.model or str(ensure_tiny_model(REPO / "var" / "models" / "tiny"))
    model, tokenizer = load_for_generation(model_ref)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.0, top_p=1.0)
    requests = [
        GenerationRequest(key=str(i), messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
        for i in range(args.prompts)
    ]
    generate(model, tokenizer, requests[:2], settings, seed=0, batch_size=2)  # warm-up

    batched_texts, tokens, batched_s = timed(model, tokenizer, requests, settings, args.batch_size)
    single_texts, single_tokens, single_s = timed(model, tokenizer, requests, settings, 1)
    if batched_texts != single_texts or tokens != single_tokens:
        raise SystemExit("batched and one-at-a-time greedy answers differ: the comparison would be meaningless")
    batched, single = tokens / batched_s, tokens / single_s
    report = {
        "model": model_ref,
        "device": str(next(model.parameters()).device),
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "completion_tokens": tokens,
        "batched": {"batch_size": args.batch_size, "seconds": round(batched_s, 3), "tokens_per_s": round(batched, 1)},
        "one_at_a_time": {"seconds": round(single_s, 3), "tokens_per_s": round(single, 1)},
        "speedup": round(batched / single, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
