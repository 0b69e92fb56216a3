"""Reads for the demo's progress page: each preparation step's state, derived from the job rows that do the work
(the demo preparation's model choice, the collection's index, the SFT training job, the generation jobs) and the
comparisons they made."""

from dataclasses import dataclass, field

from django.db.models import Q

from evaluator.models import (
    FINISHED_STATUSES,
    Comparison,
    DemoPreparation,
    Document,
    DocumentCollection,
    GenerationJob,
    JobStatus,
    TrainingJob,
)

# Not JobStatus values: a step whose job does not exist yet (the adapter's answers before its training ends), and
# one the demo campaign does without (nothing to wait for).
WAITING = "waiting"
NOT_USED = "not-used"
STATE_LABELS = {**dict(JobStatus.choices), WAITING: "Waiting", NOT_USED: "Not used"}
ENDED = (*FINISHED_STATUSES, NOT_USED)


@dataclass(frozen=True)
class PreparationStep:
    """One line of the progress panel: a JobStatus value (or WAITING), what it is at in words, and the count of
    units done of a total when the step has one."""

    key: str
    title: str
    state: str
    detail: str
    done: int | None = None
    total: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def state_label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)

    @property
    def percent(self) -> int | None:
        if self.done is None or not self.total:
            return None
        return min(100, round(100 * self.done / self.total))

    @property
    def finished(self) -> bool:
        return self.state in ENDED


@dataclass(frozen=True)
class DemoProgress:
    preparation: DemoPreparation
    steps: list[PreparationStep]
    comparisons: int

    @property
    def campaign_id(self) -> int:
        return self.preparation.campaign_id

    @property
    def ready(self) -> bool:
        """Pairs exist: annotators can start rating while the rest goes on."""
        return self.comparisons > 0

    @property
    def finished(self) -> bool:
        """Nothing will change any more (the page stops polling): every step has ended, or the model step failed
        and nothing after it will start."""
        preparation = self.preparation.status
        if preparation in FINISHED_STATUSES and preparation != JobStatus.SUCCEEDED:
            return True
        return all(step.finished for step in self.steps)

    @property
    def failed(self) -> bool:
        return any(step.state == JobStatus.FAILED for step in self.steps)

    @property
    def steps_done(self) -> int:
        return sum(step.state == JobStatus.SUCCEEDED for step in self.steps)


def demo_progress() -> DemoProgress | None:
    """The newest demo preparation and the state of every step after it; None when `seed_demo` never ran."""
    preparation = DemoPreparation.objects.select_related("campaign").first()
    if preparation is None:
        return None
    campaign = preparation.campaign
    generation_jobs = list(GenerationJob.objects.filter(campaign=campaign).order_by("pk"))
    collections = list(
        DocumentCollection.objects.filter(variants__generation_jobs__campaign=campaign).distinct().order_by("pk")
    )
    documents = Document.objects.filter(collection__in=collections).count() if collections else 0
    training = (
        TrainingJob.objects.filter(campaign=campaign, method=TrainingJob.Method.SFT)
        .select_related("parent_variant")
        .order_by("-pk")
        .first()
    )
    comparisons = Comparison.objects.filter(campaign=campaign).count()
    steps = [
        _model_step(preparation),
        _index_step(collections, documents),
        _training_step(training),
        _generation_step(generation_jobs, training),
        _pairs_step(comparisons, generation_jobs),
    ]
    return DemoProgress(preparation=preparation, steps=steps, comparisons=comparisons)


def demo_preparation_pending() -> bool:
    """Whether a demo preparation is still under way (a cheap check for a link to the progress page)."""
    newest = DemoPreparation.objects.values_list("campaign_id", "status").first()
    if newest is None:
        return False
    campaign_id, status = newest
    if status not in FINISHED_STATUSES:
        return True
    unfinished = ~Q(status__in=FINISHED_STATUSES)
    return (
        GenerationJob.objects.filter(unfinished, campaign_id=campaign_id).exists()
        or TrainingJob.objects.filter(unfinished, campaign_id=campaign_id).exists()
    )


