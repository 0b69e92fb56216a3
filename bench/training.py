"""DPO training: a Prefloop job vs a plain TRL script (step time), and QLoRA vs LoRA (peak memory), in one run.

    python bench/training.py [--device auto|cpu|cuda] [--model PATH] [--steps 30] [--warmup 5] [--repeats 2]
        [--batch-size 2] [--max-length 512] [--database-url postgres://...] [--skip-memory] [--skip-step-time]
        [--memory-model qwen2.5-0.5b-shape|SPEC ...] [--quick]

(a) Step time. The same DPO config (the built-in tiny model unless --model; a preference JSONL built from the tiny
    model's corpus; same seed, steps, batch, max_length, 4-bit NF4 double-quant base, LoRA r16 all-linear, optimizer)
    is trained two ways, alternated a, b, a, b... --repeats times so that machine noise hits both:
    - "prefloop": `training.dpo.train_dpo`, the call the Celery task makes, with callbacks doing the job's per-log
      and per-step work: on_log appends the entry to a list, rewrites the JSON of the whole list (as the task's
      UPDATE of TrainingJob.metrics does) and appends a JSON line to a file; should_stop touches a heartbeat file
      and checks a cancel-flag file (the task refreshes the job's heartbeat and asks whether it was cancelled).
      With --database-url those two callbacks run the same SQL as evaluator/services/training_jobs.py instead, on a
      temporary table: per log a transaction of SELECT ... FOR UPDATE and UPDATE, per step an UPDATE of the
      heartbeat and an EXISTS. Django's ORM itself is not in the loop (training/ never imports it), nor are
      checkpoints: the job's save_steps is left at 0 on both sides, as the plain script saves none.
    - "plain_trl": a minimal TRL script written inline here: BitsAndBytesConfig, AutoModelForCausalLM,
      prepare_model_for_kbit_training, LoraConfig, DPOConfig, DPOTrainer, nothing else.
    A TrainerCallback on both records on_step_begin and on_step_end. Per step it reports "compute" (begin to end:
    forward, backward, optimizer) and "cycle" (begin to the next begin: also the logging and every callback, so the
    job's overhead is inside it). Medians are over the steps after --warmup of all repeats; the figure of merit is
    the ratio of median cycles prefloop / plain_trl (target: at most 1.10). The per-step losses of both ways are
    compared too: the same config and seed must train the same thing.
(b) Peak memory, QLoRA vs LoRA, on each --memory-model: by default a model of Qwen2.5-0.5B's shape (its config
    values typed in, random weights, saved once in bfloat16 with the tiny model's tokenizer, since nothing is
    downloaded); also any base a variant takes, e.g. --memory-model smollm2-135m-instruct (converted once into
    PREFLOOP_MODEL_CACHE, default var/models). Each variant runs in a fresh
    subprocess through Prefloop's own `build_dpo_trainer` (QLoRA: 4-bit NF4 double-quant base, prepared for k-bit
    training; LoRA: the base in the compute dtype; both LoRA r16 all-linear, gradient checkpointing) and trains
    real DPO steps at batch 1 (3 on CUDA; 1 on CPU, where each costs minutes). On CUDA the peak is
    torch.cuda.max_memory_allocated; on CPU the peak RSS minus the RSS before loading (the high-water mark is reset
    after loading, so the training phase is reported apart from the load). The bytes of the weights themselves
    (parameters, buffers and 4-bit quantisation state) are compared too: on CPU bitsandbytes' 4-bit path and the
    float32 compute dtype make RSS a rough proxy.

On CUDA the compute dtype is bfloat16 and the optimizer paged_adamw_8bit (DPOJobConfig's default); on CPU float32.
It prints one JSON report on stdout; training logs go to stderr. --quick is a short smoke run (12 steps, one
memory step, max_length 64 in the memory runs). Takes minutes on CPU; on a busy 2-core machine, many.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Qwen2.5-0.5B's config.json, typed in so that no download is needed.
QWEN25_05B_SHAPE: dict[str, Any] = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "use_sliding_window": False,
}
QWEN_SHAPE = "qwen2.5-0.5b-shape"
PREFERENCE_RECORDS = 64
STEP_TARGET = 1.10
MEMORY_TARGET = 0.6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--model", help="base model path for the step-time part (default: the built-in tiny model)")
    parser.add_argument("--steps", type=int, help="training steps per step-time run (default 30)")
    parser.add_argument("--warmup", type=int, help="steps left out of the medians at the start of each run (5)")
    parser.add_argument("--repeats", type=int, help="runs of each way, alternated (default 2)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--memory-steps", type=int, help="DPO steps per memory run (default 3 on CUDA, 1 on CPU)")
    parser.add_argument("--memory-max-length", type=int, help="max_length of the memory runs (default 128)")
    parser.add_argument("--database-url", help="PostgreSQL URL: the job's callbacks then run its SQL (see above)")
    parser.add_argument("--skip-memory", action="store_true", help="only the step-time part")
    parser.add_argument("--skip-step-time", action="store_true", help="only the memory part")
    parser.add_argument(
        "--memory-model",
        action="append",
        help=f"a model for the memory part, repeatable: {QWEN_SHAPE} (the default) or a base model spec",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    # Internal: one memory measurement, run by the parent in a fresh process.
    parser.add_argument("--memory-child", choices=("qlora", "lora"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    args.steps = args.steps or (12 if quick else 30)
    args.warmup = args.warmup if args.warmup is not None else (3 if quick else 5)
    args.repeats = args.repeats or 2
    args.memory_max_length = args.memory_max_length or (64 if quick else 128)
    if args.steps - args.warmup < 2:
        parser.error(f"--steps must exceed --warmup by at least 2, got {args.steps} and {args.warmup}")
    if min(args.repeats, args.batch_size, args.memory_steps or 1) < 1:
        parser.error("--repeats, --batch-size and --memory-steps must be at least 1")

    device = choose_device(args.device, parser)
    # The peak comes with the first optimizer step; on a CPU each step of a 0.5B model costs minutes.
    args.memory_steps = args.memory_steps or (3 if device == "cuda" and not quick else 1)
    if args.memory_child:
        print(json.dumps(memory_child(args, device)))
        return

    from training.tiny import ensure_tiny_model

    tiny = ensure_tiny_model(REPO / "var" / "models" / "tiny")
    model_ref = args.model or str(tiny)
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-training-") as scratch:
        work = Path(scratch)
        dataset = write_preferences(work / "preferences.jsonl")
        report: dict[str, Any] = {
            "command": " ".join(["bench/training.py", *sys.argv[1:]]),
            "device": device_description(device),
            "versions": versions(),
        }
        if not args.skip_step_time:
            report["step_time"] = step_time(args, device, model_ref, dataset, work)
        if not args.skip_memory:
            report["memory"] = {
                name: memory(args, device, memory_model_dir(name, tiny, work), dataset, name)
                for name in args.memory_model or [QWEN_SHAPE]
            }
    print(json.dumps(report, indent=2))


def choose_device(wanted: str, parser: argparse.ArgumentParser) -> str:
    # training.dpo picks CUDA whenever it sees a GPU; hiding the GPU before torch loads is how "cpu" is honoured.
    if wanted == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    if wanted == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible")
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_description(device: str) -> dict[str, Any]:
    import torch

    described: dict[str, Any] = {"kind": device, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        described["gpu"] = torch.cuda.get_device_name(0)
    else:
        described["cpu"] = platform.processor() or platform.machine()
    return described


def versions() -> dict[str, str]:
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


def write_preferences(path: Path) -> Path:
    """Records preferring each corpus question's own answer over another question's, as in the training tests."""
    from training.lines import read_lines
    from training.preferences import PairwiseVote, preference_records, write_jsonl
    from training.tiny import CORPUS_PATH

    corpus = [json.loads(line) for line in read_lines(CORPUS_PATH) if line]
    votes = []
    for index in range(PREFERENCE_RECORDS):
        row, other = corpus[index % len(corpus)], corpus[(index + 7) % len(corpus)]
        votes.append(PairwiseVote(row["question"], answer_a=row["answer"], answer_b=other["answer"], outcome="a"))
    write_jsonl(preference_records(votes), path)
    return path


# --- (a) step time ---------------------------------------------------------------------------------------------


def step_timer(device: str) -> Any:
    """A TrainerCallback recording when each optimizer step begins and ends, and the loss of each logged step."""
    import torch
    from transformers import TrainerCallback

    def now() -> float:
        # CUDA kernels run asynchronously: wait for them so a step's time is the step's work, on both sides.
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.begins: list[float] = []
            self.ends: list[float] = []
            self.losses: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.begins.append(now())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(now())

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    return StepTimer()


def step_time(args: argparse.Namespace, device: str, model_ref: str, dataset: Path, work: Path) -> dict[str, Any]:
    from training.dpo import DPOJobConfig

    config = DPOJobConfig(
        base_model=model_ref,
        dataset_path=str(dataset),
        output_dir=str(work / "run"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
    )
    callbacks = JobCallbacks(work / "job", args.database_url)
    runs: dict[str, list[dict[str, Any]]] = {"prefloop": [], "plain_trl": []}
    try:
        for repeat in range(args.repeats):
            for way in ("prefloop", "plain_trl"):
                timer = step_timer(device)
                config.output_dir = str(work / f"{way}-{repeat}")
                started = time.perf_counter()
                if way == "prefloop":
                    callbacks.reset()
                    with timer_joined(timer):
                        train_prefloop_job(config, callbacks)
                else:
                    train_plain_trl(config, device, timer)
                runs[way].append({"timer": timer, "run_s": time.perf_counter() - started})
                steps = np.diff(timer.begins[args.warmup :])
                print(
                    f"{way} run {repeat + 1}/{args.repeats}: {runs[way][-1]['run_s']:.1f} s,"
                    f" median cycle {np.median(steps):.4f} s over {steps.size} steps",
                    file=sys.stderr,
                )
    finally:
        callbacks.close()

    ways = {way: summarise(done, warmup=args.warmup) for way, done in runs.items()}
    ratio = ways["prefloop"]["median_cycle_s"] / ways["plain_trl"]["median_cycle_s"]
    first_losses = [done[0]["timer"].losses for done in runs.values()]
    return {
        "model": model_ref,
        "config": {
            key: value
            for key, value in config.to_dict().items()
            if key not in ("base_model", "dataset_path", "output_dir")
        },
        "records": PREFERENCE_RECORDS,
        "repeats": args.repeats,
        "warmup_steps": args.warmup,
        "prefloop_job_callbacks": callbacks.describe(),
        **ways,
        "ratio_cycle": round(ratio, 3),
        # Each run against the plain run right after it: on a machine whose load drifts, the spread of these says
        # how far the pooled ratio can be trusted.
        "ratio_cycle_per_repeat": [
            round(ours / theirs, 3)
            for ours, theirs in zip(
                ways["prefloop"]["median_cycle_s_per_run"], ways["plain_trl"]["median_cycle_s_per_run"], strict=True
            )
        ],
        "ratio_compute": round(ways["prefloop"]["median_compute_s"] / ways["plain_trl"]["median_compute_s"], 3),
        "target_ratio": STEP_TARGET,
        "target_met": ratio <= STEP_TARGET,
        "max_loss_difference_first_runs": max_difference(*first_losses),
    }


def summarise(runs: list[dict[str, Any]], *, warmup: int) -> dict[str, Any]:
    compute, cycle, per_run = [], [], []
    for run in runs:
        begins, ends = run["timer"].begins, run["timer"].ends
        compute += [end - begin for begin, end in zip(begins[warmup:], ends[warmup:], strict=False)]
        cycles = [after - before for before, after in zip(begins[warmup:], begins[warmup + 1 :], strict=False)]
        cycle += cycles
        per_run.append(float(np.median(cycles)))
    return {
        "median_compute_s": round(float(np.median(compute)), 5),
        "median_cycle_s": round(float(np.median(cycle)), 5),
        "median_cycle_s_per_run": [round(value, 5) for value in per_run],
        "timed_steps": len(cycle),
        "run_s": [round(run["run_s"], 2) for run in runs],
    }


def max_difference(first: list[float], second: list[float]) -> float | None:
    if len(first) != len(second) or not first:
        return None
    return max(abs(a - b) for a, b in zip(first, second, strict=True))


@contextmanager
def timer_joined(timer: Any) -> Iterator[None]:
    """train_dpo takes no extra TrainerCallbacks; the timer joins the trainer it builds, which is otherwise its own:
    train_dpo looks build_dpo_trainer up in training.dpo when it runs, so a wrapper put there adds the timer.

    The timer joins before run_trainer adds the job's callbacks, so their per-step work counts in "cycle", not in
    "compute"."""
    from training import dpo

    original = dpo.build_dpo_trainer

    def build_with_timer(*args: Any, **kwargs: Any) -> Any:
        trainer = original(*args, **kwargs)
        trainer.add_callback(timer)
        return trainer

    dpo.build_dpo_trainer = build_with_timer
    try:
        yield
    finally:
        dpo.build_dpo_trainer = original


class JobCallbacks:
    """The per-log and per-step work of a Prefloop training job, minus Django: see the module docstring."""

    def __init__(self, folder: Path, database_url: str | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stream = folder / "progress.jsonl"
        self.cancel_flag = folder / "cancelled"
        self.heartbeat = folder / "heartbeat"
        self.logs: list[dict[str, Any]] = []
        self.connection = None
        if database_url:
            import psycopg

            # Autocommit, as Django runs the task's services: every statement is its own committed transaction.
            self.connection = psycopg.connect(database_url, autocommit=True)
            self.connection.execute(
                "CREATE TEMPORARY TABLE bench_training_job (id int PRIMARY KEY, status text NOT NULL,"
                " cancel_requested boolean NOT NULL, metrics jsonb NOT NULL, progress_step int NOT NULL,"
                " progress_total int NOT NULL, heartbeat_at timestamptz)"
            )

    def reset(self) -> None:
        self.logs = []
        self.stream.write_text("")
        self.heartbeat.write_text("")
        if self.connection is not None:
            self.connection.execute("DELETE FROM bench_training_job")
            self.connection.execute("INSERT INTO bench_training_job VALUES (1, 'running', false, '[]', 0, 0, now())")

    def on_log(self, entry: dict[str, Any]) -> None:
        self.logs.append(entry)
        if self.connection is not None:
            # jobs.training_job_progress: lock and read the row, then one UPDATE rewriting the whole metrics list.
            with self.connection.transaction():
                self.connection.execute(
                    "SELECT metrics, progress_step, progress_total FROM bench_training_job WHERE id = 1 FOR UPDATE"
                ).fetchone()
                self.connection.execute(
                    "UPDATE bench_training_job SET metrics = %s::jsonb, progress_step = %s, progress_total = %s,"
                    " heartbeat_at = now() WHERE id = 1",
                    (json.dumps(self.logs), int(entry.get("step", 0)), int(entry.get("max_steps", 0))),
                )
        else:
            json.dumps(self.logs)  # the cost of serialising the whole list, as that UPDATE does
        with self.stream.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    def should_stop(self) -> bool:
        if self.connection is not None:
            # jobs.training_job_beat: refresh the heartbeat, then ask whether an admin asked to cancel.
            self.connection.execute(
                "UPDATE bench_training_job SET heartbeat_at = now() WHERE id = 1 AND status = 'running'"
            )
            row = self.connection.execute(
                "SELECT EXISTS (SELECT 1 FROM bench_training_job WHERE id = 1 AND cancel_requested)"
            ).fetchone()
            return bool(row and row[0])
        os.utime(self.heartbeat)
        return self.cancel_flag.exists()

    def describe(self) -> str:
        if self.connection is not None:
            where = "PostgreSQL (per log SELECT FOR UPDATE + UPDATE, per step heartbeat UPDATE + EXISTS)"
        else:
            where = "files (per step a heartbeat touch and a cancel-flag check)"
        return f"train_dpo + on_log (list, whole-list JSON, JSON line) and should_stop; job state in {where}"

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def train_prefloop_job(config: Any, callbacks: JobCallbacks) -> None:
    from training.dpo import train_dpo

    result = train_dpo(config, on_log=callbacks.on_log, should_stop=callbacks.should_stop)
    if result.steps != config.max_steps or result.stopped_early:
        raise SystemExit(f"the Prefloop run trained {result.steps} of {config.max_steps} steps")


def train_plain_trl(config: Any, device: str, timer: Any) -> None:
    """A plain TRL QLoRA DPO script on the same settings, with nothing of Prefloop in it."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PrinterCallback, set_seed
    from trl import DPOConfig, DPOTrainer

    set_seed(config.seed)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    qlora = config.qlora
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=qlora.quant_type,
        bnb_4bit_use_double_quant=qlora.double_quant,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        config.base_model, dtype=dtype, device_map=device, quantization_config=quantization
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(
            output_dir=config.output_dir,
            beta=config.beta,
            learning_rate=config.learning_rate,
            max_steps=config.max_steps,
            per_device_train_batch_size=config.per_device_train_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_length=config.max_length,
            seed=config.seed,
            data_seed=config.seed,
            logging_steps=config.logging_steps,
            optim=config.optim,
            use_cpu=device == "cpu",
            bf16=device == "cuda",
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        ),
        train_dataset=load_dataset("json", data_files=config.dataset_path, split="train"),
        processing_class=AutoTokenizer.from_pretrained(config.base_model),
        peft_config=LoraConfig(
            r=qlora.lora_r,
            lora_alpha=qlora.lora_alpha,
            lora_dropout=qlora.lora_dropout,
            target_modules=qlora.target_modules,
            task_type="CAUSAL_LM",
        ),
        callbacks=[timer],
    )
    # It would print every log dict to stdout, which holds the report; Prefloop's trainer drops it too.
    trainer.remove_callback(PrinterCallback)
    trainer.train()


