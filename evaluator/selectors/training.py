"""Reads for retraining: a job's live state, the variants' family tree and each round's result against its parent."""

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q
from django.utils import timezone
from scipy.stats import binomtest

from evaluator.models import OVERALL, Campaign, CriterionChoice, JobStatus, ModelVariant, Outcome, TrainingJob
from evaluator.stats.statistics import POWER, additional_n_for_power, cohens_h, sign_test_power
from training.generation.settings import GenerationSettings

# The TRL log keys the job page charts, with their labels: the loss on its own chart, each other one in a small
# chart of its own.
LOSS_LABEL = "loss"
DPO_SERIES = {
    "loss": LOSS_LABEL,
    "rewards/chosen": "reward chosen",
    "rewards/rejected": "reward rejected",
    "rewards/margins": "reward margin",
    "rewards/accuracies": "reward accuracy",
}
LOG_TAIL_LINES = 60
# How much of a job's log its row keeps (models.TrainingJob.log_tail), in characters.
LOG_TAIL_CHARS = 16_000


def training_job_workdir(*, job: TrainingJob) -> Path:
    return Path(settings.ARTIFACTS_DIR) / "training-jobs" / job.workdir_name


def training_job_live(*, job: TrainingJob, now: datetime | None = None) -> dict[str, Any]:
    """What the job page shows and refreshes: progress, ETA, metric series, newest log lines."""
    now = now or timezone.now()
    logs = [log for log in job.metrics if "step" in log]
    series = {
        label: [(float(log["step"]), float(log[key])) for log in logs if isinstance(log.get(key), int | float)]
        for key, label in DPO_SERIES.items()
    }
    return {
        "percent": round(100 * job.progress_step / job.progress_total) if job.progress_total else None,
        "eta_seconds": _eta_seconds(job, now),
        "series": {label: points for label, points in series.items() if points},
        "recent": [log for log in logs if "loss" in log][-12:],
        "log_tail": _log_tail(job),
        "running": job.status in (JobStatus.QUEUED, JobStatus.RUNNING),
    }


# The smallest effect a retrained variant's round against its parent should be able to show: the new variant
# preferred in 60% of the decisive judgements. A smaller round is warned about before it is queued.
ROUND_TARGET_WIN_RATE = 0.6


def held_out_prompt_count(*, total: int, share: float) -> int:
    """How many of `total` prompts a held-out `share` keeps out of training (at least one, never all)."""
    if share <= 0 or total == 0:
        return 0
    return max(0, min(total - 1, max(1, round(share * total))))


