"""The closed loop with a scripted annotator: generate → rate → DPO → regenerate → rate, in one command.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/loop.py [--quick] [--seed 0]
        [--rule repetition|key-term|complete] [--model tiny|SPEC]
    DATABASE_URL=sqlite:///var/loop.sqlite3 .venv/bin/python bench/loop.py --quick
    .venv/bin/python bench/loop.py --model smollm2-135m-instruct

DATABASE_URL names the server (any database on it): the script creates a throwaway database `prefloop_bench_loop`
(PREFLOOP_BENCH_LOOP_DB names another, for runs side by side), migrates it and drops it at the end. With a
sqlite:/// URL the throwaway database is the file `prefloop_bench_loop.sqlite3` in the folder of the given path,
removed at the end. Queued tasks go to a scratch filesystem broker that no worker reads (CELERY_BROKER_URL is
overridden): every task runs here, in-process, through the same task functions a worker runs, and adapters land in
a scratch artifacts folder.

The run, each phase timed:

1. The model: the built-in tiny model by default (built once into $PREFLOOP_TINY_MODEL_DIR, default
   var/models/tiny, reused after), or --model SPEC, any base a variant takes (a shipped short name such as
   smollm2-135m-instruct, a .gguf file, a folder, a Hub id in the local cache), GGUF converted once into
   PREFLOOP_MODEL_CACHE (default var/models).
2. A campaign (overlap k = --annotators) of prompts. On the tiny model: TEMPLATES × TERMS, short questions about
   a term the tiny corpus uses, each term asked about in every template, so the key term of every prompt is its
   term. On a real model: QUESTIONS × TOPICS, everyday questions about general-knowledge topics.
   --held-out of them, drawn with the seed, are kept out of training and make the new round.
3. Two starting variants: the base at --parent-temperature (the parent of the retrain) and the base at
   --other-temperature. Their answers to the training prompts are generated (generate_candidates) and paired.
4. k scripted annotators rate every pair through the assignment engine by --rule (evaluator/services/simulation.py). The
   default, repetition: the answer with fewer repeated words wins; when both have as many, the one that ends as
   a finished sentence; else a tie. key-term: the answer that mentions the prompt's key term wins, then the
   finished sentence. Each choice is random with probability --noise. Their judgements are flagged simulated, so
   the job is queued with selection include_simulated and min_agreement 0.6 (one record per comparison, by
   majority).
5. A DPO job on the parent (QLoRA on the 4-bit base; the --beta, --learning-rate, --max-steps, --batch-size and
   --lora-r options) runs (run_training_job), then
   the generation job it queued for [parent, new variant] on the held-out prompts, then the annotators rate it.

It prints one JSON report: sizes, seconds per phase, the settings and seeds, the new variant's overall
wins/ties/losses against its parent over all judgements with the win rate (ties ½) and the exact two-sided
binomial p-value (`round_results`), the same per held-out prompt (the majority of its k judgements; with a
deterministic rule the k judgements of a pair mostly agree, so this is the honest count), which step of the rule
decided the held-out pairs, and each variant's repeated words per answer, share of answers without one, and
how often its answers mention the key term and end as a finished sentence. The target is p < 0.01 per prompt
(`target_met`). --quick is a smaller run (fewer prompts and steps) that checks the machinery, not the target.

Each model kind has its own defaults (TINY_DEFAULTS, REAL_DEFAULTS); every option overrides them.

Why the repetition rule is the default on the tiny model: a round of DPO on a few dozen pairs teaches the tiny
model to repeat itself less on prompts it never saw (a change in how it writes, whatever the prompt), while
mentioning each new prompt's key term is a skill it cannot pick up from them: under --rule key-term the child
mentions key terms no more often than its parent, and what it wins it wins on finished sentences. With these
defaults the repetition rule gave p 1e-7 to 2e-5 per prompt at seed 0 (CPU training is not bit-for-bit repeatable),
7e-5 at seed 1 (on SQLite) and 2e-5 at seed 2, in 65 to 95 s a run.

On a real instruct model (--model smollm2-135m-instruct) the default rule is **complete**, a formatting-quality
rule: an answer that ends as a finished sentence within the reply budget beats one cut off mid-sentence, and
anything else is a tie (evaluator/services/simulation.py). The prompts are QUESTIONS × TOPICS, questions a short
answer suits: SmolLM2-135M-Instruct's answers to them are sensible and, with a 64-token budget, about half end
in time at temperature 1.0, so the rule decides a good share of the pairs, and one DPO round can teach the child
to say what it has to say within the budget on prompts it never saw. What was measured, and what did not work,
is in README.md ("The loop on a real model").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
# Python puts this script's folder first on the path, where bench/statistics.py would shadow the standard library's
# statistics module (Django's SQLite backend imports it): the repository root replaces it.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

BENCH_DB = os.environ.get("PREFLOOP_BENCH_LOOP_DB", "prefloop_bench_loop")
TARGET_P = 0.01
# evaluator.services.simulation.RULES, the first its default (that module needs Django set up, after the
# arguments are read).
RULES = ("repetition", "key-term", "complete")
# Terms the tiny model's corpus uses in its answers, so that its answers can mention them.
TERMS = (
    "objects",
    "collection",
    "records",
    "adapter",
    "museum",
    "preference",
    "material",
    "memory",
    "heritage",
    "weights",
    "answers",
    "community",
    "context",
    "document",
    "parameter",
    "storage",
)
# Every other word is a stop word or shorter than any term, so each prompt's key term is its term.
TEMPLATES = (
    "What is {term}?",
    "Tell me about {term}.",
    "How is {term} kept?",
    "Who cares for {term}?",
    "What can go wrong with {term}?",
    "Give a short note on {term}.",
    "Why is {term} key?",
    "What do we know about {term}?",
    "Say a bit about {term}.",
    "What role does {term} play?",
    "How do teams plan for {term}?",
    "Is {term} hard?",
)
# General-knowledge topics and questions for a real instruct model: every question suits every topic.
TOPICS = (
    "photosynthesis",
    "gravity",
    "the water cycle",
    "volcanoes",
    "the internet",
    "vaccines",
    "the moon",
    "rainbows",
    "earthquakes",
    "electricity",
    "the human heart",
    "honey bees",
    "recycling",
    "the printing press",
    "museums",
    "libraries",
    "climate",
    "sleep",
    "bread",
    "maps",
)
# Questions a short answer suits, so that a good share of answers can end within the reply budget and the rule
# has something to tell apart ("In one sentence, ..." was left out: every answer to it ended, a tie every time).
QUESTIONS = (
    "Give one fact about {topic}.",
    "What is {topic}? Answer briefly.",
    "Name one thing {topic} is known for.",
    "Why does {topic} matter?",
    "What is {topic}?",
    "Describe {topic} briefly.",
    "What should a beginner know about {topic}?",
    "What is a common misconception about {topic}?",
    "How does {topic} affect everyday life?",
    "Explain {topic} in simple terms.",
)
TINY = "tiny"
# Per model kind: the run's defaults, each overridden by its option. Real models learn at a lower rate from
# fewer, longer records than the tiny model.
TINY_DEFAULTS = {
    "rule": "repetition",
    "held_out": 80,
    "max_steps": 72,
    "max_new_tokens": 32,
    "learning_rate": 1e-3,
    "batch_size": 16,
    "max_length": 96,
}
REAL_DEFAULTS = {
    "rule": "complete",
    "held_out": 80,
    "max_steps": 32,
    "max_new_tokens": 64,
    "learning_rate": 2e-4,
    "batch_size": 8,
    "max_length": 160,
}
# --quick: fewer prompts and steps, to check the machinery, not the target.
QUICK = {"subjects": 6, "held_out": 30, "max_steps": 8}


def main(args: argparse.Namespace) -> dict[str, Any]:
    real = args.model != TINY
    defaults = {**(REAL_DEFAULTS if real else TINY_DEFAULTS), **(QUICK if args.quick else {})}
    settings = {
        name: value if (value := getattr(args, name, None)) is not None else defaults[name] for name in defaults
    }
    args.rule = settings["rule"]
    prompts = real_prompt_rows(QUICK["subjects"] if args.quick else None) if real else prompt_rows(args.quick)
    held_out_count = settings["held_out"]
    if not 0 < held_out_count < len(prompts):
        raise SystemExit(f"--held-out must be between 1 and {len(prompts) - 1}, got {held_out_count}")
    dpo_settings = {
        "beta": args.beta,
        "learning_rate": settings["learning_rate"],
        "max_steps": settings["max_steps"],
        "per_device_train_batch_size": settings["batch_size"],
        "max_length": settings["max_length"],
        "seed": args.seed,
        "logging_steps": 1,
        # The paged 8-bit optimizers are for GPU memory spikes; on the CPU plain AdamW is the fast one.
        "optim": "adamw_torch" if not _cuda() else "paged_adamw_8bit",
        "qlora": {"lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r, "lora_dropout": 0.0},
    }
    generation = {"max_new_tokens": settings["max_new_tokens"], "top_p": 1.0}
    server = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    tiny_dir = Path(os.environ.get("PREFLOOP_TINY_MODEL_DIR", REPO / "var" / "models" / "tiny"))
    # Converted models outlive the run's scratch folder: the next run loads them in seconds.
    model_cache = Path(os.environ.get("PREFLOOP_MODEL_CACHE", REPO / "var" / "models"))
    scratch = Path(tempfile.mkdtemp(prefix="prefloop-bench-loop-"))
    database = Database(server, scratch)
    os.environ.update(
        DATABASE_URL=database.url,
        PREFLOOP_VAR_DIR=str(scratch),
        PREFLOOP_MODEL_CACHE=str(model_cache),
        # Tasks queued on commit go to a folder no worker reads; this script runs them itself.
        CELERY_BROKER_URL="filesystem://localhost//",
        PREFLOOP_GENERATION_BATCH_SIZE="32",
        DJANGO_SETTINGS_MODULE="prefloop.settings",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    phases: dict[str, float] = {}
    try:
        database.create()
        with timed(phases, "migrate"):
            subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=os.environ, check=True)
        import django

        django.setup()
        with timed(phases, "model"):
            base = model_folder(args.model, tiny_dir=tiny_dir, cache=model_cache)
        report = run_loop(
            args,
            phases,
            base=base,
            prompts=prompts,
            held_out_count=held_out_count,
            dpo_settings=dpo_settings,
            generation=generation,
        )
    finally:
        from django.db import connections

        connections.close_all()
        database.drop()
        shutil.rmtree(scratch, ignore_errors=True)
    report["seconds"] = {**phases, "total": round(sum(phases.values()), 1)}
    return report


def prompt_rows(quick: bool) -> list[dict[str, str]]:
    """The tiny model's prompts: every template about every term (the first QUICK["subjects"] terms if quick)."""
    terms = TERMS[: QUICK["subjects"]] if quick else TERMS
    return [
        {"id": f"{term}-{index:02d}", "prompt": template.format(term=term)}
        for term in terms
        for index, template in enumerate(TEMPLATES)
    ]