# --- (b) peak memory -------------------------------------------------------------------------------------------


def memory_model_dir(name: str, tiny: Path, work: Path) -> Path:
    """The folder a memory run loads: the Qwen2.5-0.5B shape built here, or a base model spec resolved."""
    if name == QWEN_SHAPE:
        started = time.perf_counter()
        folder = save_random_qwen_shape(work / QWEN_SHAPE, tokenizer_from=tiny)
        print(f"{QWEN_SHAPE} built and saved in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return folder
    from training.models import ModelSpecError, resolve_model

    try:
        return Path(resolve_model(name, progress=lambda line: print(line, file=sys.stderr)))
    except ModelSpecError as error:
        raise SystemExit(f"--memory-model {name}: {error}") from error


def memory(args: argparse.Namespace, device: str, model_dir: Path, dataset: Path, name: str) -> dict[str, Any]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    measured = {}
    for variant in ("qlora", "lora"):
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            f"--memory-child={variant}",
            f"--device={device}",
            f"--model-dir={model_dir}",
            f"--dataset={dataset}",
            f"--memory-steps={args.memory_steps}",
            f"--memory-max-length={args.memory_max_length}",
        ]
        # Training logs pass through to stderr; the child's one line of stdout is its measurement.
        completed = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"the {variant} memory run failed with status {completed.returncode}")
        measured[variant] = json.loads(completed.stdout.strip().splitlines()[-1])
        print(f"{variant} memory: {measured[variant]}", file=sys.stderr)

    def ratio(key: str) -> float | None:
        qlora, lora = measured["qlora"].get(key), measured["lora"].get(key)
        return round(qlora / lora, 3) if qlora is not None and lora else None

    peak_ratio = ratio("peak_bytes")
    return {
        "model": "Qwen2.5-0.5B's shape (random weights, saved in bfloat16)" if name == QWEN_SHAPE else name,
        "folder": str(model_dir),
        "what_runs": f"{args.memory_steps} DPO step(s), batch 1, max_length {args.memory_max_length}, "
        "through training.dpo.build_dpo_trainer, each variant in a fresh process",
        "measure": "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS minus RSS before loading",
        "qlora": measured["qlora"],
        "lora": measured["lora"],
        "ratio_peak": peak_ratio,
        "ratio_train_peak": ratio("train_peak_bytes"),
        "ratio_weights": ratio("weights_bytes"),
        "target_ratio": MEMORY_TARGET,
        "target_met": peak_ratio is not None and peak_ratio <= MEMORY_TARGET,
    }