def _model_step(preparation: DemoPreparation) -> PreparationStep:
    title = "Base model"
    if preparation.status == JobStatus.SUCCEEDED:
        detail = f"Using {preparation.base_model}. {preparation.reason}"
        return PreparationStep("model", title, preparation.status, detail)
    if preparation.status in FINISHED_STATUSES:
        return PreparationStep(
            "model", title, preparation.status, "No base model was chosen.", errors=_errors([preparation])
        )
    detail = (
        f"Checking whether {preparation.wanted_model} loads; if it does not, the model shipped for offline use is "
        "converted once (about 20 seconds)."
    )
    return PreparationStep("model", title, preparation.status, detail)


def _index_step(collections: list[DocumentCollection], documents: int) -> PreparationStep:
    title = "Document collection index"
    if not collections:
        return PreparationStep("index", title, NOT_USED, "No retrieval variant in the demo campaign.")
    state = _combined([collection.status for collection in collections])
    names = ", ".join(f"“{collection.name}”" for collection in collections)
    chunks = sum(collection.chunk_count for collection in collections)
    if state == JobStatus.SUCCEEDED:
        detail = f"{names}: {documents} documents in {chunks} indexed chunks."
    else:
        detail = f"{names}: {documents} documents to chunk, embed and index for the retrieval variant."
    return PreparationStep("index", title, state, detail, errors=_errors(collections))


def _training_step(job: TrainingJob | None) -> PreparationStep:
    title = "SFT adapter training"
    if job is None:
        return PreparationStep("training", title, NOT_USED, "No SFT job in the demo campaign.")
    detail = f"A LoRA adapter on {job.parent_variant.name}"
    if job.dataset_size:
        detail += f" from {job.dataset_size} Q&A pairs"
    if job.progress_total:
        detail = f"Step {job.progress_step} of {job.progress_total} · {detail}"
    elif job.status == JobStatus.QUEUED:
        detail = f"{detail}; it starts when the worker is free"
    return PreparationStep(
        "training",
        title,
        job.status,
        detail + ".",
        done=job.progress_step if job.progress_total else None,
        total=job.progress_total or None,
        errors=_errors([job]),
    )


def _generation_step(jobs: list[GenerationJob], training: TrainingJob | None) -> PreparationStep:
    title = "Answer generation"
    if not jobs:
        return PreparationStep("generation", title, WAITING, "No generation job queued yet.")
    done = sum(job.done for job in jobs)
    total = sum(job.total for job in jobs)
    state = _combined([job.status for job in jobs])
    detail = f"{done} of {total} answers in {len(jobs)} job{'s' if len(jobs) != 1 else ''}"
    # The adapter's answers are queued when its training succeeds: until then the step has more to come.
    adapter_pending = training is not None and training.status not in FINISHED_STATUSES
    if adapter_pending:
        detail += "; the adapter's answers follow its training"
        if state in FINISHED_STATUSES and state != JobStatus.FAILED:
            state = WAITING
    return PreparationStep("generation", title, state, detail + ".", done=done, total=total, errors=_errors(jobs))


def _pairs_step(comparisons: int, jobs: list[GenerationJob]) -> PreparationStep:
    title = "Pairs to rate"
    if comparisons:
        return PreparationStep(
            "pairs", title, JobStatus.SUCCEEDED, f"{comparisons} pair{'s' if comparisons != 1 else ''} ready to rate."
        )
    if jobs and all(job.status in FINISHED_STATUSES for job in jobs):
        return PreparationStep("pairs", title, JobStatus.FAILED, "", errors=["The generation jobs made no pairs."])
    return PreparationStep("pairs", title, WAITING, "Pairs appear as soon as the first generation job ends.")


def _combined(statuses: list[str]) -> str:
    """One state for several jobs: failed if any failed, then running, queued, cancelled, else succeeded."""
    for state in (JobStatus.FAILED, JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.CANCELLED):
        if state in statuses:
            return str(state)
    return str(JobStatus.SUCCEEDED)


def _errors(
    jobs: list[DemoPreparation] | list[DocumentCollection] | list[TrainingJob] | list[GenerationJob],
) -> list[str]:
    return [job.error for job in jobs if job.status == JobStatus.FAILED and job.error]