def real_prompt_rows(topic_count: int | None) -> list[dict[str, str]]:
    """A real model's prompts: every question about every topic (the first `topic_count` topics if given)."""
    return [
        {"id": f"{topic.replace(' ', '-')}-{index:02d}", "prompt": question.format(topic=topic)}
        for topic in TOPICS[:topic_count]
        for index, question in enumerate(QUESTIONS)
    ]


def model_folder(spec: str, *, tiny_dir: Path, cache: Path) -> Path:
    """The folder the variants load: the tiny model, built once, or SPEC resolved (a GGUF converted once)."""
    if spec == TINY:
        from training.tiny import ensure_tiny_model

        return ensure_tiny_model(tiny_dir)
    from training.models import ModelSpecError, resolve_model

    try:
        return Path(resolve_model(spec, cache_dir=cache, progress=lambda line: print(line, file=sys.stderr)))
    except ModelSpecError as error:
        raise SystemExit(f"--model {spec}: {error}") from error


def run_loop(
    args: argparse.Namespace,
    phases: dict[str, float],
    *,
    base: Path,
    prompts: list[dict[str, str]],
    held_out_count: int,
    dpo_settings: dict[str, Any],
    generation: dict[str, Any],
) -> dict[str, Any]:
    from evaluator.models import CampaignState, GenerationJob, JobStatus, Prompt, TrainingJob
    from evaluator.services.accounts import account_create
    from evaluator.services.campaigns import campaign_create, campaign_member_add, campaign_state_change
    from evaluator.services.generation import generation_job_queue
    from evaluator.services.imports import prompts_import
    from evaluator.services.simulation import simulated_round_rate
    from evaluator.services.training_jobs import training_job_queue
    from evaluator.services.variants import variant_create
    from workers.tasks import generate_candidates, run_training_job

    with timed(phases, "seed"):
        campaign = campaign_create(name="Closed loop", overlap=args.annotators)
        data = "\n".join(json.dumps(row) for row in prompts).encode()
        prompts_import(campaign=campaign, file_name="prompts.jsonl", data=data)
        parent = variant_create(
            name="base",
            base_model=str(base),
            generation_settings={**generation, "temperature": args.parent_temperature},
        )
        other = variant_create(
            name="base, other settings",
            base_model=str(base),
            generation_settings={**generation, "temperature": args.other_temperature},
        )
        annotators = [
            account_create(username=f"oracle-{index}", roles=["annotator"])[0] for index in range(args.annotators)
        ]
        for annotator in annotators:
            campaign_member_add(campaign=campaign, user=annotator)
        campaign_state_change(campaign=campaign, state=CampaignState.ACTIVE)
        # A seeded draw of exactly held_out_count prompt ids (held_out_prompts_draw takes a share).
        held_out = sorted(random.Random(args.seed).sample([row["id"] for row in prompts], held_out_count))
        training_prompts = list(Prompt.objects.filter(campaign=campaign).exclude(external_id__in=held_out))

    def generate_and_rate(job: GenerationJob, round_name: str) -> int:
        """Run the round's generation job here, then have the scripted annotators rate what it paired."""
        with timed(phases, f"generate_{round_name}"):
            generate_candidates.run(job.pk)
            _check_succeeded(GenerationJob.objects.get(pk=job.pk), f"{round_name.replace('_', ' ')} generation")
        with timed(phases, f"rate_{round_name}"):
            return simulated_round_rate(
                campaign=campaign, annotators=annotators, rule=args.rule, noise=args.noise, seed=args.seed
            )

    first = generation_job_queue(campaign=campaign, variants=[parent, other], prompts=training_prompts)
    rated_first = generate_and_rate(first, "round_1")

    with timed(phases, "train_dpo"):
        job = training_job_queue(
            campaign=campaign,
            parent_variant=parent,
            method=TrainingJob.Method.DPO,
            training=dpo_settings,
            selection={"include_simulated": True, "min_agreement": 0.6},
            held_out_prompts=held_out,
        )
        run_training_job.run(job.pk)
        job.refresh_from_db()
        _check_succeeded(job, "the DPO job")
    child = job.result_variant

    rated_second = generate_and_rate(GenerationJob.objects.get(training_job=job), "round_2")

    with timed(phases, "report"):
        result = round_report(child=child, parent=parent, other=other, held_out=held_out, rule=args.rule)
    train_logs = [log for log in job.metrics if "loss" in log]
    return {
        "command": " ".join(["bench/loop.py", *sys.argv[1:]]),
        "model": args.model,
        "database": "sqlite" if os.environ["DATABASE_URL"].startswith("sqlite") else "postgresql",
        "sizes": {
            "prompts": len(prompts),
            "training_prompts": len(training_prompts),
            "held_out_prompts": len(held_out),
            "annotators": args.annotators,
            "judgements_round_1": rated_first,
            "judgements_round_2": rated_second,
            "dpo_records": job.dataset_size,
            "dpo_steps": job.progress_step,
        },
        "settings": {
            "seed": args.seed,
            "rule": args.rule,
            "noise": args.noise,
            "parent_generation": parent.generation_settings,
            "other_generation": other.generation_settings,
            "dpo": dpo_settings,
            "selection": job.config["selection"],
        },
        "training": {
            "first_loss": train_logs[0]["loss"] if train_logs else None,
            "last_loss": train_logs[-1]["loss"] if train_logs else None,
            "last_reward_margin": train_logs[-1].get("rewards/margins") if train_logs else None,
            "status": JobStatus(job.status).label,
        },
        **result,
    }