def save_random_qwen_shape(out_dir: Path, *, tokenizer_from: Path) -> Path:
    """A randomly initialised Qwen2ForCausalLM of Qwen2.5-0.5B's shape, in bfloat16 like the real checkpoint, with
    the tiny model's tokenizer (its ids are all inside the vocabulary) so that DPO can tokenise the records."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, set_seed

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = Qwen2Config(
        **QWEN25_05B_SHAPE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    set_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bfloat16 directly: no float32 copy of 0.5B weights
    try:
        model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def memory_child(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """One variant's load and training, measured from inside this fresh process."""

    from training.dpo import DPOJobConfig, build_dpo_trainer
    from training.preferences import read_preference_jsonl
    from training.trainer_common import QLoRASettings

    probe = MemoryProbe(device)
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-memory-") as output_dir:
        config = DPOJobConfig(
            base_model=args.model_dir,
            dataset_path=args.dataset,
            output_dir=output_dir,
            max_steps=args.memory_steps,
            per_device_train_batch_size=1,
            max_length=args.memory_max_length,
            qlora=QLoRASettings(load_in_4bit=args.memory_child == "qlora"),
        )
        started = time.perf_counter()
        trainer = build_dpo_trainer(config, read_preference_jsonl(Path(args.dataset)))
        load_peak = probe.peak()
        weights = weight_bytes(trainer.model)
        loaded_s = time.perf_counter() - started
        phase_split = probe.reset_peak()
        started = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - started
        train_peak = probe.peak()
    trainable = sum(param.numel() for param in trainer.model.parameters() if param.requires_grad)
    dataset = trainer.train_dataset
    pairs = zip(dataset["prompt_ids"], dataset["chosen_ids"], strict=True)
    lengths = [len(prompt) + len(chosen) for prompt, chosen in pairs]
    return {
        # Before the max_length cut, which the collator applies.
        "prompt_plus_chosen_tokens": {"median": int(np.median(lengths)), "max": max(lengths)},
        "peak_bytes": max(load_peak, train_peak),
        "load_peak_bytes": load_peak if phase_split else None,
        "train_peak_bytes": train_peak if phase_split else None,
        "weights_bytes": weights,
        "trainable_params": trainable,
        "load_s": round(loaded_s, 1),
        "train_s": round(train_s, 1),
        "dtypes": sorted({str(param.dtype).removeprefix("torch.") for param in trainer.model.parameters()}),
        "optim": config.optim,
        "compute_dtype": "bfloat16" if device == "cuda" else "float32",
    }


