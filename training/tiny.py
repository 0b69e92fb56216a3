"""Prefloop's built-in tiny model: a 2-layer Llama with its own BPE tokenizer and ChatML chat template.

It is built offline and deterministically in seconds from `training/assets/tiny_corpus.jsonl`, so the tests
and the demo can run the whole loop (generate, rate, DPO on a 4-bit base, generate again) without downloading
weights. Its answers are word-like but rough; it exists to exercise the machinery, not to be good.

Run:

    python -m training.tiny var/models/tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from training.lines import read_lines

CORPUS_PATH = Path(__file__).resolve().parent / "assets" / "tiny_corpus.jsonl"

# Bump when the recipe below changes, so caches built by an older recipe are rebuilt instead of reused.
RECIPE_VERSION = 1
MARKER_FILE = "prefloop_tiny.json"
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", MARKER_FILE)

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
VOCAB_SIZE = 2000

# ChatML, the format of Qwen and many small chat models: prompts look the same on the tiny model as on those.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('The tiny model knows the roles system, user and assistant, not '"
    " + message['role']) }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Big enough for NF4 (bitsandbytes quantises weights in blocks of 64) and small enough to pretrain in seconds.
HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 4
MAX_POSITIONS = 512

PRETRAIN_STEPS = 300
PRETRAIN_BATCH_SIZE = 16
PRETRAIN_LEARNING_RATE = 3e-3


def build_tiny_model(out_dir: Path, *, seed: int = 0, pretrain_steps: int = PRETRAIN_STEPS) -> Path:
    """Build the tiny model into `out_dir` (created if missing) and return it.

    The same seed gives bit-identical weights and tokenizer on the same machine: everything random (tokenizer
    training is not; weight init and batch order are) draws from generators seeded here. `pretrain_steps`
    exists for tests that check properties of the recipe without paying for the full pretraining.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pairs = load_corpus()
    tokenizer = build_tokenizer(pairs)
    model = init_model(tokenizer, seed=seed)
    final_loss = pretrain(model, tokenizer, pairs, seed=seed, steps=pretrain_steps)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    # Written last: its presence says the files before it are complete.
    marker = {
        "recipe_version": RECIPE_VERSION,
        "seed": seed,
        "pretrain_steps": pretrain_steps,
        "final_loss": round(final_loss, 4),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir


def ensure_tiny_model(out_dir: Path, *, pretrain_steps: int = PRETRAIN_STEPS) -> Path:
    """Return `out_dir` holding a complete tiny model, building it first when it is missing or outdated.

    The build goes to a temporary sibling directory that is renamed into place, so readers never see a
    half-written model. When two processes race, both build, one rename wins and the loser discards its copy.
    A directory that holds something other than a tiny model is left alone (FileExistsError).
    """
    out_dir = Path(out_dir)
    if is_complete_tiny_model(out_dir, pretrain_steps=pretrain_steps):
        return out_dir
    _refuse_foreign_directory(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    # mkdtemp makes the directory private, but the web app and the workers must read the model too.
    staging.chmod(0o755)
    try:
        build_tiny_model(staging, pretrain_steps=pretrain_steps)
        _move_into_place(staging, out_dir, pretrain_steps=pretrain_steps)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def is_complete_tiny_model(model_dir: Path, *, pretrain_steps: int = PRETRAIN_STEPS) -> bool:
    """True when `model_dir` holds every file of a tiny model built by the current recipe."""
    if not all((Path(model_dir) / name).is_file() for name in REQUIRED_FILES):
        return False
    marker = _marker(Path(model_dir))
    return marker.get("recipe_version") == RECIPE_VERSION and marker.get("pretrain_steps") == pretrain_steps


def load_corpus(path: Path = CORPUS_PATH) -> list[tuple[str, str]]:
    """The (question, answer) pairs of the tiny corpus, in file order."""
    pairs = []
    for line in read_lines(path):
        if line.strip():
            row = json.loads(line)
            pairs.append((row["question"], row["answer"]))
    return pairs


def build_tokenizer(pairs: Sequence[tuple[str, str]]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the corpus, with ChatML special tokens and chat template."""
    bpe = Tokenizer(models.BPE())
    # Byte level, like GPT-2 and Qwen: any text encodes, no unknown token needed.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [text for pair in pairs for text in pair] + ["system user assistant"]
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def init_model(tokenizer: PreTrainedTokenizerFast, *, seed: int) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama whose special token ids match `tokenizer`."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def pretrain(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    pairs: Sequence[tuple[str, str]],
    *,
    seed: int,
    steps: int = PRETRAIN_STEPS,
) -> float:
    """Train next-token prediction on the chat-formatted corpus; return the last step's loss."""
    input_ids, labels = _chat_batch(tokenizer, pairs)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LEARNING_RATE, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        rows = torch.randint(len(pairs), (PRETRAIN_BATCH_SIZE,), generator=generator)
        batch_ids, batch_labels = _trim_padding(input_ids[rows], labels[rows])
        attention_mask = batch_labels.ne(-100).long()
        loss = model(input_ids=batch_ids, attention_mask=attention_mask, labels=batch_labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach())


def _chat_batch(
    tokenizer: PreTrainedTokenizerFast, pairs: Sequence[tuple[str, str]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids of every pair as a user/assistant chat, and labels with padding masked out."""
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        for question, answer in pairs
    ]
    encoded = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"].eq(0), -100)
    return encoded["input_ids"], labels


def _trim_padding(input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Cut columns that are padding in every row: the batch's longest chat decides the length, not the
    # corpus's.
    length = int(labels.ne(-100).sum(dim=1).max())
    return input_ids[:, :length], labels[:, :length]


def _marker(model_dir: Path) -> dict[str, Any]:
    try:
        marker = json.loads((model_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _refuse_foreign_directory(out_dir: Path) -> None:
    # Only directories that are empty or carry our marker are ours to replace; anything else is the user's.
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _marker(out_dir):
        problem = "exists and is not a Prefloop tiny model; remove it or use another path"
        raise FileExistsError(f"{out_dir} {problem}")


def _move_into_place(staging: Path, out_dir: Path, *, pretrain_steps: int) -> None:
    if out_dir.exists() and not is_complete_tiny_model(out_dir, pretrain_steps=pretrain_steps):
        _discard_outdated(out_dir)
    try:
        # Atomic on one filesystem; fails when another process has put its copy there first.
        os.rename(staging, out_dir)
    except OSError:
        if not is_complete_tiny_model(out_dir, pretrain_steps=pretrain_steps):
            raise


def _discard_outdated(out_dir: Path) -> None:
    _refuse_foreign_directory(out_dir)
    aside = out_dir.with_name(f".{out_dir.name}.outdated-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(out_dir, aside)
    except FileNotFoundError:
        return  # another process moved it aside first
    shutil.rmtree(aside, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="directory for the model (reused when already complete)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    model_dir = ensure_tiny_model(args.out_dir)
    print(f"tiny model ready at {model_dir} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