def round_report(*, child: Any, parent: Any, other: Any, held_out: list[str], rule: str) -> dict[str, Any]:
    """The child against its parent: by held-out prompt (the headline), by judgement, and what the rules see."""
    from scipy.stats import binomtest

    from evaluator.models import OVERALL, Candidate, CriterionChoice
    from evaluator.selectors.training import round_results
    from evaluator.services.simulation import finished, key_term, mentions, oracle_reason, repeats

    judged = round_results(include_simulated=True)[child.pk]
    child_is_a = child.pk < parent.pk
    low, high = sorted((child.pk, parent.pk))
    per_comparison: dict[int, list[int]] = {}
    choices = CriterionChoice.objects.filter(
        criterion=OVERALL, judgement__comparison__variant_a_id=low, judgement__comparison__variant_b_id=high
    ).values_list("judgement__comparison_id", "outcome")
    for comparison_id, outcome in choices:
        score = 0 if outcome == "tie" else (1 if (outcome == "a") == child_is_a else -1)
        per_comparison.setdefault(comparison_id, []).append(score)
    majority = [1 if sum(scores) > 0 else -1 if sum(scores) < 0 else 0 for scores in per_comparison.values()]
    wins, losses = majority.count(1), majority.count(-1)

    def rates(variant: Any, *, held: bool) -> dict[str, float | int | None]:
        candidates = Candidate.objects.filter(variant=variant).select_related("prompt")
        if held:
            candidates = candidates.filter(prompt__external_id__in=held_out)
        else:
            candidates = candidates.exclude(prompt__external_id__in=held_out)
        texts = [(candidate.prompt.text, candidate.text) for candidate in candidates]
        mentioned = [mentions(text, key_term(prompt) or "") for prompt, text in texts]
        ended = [finished(text) for _, text in texts]
        repeated = [repeats(text) for _, text in texts]
        return {
            "answers": len(texts),
            "repeated_words_per_answer": round(sum(repeated) / len(repeated), 3) if repeated else None,
            "no_repeated_word": _share([count == 0 for count in repeated]),
            "key_term": _share(mentioned),
            "finished_sentence": _share(ended),
        }

    by_prompt = {
        candidate.prompt_id: candidate
        for candidate in Candidate.objects.filter(variant=parent, prompt__external_id__in=held_out)
    }
    deciding = Counter(
        oracle_reason(candidate.prompt.text, candidate.text, by_prompt[candidate.prompt_id].text, rule=rule)
        for candidate in Candidate.objects.filter(variant=child).select_related("prompt")
        if candidate.prompt_id in by_prompt
    )
    # The headline: one vote per held-out prompt, the exact two-sided sign test on the decisive ones.
    by_prompt_p = float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else None
    return {
        "child_vs_parent_by_prompt": {
            "wins": wins,
            "ties": majority.count(0),
            "losses": losses,
            "win_rate": _rounded((wins + majority.count(0) / 2) / len(majority)) if majority else None,
            "p_value": by_prompt_p,
        },
        "target_met": by_prompt_p is not None and by_prompt_p < TARGET_P,
        # k judgements of one pair by a fixed rule are not independent: this count overstates the evidence.
        "child_vs_parent_by_judgement": {
            "wins": judged.wins,
            "ties": judged.ties,
            "losses": judged.losses,
            "win_rate": _rounded(judged.win_rate),
            "p_value": judged.p_value,
        },
        # Which step of the rule (without noise) decides each held-out pair.
        "held_out_pairs_decided_by": dict(deciding),
        "rates": {
            "round_1_parent": rates(parent, held=False),
            "round_1_other": rates(other, held=False),
            "held_out_parent": rates(parent, held=True),
            "held_out_child": rates(child, held=True),
        },
    }


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _check_succeeded(job: Any, what: str) -> None:
    from evaluator.models import JobStatus

    if job.status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"{what} ended {job.status}: {job.error or 'no error recorded'}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        phases[name] = round(time.monotonic() - started, 1)
        print(f"{name}: {phases[name]} s", file=sys.stderr, flush=True)