class MemoryProbe:
    """Peak memory since construction (or since reset_peak), above what the process held at construction."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = _status_bytes("VmRSS")

    def peak(self) -> int:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() - self.baseline
        return rss_high_water() - self.baseline

    def reset_peak(self) -> bool:
        """Restart the peak from the current level; False when the platform cannot (then peaks cover both phases)."""
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            return True
        try:
            # Linux: writing 5 to clear_refs resets this process's RSS high-water mark (VmHWM).
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True


def rss_high_water() -> int:
    # VmHWM honours a reset through clear_refs; ru_maxrss (KiB on Linux) is the fallback elsewhere.
    try:
        return _status_bytes("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) * 1024
    raise KeyError(field)


def weight_bytes(model: Any) -> int:
    """Bytes of parameters and buffers, counting each tensor once, plus the 4-bit weights' quantisation state."""
    seen: set[int] = set()
    total = 0

    def add(tensor: Any) -> None:
        nonlocal total
        if tensor is not None and id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()

    for tensor in [*model.parameters(), *model.buffers()]:
        add(tensor)
        state = getattr(tensor, "quant_state", None)
        while state is not None:  # double quantisation nests a second state for the absmax values
            add(state.absmax)
            add(state.code)
            state = getattr(state, "state2", None)
    return total


if __name__ == "__main__":
    main()
