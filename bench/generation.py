"""Batched vs one-prompt-at-a-time generation on the same model, side by side in one run; then the memory of K
variants as K adapters on one loaded base vs K loaded base copies each with its adapter.

    python bench/generation.py [--model PATH_OR_ID] [--prompts 64] [--batch-size 16] [--max-new-tokens 48] \
        [--adapters 4] [--shape tiny|qwen0.5b]

Without --model it builds (or reuses) the offline tiny model under var/models/tiny. Decoding is greedy, so both
ways must produce the same answers (checked); the ratio of their tokens/s is the figure of merit (target: at least
6× at batch 16). Run it on an otherwise idle machine: the two runs are sequential.

Memory: each arm (the base alone, K adapters on one base, K base copies) loads in a fresh process through
training.generation.hf, and reports the bytes of the models' parameters and buffers (tied weights counted once) and how
much the process's resident memory grew. The adapters are LoRA (rank 16 on every projection) with random weights.
`--shape qwen0.5b` measures on a random-weight model of Qwen2.5-0.5B's shape instead of the tiny model (config
values typed in below, built offline under var/bench/; it carries the tiny model's tokenizer, since only memory is
measured on it). The arms load on the CPU in float32, as CPU generation does: each copy of that shape takes
about 2 GB.
"""

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.generation.hf import generate, load_base_with_adapters, load_for_generation  # noqa: E402
from training.generation.settings import GenerationRequest, GenerationSettings  # noqa: E402
from training.tiny import ensure_tiny_model  # noqa: E402

# Qwen2.5-0.5B-Instruct's config.json, typed in so the shape needs no download.
QWEN_05B_SHAPE = {
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

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


def qwen_shaped_model(directory: Path, tokenizer_from: Path) -> Path:
    """A random-weight model of Qwen2.5-0.5B's shape saved in bfloat16 (about 1 GB), built once."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN_05B_SHAPE)).to(torch.bfloat16)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(directory)
    return directory


def random_adapters(base: str, directory: Path, count: int) -> list[str]:
    """`count` rank-16 LoRA adapters on every projection, with random (non-zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = [directory / f"adapter-{index}" for index in range(count)]
    if all((path / "adapter_config.json").exists() for path in paths):
        return [str(path) for path in paths]
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16),
        LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
    )
    generator = torch.Generator().manual_seed(0)
    for path in paths:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        model.save_pretrained(path)
    return [str(path) for path in paths]


def model_bytes(model) -> int:
    """Bytes of a model's parameters and buffers, each tensor once (tied embeddings share one)."""
    tensors = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        tensors[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(tensors.values())


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def warm_up_code(base: str) -> None:
    """Import the code every arm runs (transformers' model class, PEFT's LoRA layers) before measuring, on the
    meta device so nothing is allocated: the arms' memory should be their weights, not their modules."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
        get_peft_model(model, LoraConfig(r=16, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))


def memory_arm(arm: str, base: str, adapters: list[str]) -> dict:
    """Load one arm in this (fresh) process and measure it."""
    warm_up_code(base)
    gc.collect()
    before = rss_bytes()
    if arm == "base":
        models = [load_for_generation(base, device="cpu")[0]]
    elif arm == "shared":
        variants = {f"variant-{index}": path for index, path in enumerate(adapters)}
        models = [load_base_with_adapters(base, variants, device="cpu").model]
    else:
        models = [load_for_generation(base, adapter_path=path, device="cpu")[0] for path in adapters]
    gc.collect()
    return {
        "models": len(models),
        "parameter_and_buffer_bytes": sum(model_bytes(model) for model in models),
        "rss_growth_bytes": rss_bytes() - before,
    }


def measure_memory(base: str, adapters: list[str]) -> dict:
    """Each arm in its own process, so memory freed by one arm cannot hide in the next one's figures."""
    arms = {}
    for arm in ("base", "shared", "copies"):
        command = [
            sys.executable,
            __file__,
            "--memory-arm",
            arm,
            "--base",
            base,
            *[option for path in adapters for option in ("--adapter", path)],
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"memory arm {arm} failed:\n{completed.stderr[-3000:]}")
        arms[arm] = json.loads(completed.stdout.splitlines()[-1])
    shared, copies = arms["shared"], arms["copies"]
    mib = 1024 * 1024
    return {
        "base_model": base,
        "adapters": len(adapters),
        "base_alone": arms["base"],
        "adapters_on_one_base": shared,
        "base_copies_with_an_adapter_each": copies,
        "summary_mib": {
            "one_base_parameters": round(arms["base"]["parameter_and_buffer_bytes"] / mib, 1),
            "adapters_on_one_base_parameters": round(shared["parameter_and_buffer_bytes"] / mib, 1),
            "base_copies_parameters": round(copies["parameter_and_buffer_bytes"] / mib, 1),
            "adapters_on_one_base_rss_growth": round(shared["rss_growth_bytes"] / mib, 1),
            "base_copies_rss_growth": round(copies["rss_growth_bytes"] / mib, 1),
        },
        "copies_over_shared": {
            "parameters": round(copies["parameter_and_buffer_bytes"] / shared["parameter_and_buffer_bytes"], 2),
            "rss_growth": round(copies["rss_growth_bytes"] / max(shared["rss_growth_bytes"], 1), 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model id or path (default: the built-in tiny model)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--adapters", type=int, default=4, help="K: variants for the memory comparison")
    parser.add_argument("--shape", choices=("tiny", "qwen0.5b"), default="tiny", help="model of the memory comparison")
    # Internal: one arm of the memory comparison, run in a child process.
    parser.add_argument("--memory-arm", choices=("base", "shared", "copies"), help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--adapter", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_arm:
        print(json.dumps(memory_arm(args.memory_arm, args.base, args.adapter)))
        return
    if args.adapters < 1:
        parser.error(f"--adapters must be at least 1, got {args.adapters}")

    tiny = ensure_tiny_model(REPO / "var" / "models" / "tiny")
    model_ref = args.model or str(tiny)
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
    del model
    gc.collect()

    bench_dir = REPO / "var" / "bench"
    base = str(tiny) if args.shape == "tiny" else str(qwen_shaped_model(bench_dir / "qwen0.5b-shape", tiny))
    adapters = random_adapters(base, bench_dir / f"adapters-{args.shape}", args.adapters)
    report["memory"] = {"shape": args.shape, **measure_memory(base, adapters)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