class Database:
    """The throwaway database on the server DATABASE_URL names (PostgreSQL) or beside the file it names (SQLite)."""

    def __init__(self, server: str, scratch: Path) -> None:
        self.server = server
        parts = urlsplit(server)
        if parts.scheme == "sqlite":
            # sqlite:///relative/path or sqlite:////absolute/path, as dj-database-url reads them.
            given = Path(parts.path[1:] if parts.path.startswith("/") else parts.path)
            self.file: Path | None = (given.parent if str(given) else Path(".")).resolve() / f"{BENCH_DB}.sqlite3"
            self.url = f"sqlite:///{self.file}"
        elif parts.scheme in ("postgres", "postgresql"):
            self.file = None
            self.url = urlunsplit(parts._replace(path=f"/{BENCH_DB}"))
        else:
            raise SystemExit(f"DATABASE_URL must be postgres://… or sqlite:///…, got scheme {parts.scheme!r}")

    def create(self) -> None:
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.file.unlink(missing_ok=True)
            return
        self._admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        self._admin(f"CREATE DATABASE {BENCH_DB}")

    def drop(self) -> None:
        if self.file is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.file}{suffix}").unlink(missing_ok=True)
            return
        self._admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as connection:
            connection.execute(sql)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run: checks the machinery, not the target")
    parser.add_argument("--seed", type=int, default=0, help="held-out draw, DPO and annotator noise")
    parser.add_argument(
        "--model", default=TINY, help="tiny (the default), or a base model spec such as smollm2-135m-instruct"
    )
    parser.add_argument(
        "--rule", choices=RULES, help="the scripted annotators' rule (tiny: repetition; real: complete)"
    )
    parser.add_argument("--annotators", type=int, default=3, help="scripted annotators = the campaign's k")
    parser.add_argument("--noise", type=float, default=0.1, help="share of random choices per annotator")
    parser.add_argument("--held-out", type=int, help="held-out prompts (default 80; --quick 30)")
    parser.add_argument("--max-length", type=int, help="DPO max_length in tokens (tiny 96; real 160)")
    parser.add_argument("--parent-temperature", type=float, default=1.0)
    parser.add_argument("--other-temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, help="the reply budget (tiny 32; real 64)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, help="DPO learning rate (tiny 1e-3; real 2e-4)")
    parser.add_argument("--max-steps", type=int, help="DPO steps (tiny 72; real 32; --quick 8)")
    parser.add_argument("--batch-size", type=int, help="DPO batch (tiny 16; real 8)")
    parser.add_argument("--lora-r", type=int, default=16)
    args = parser.parse_args(argv)
    if args.annotators < 1:
        parser.error("--annotators must be at least 1")
    if not 0 <= args.noise <= 1:
        parser.error("--noise must be from 0 to 1")
    return args


if __name__ == "__main__":
    print(json.dumps(main(parse_args()), indent=2))