@dataclass(frozen=True)
class RoundPower:
    """What the round of a retrained variant against its parent can show: its comparisons (prompts × samples),
    the judgements they get (× the campaign's overlap k), the power of the sign test to detect `win_rate` with
    them, and how many judgements (and held-out prompts) 80% power would take. Ties lower the power further."""

    prompts: int
    samples: int
    overlap: int
    win_rate: float
    power: float
    needed_judgements: int

    @property
    def comparisons(self) -> int:
        return self.prompts * self.samples

    @property
    def judgements(self) -> int:
        return self.comparisons * self.overlap

    @property
    def needed_prompts(self) -> int:
        return -(-self.needed_judgements // (self.samples * self.overlap))

    @property
    def too_small(self) -> bool:
        return self.power < POWER


def round_power(
    *, campaign: Campaign, held_out: int, parent: ModelVariant | None = None, win_rate: float = ROUND_TARGET_WIN_RATE
) -> RoundPower:
    """The power of the round a retrain starts: its comparisons are the `held_out` prompts (every prompt of the
    campaign when none is held out) × the parent's samples per prompt, each judged by k annotators."""
    prompts = held_out or campaign.prompts.count()
    samples = GenerationSettings.from_dict(parent.generation_settings).samples_per_prompt if parent else 1
    judgements = prompts * samples * campaign.overlap
    return RoundPower(
        prompts=prompts,
        samples=samples,
        overlap=campaign.overlap,
        win_rate=win_rate,
        power=sign_test_power(judgements, win_rate),
        needed_judgements=int(additional_n_for_power(cohens_h(win_rate), 0)),
    )


def _eta_seconds(job: TrainingJob, now: datetime) -> int | None:
    """Seconds left at the pace of the current attempt; None before it has logged two steps or when not running.

    A resumed attempt counts from its own start and its checkpoint's step: the first attempt's time, the wait for
    a new worker and the steps restored from the checkpoint say nothing about how fast this worker trains.
    """
    started_at = job.attempt_started_at or job.started_at
    if job.status != JobStatus.RUNNING or not job.progress_total or not started_at:
        return None
    first = job.attempt_start_step
    steps = [log for log in job.metrics if "step" in log and "epoch" in log and int(log["step"]) > first]
    done = job.progress_step - first
    if len(steps) < 2 or done <= 0:
        return None
    pace = (now - started_at).total_seconds() / done
    return max(0, round(pace * (job.progress_total - job.progress_step)))


def _log_tail(job: TrainingJob) -> str:
    """The newest lines of the job's log: from its row (written by whichever machine runs it), else, for a job
    logged before rows kept them, from its log file on this machine."""
    if not job.log_tail:
        return _tail(training_job_workdir(job=job) / "job.log", LOG_TAIL_LINES)
    lines = job.log_tail.splitlines()
    if len(job.log_tail) >= LOG_TAIL_CHARS:
        lines = lines[1:]  # the oldest line kept may be cut short
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 64_000))
        return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class RoundResult:
    """A trained variant against its parent on the overall criterion: wins, ties, losses of the new variant,
    win rate with ties as half, and the exact two-sided sign test on the decisive votes."""

    wins: int
    ties: int
    losses: int

    @property
    def judgements(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float | None:
        return (self.wins + self.ties / 2) / self.judgements if self.judgements else None

    @property
    def p_value(self) -> float | None:
        decisive = self.wins + self.losses
        return float(binomtest(self.wins, decisive, 0.5).pvalue) if decisive else None


def round_results(*, include_simulated: bool = False) -> dict[int, RoundResult]:
    """Every trained variant's overall record against its parent, over all campaigns, in one query."""
    parents = dict(ModelVariant.objects.filter(parent__isnull=False).values_list("pk", "parent_id"))
    choices = CriterionChoice.objects.filter(criterion=OVERALL, judgement__comparison__gold_outcome__isnull=True)
    if not include_simulated:
        choices = choices.filter(judgement__simulated=False)
    pairs = choices.values(
        pair_a=F("judgement__comparison__variant_a_id"), pair_b=F("judgement__comparison__variant_b_id")
    )
    rows = pairs.annotate(
        a=Count("pk", filter=Q(outcome=Outcome.A)),
        b=Count("pk", filter=Q(outcome=Outcome.B)),
        tie=Count("pk", filter=Q(outcome=Outcome.TIE)),
    )
    by_pair = {(row["pair_a"], row["pair_b"]): row for row in rows}
    results = {}
    for child, parent in parents.items():
        low, high = sorted((child, parent))
        row = by_pair.get((low, high), {"a": 0, "b": 0, "tie": 0})
        wins, losses = (row["a"], row["b"]) if child == low else (row["b"], row["a"])
        results[child] = RoundResult(wins=wins, ties=row["tie"], losses=losses)
    return results


@dataclass(frozen=True)
class TreeRow:
    variant: ModelVariant
    depth: int
    result: RoundResult | None


def variant_family_tree() -> list[TreeRow]:
    """Every variant, each base followed by its descendants depth-first, with each round's result."""
    variants = list(
        ModelVariant.objects.select_related("training_job", "collection").prefetch_related("exports").order_by("pk")
    )
    children: dict[int | None, list[ModelVariant]] = {}
    for variant in variants:
        children.setdefault(variant.parent_id, []).append(variant)
    results = round_results()
    rows: list[TreeRow] = []
    stack = deque((root, 0) for root in reversed(children.get(None, [])))
    while stack:
        variant, depth = stack.pop()
        rows.append(TreeRow(variant=variant, depth=depth, result=results.get(variant.pk)))
        stack.extend((child, depth + 1) for child in reversed(children.get(variant.pk, [])))
    return rows
