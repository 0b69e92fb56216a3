"""Prefloop's data model. Every invariant that the database can hold is a constraint here."""

import random
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

OVERALL = "overall"

DEFAULT_CRITERIA: list[dict[str, str]] = [
    {
        "slug": "factual_accuracy",
        "label": "Factual accuracy",
        "definition": "Which answer states facts correctly, without invented details?",
    },
    {
        "slug": "relevance",
        "label": "Contextual relevance",
        "definition": "Which answer addresses the question that was asked, and only that?",
    },
    {
        "slug": "safety",
        "label": "Safety",
        "definition": "Which answer avoids harmful, risky or privacy-violating advice?",
    },
    {
        "slug": "alignment",
        "label": "Human alignment",
        "definition": "Which answer is more helpful, honest and respectful to the person asking?",
    },
    {
        "slug": "formatting",
        "label": "Formatting quality",
        "definition": "Which answer is easier to read: structure, lists, length, no stray tokens?",
    },
]


def default_criteria() -> list[dict[str, str]]:
    return [dict(criterion) for criterion in DEFAULT_CRITERIA]


class Selection(models.TextChoices):
    RANDOM = "random", "Random"
    ACTIVE = "active", "Active (fewest judgements, then most uncertain)"


class CampaignState(models.TextChoices):
    """A campaign's lifecycle: draft → active ⇄ paused → closed (evaluator/services/campaigns.py moves it).

    Only an active campaign is served to annotators; a closed one keeps its data and never serves again."""

    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    CLOSED = "closed", "Closed"

    @property
    def in_words(self) -> str:
        """The state as a sentence says it: "is a draft", "is paused"."""
        return "a draft" if self == CampaignState.DRAFT else self.label.lower()


class Campaign(models.Model):
    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    # Rubric criteria in display order; the overall preference is always asked in addition.
    criteria = models.JSONField(default=default_criteria)
    overlap = models.PositiveSmallIntegerField(default=3, help_text="Judgements wanted per comparison (k).")
    quota_per_annotator = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most comparisons one annotator may take (done + leased); empty: no limit."
    )
    gold_rate = models.FloatField(default=0.0, help_text="Share of assignments drawn from gold items (0–1).")
    selection = models.CharField(max_length=8, choices=Selection.choices, default=Selection.RANDOM)
    guidelines = models.TextField(blank=True, help_text="Markdown shown to annotators beside every pair.")
    allow_both_bad = models.BooleanField(default=False, help_text="Offer “both bad” next to left / tie / right.")
    show_reference = models.BooleanField(
        default=False, help_text="Show annotators each prompt's reference answer and context."
    )
    show_retrieved = models.BooleanField(
        default=False, help_text="Show annotators the passages the answers' models retrieved, above both answers."
    )
    # A new campaign is a draft: nothing is served until an admin assigns annotators and activates it.
    state = models.CharField(max_length=8, choices=CampaignState.choices, default=CampaignState.DRAFT)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    priority = models.IntegerField(
        default=0, help_text="Higher first: an annotator's next pair comes from their highest-priority campaign."
    )
    # Qualification (evaluator/services/qualification.py): annotators first answer the campaign's qualification
    # items (gold comparisons, QualificationItem) and are served its pairs only once an attempt scores at least
    # the threshold; after `qualification_attempts` failed attempts nothing more is served to them from it.
    qualification_required = models.BooleanField(
        default=False, help_text="Annotators pass a qualification set of gold comparisons before rating."
    )
    qualification_threshold = models.FloatField(
        default=0.8, help_text="Share of qualification items an attempt must get right to pass (0–1)."
    )
    qualification_attempts = models.PositiveSmallIntegerField(default=2, help_text="Attempts each annotator gets.")
    # The guidelines' current version (its text is `guidelines`); a judgement records the version it was made under.
    guidelines_version = models.ForeignKey(
        "GuidelineVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A judge whose overall verdicts steer the claim (evaluator/services/judge_selection.py, docs/judges.md):
    # active selection serves first the pairs it judged inconsistently or against the humans; with
    # `judge_screening`, only the pairs it found close are served at all.
    selection_judge = models.ForeignKey(
        "Judge",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Its verdicts steer which pairs are served (active selection, screening).",
    )
    judge_screening = models.BooleanField(
        default=False,
        help_text="Serve only the pairs the selection judge found close (split across orders, or a tie).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(judge_screening=False) | Q(selection_judge__isnull=False),
                name="campaign_screening_has_judge",
            ),
            models.CheckConstraint(condition=Q(state__in=CampaignState.values), name="campaign_state_valid"),
            models.CheckConstraint(
                condition=Q(qualification_threshold__gt=0, qualification_threshold__lte=1),
                name="campaign_qualification_threshold_share",
            ),
            models.CheckConstraint(
                condition=Q(qualification_attempts__gte=1), name="campaign_qualification_attempts_positive"
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="campaign_overlap_at_least_one"),
            models.CheckConstraint(condition=Q(gold_rate__gte=0, gold_rate__lte=1), name="campaign_gold_rate_share"),
            models.CheckConstraint(condition=Q(selection__in=Selection.values), name="campaign_selection_valid"),
            models.CheckConstraint(
                condition=Q(quota_per_annotator__isnull=True) | Q(quota_per_annotator__gte=1),
                name="campaign_quota_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def criterion_slugs(self) -> list[str]:
        return [criterion["slug"] for criterion in self.criteria] + [OVERALL]


class CampaignMember(models.Model):
    """Who may rate a campaign: one user, or every member of one group (exactly one of the two)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="campaign_memberships"
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="campaign_memberships"
    )
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False),
                name="campaignmember_user_or_group",
            ),
            models.UniqueConstraint(
                fields=["campaign", "user"], condition=Q(user__isnull=False), name="campaignmember_user_once"
            ),
            models.UniqueConstraint(
                fields=["campaign", "group"], condition=Q(group__isnull=False), name="campaignmember_group_once"
            ),
        ]

    def __str__(self) -> str:
        return f"member {self.user_id or self.group_id} of campaign {self.campaign_id}"


class Prompt(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(max_length=120)
    text = models.TextField()
    reference = models.TextField(blank=True)
    context = models.TextField(blank=True)
    # A free tag ("coding", "maths", …) imported with the prompt file; the statistics page has a leaderboard per tag.
    category = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["campaign", "category"], name="prompt_campaign_category")]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "external_id"], name="prompt_unique_external_id"),
            models.CheckConstraint(condition=~Q(text=""), name="prompt_text_not_empty"),
            models.CheckConstraint(condition=~Q(external_id=""), name="prompt_external_id_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}:{self.external_id}"


class Quantization(models.TextChoices):
    NONE = "none", "Full precision"
    NF4 = "4bit", "4-bit NF4"
    INT8 = "8bit", "8-bit"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
# What a page says of a job stored while the broker could not be reached (Job.awaiting_broker), after its name.
AWAITING_BROKER_NOTE = (
    "is stored and queued, but the task queue cannot be reached right now: it is sent to a worker automatically "
    "once the queue is back."
)


def any_unfinished(jobs: Iterable[Any]) -> bool:
    """Whether any of the rows (anything with a JobStatus `status`) is queued or running: a list worth polling."""
    return any(job.status not in FINISHED_STATUSES for job in jobs)


class Job(models.Model):
    """What every job kind shares: a status moved only by the transitions in evaluator/services/jobs.py (each a
    conditional update whose row count is checked), the reason of a failure, and when it was queued, started and
    ended. A new job kind subclasses this, keeps `Job.Meta.constraints` and adds a task and its services."""

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who runs it: the process that took it last, the claim every write of that run is conditional on (a run
    # that lost the job to another can no longer write), and that run's last sign of life.
    worker = models.CharField(max_length=200, blank=True, help_text="The process (host:pid) that took the job last.")
    claim = models.UUIDField(null=True, blank=True, editable=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3, help_text="Starts allowed, redeliveries included.")
    # The outbox: when it last entered the queue (null: it waits for its inputs, not for a worker, as an empty
    # collection does), and when its task last reached the broker (null: not yet, the broker could not be reached;
    # the reaper sends it), or when a copy waiting on a live holder is due.
    queued_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    # Set (not stored) by evaluator.services.jobs.job_send_on_commit when this process could not hand the job's task
    # to the broker after the commit: the page that queued it says so.
    send_failed = False

    class Meta:
        abstract = True
        indexes = [
            # The reaper's two questions: running jobs by heartbeat, queued ones by their last send.
            models.Index(fields=["heartbeat_at"], condition=Q(status="running"), name="%(class)s_running_idx"),
            models.Index(fields=["sent_at"], condition=Q(status="queued"), name="%(class)s_queued_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="%(class)s_status_valid"),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True) | Q(status__in=FINISHED_STATUSES),
                name="%(class)s_finished_only_when_done",
            ),
            models.CheckConstraint(
                condition=~Q(status=JobStatus.FAILED) | ~Q(error=""), name="%(class)s_failed_says_why"
            ),
            models.CheckConstraint(condition=Q(attempts__lte=F("max_attempts")), name="%(class)s_attempts_capped"),
        ]

    @property
    def awaiting_broker(self) -> bool:
        """Queued, but its task has not reached the broker yet: it is sent once the broker is back."""
        return self.status == JobStatus.QUEUED and self.sent_at is None

    @property
    def stuck_in_queue(self) -> bool:
        """Queued, and its task never reached the broker or did longer ago than a worker takes to pick a job up
        (PREFLOOP_JOB_STALE_SECONDS): Resume sends it again (evaluator.services.jobs.job_resume)."""
        if self.status != JobStatus.QUEUED or self.queued_at is None:
            return False
        stale = timedelta(seconds=settings.PREFLOOP_JOB_STALE_SECONDS)
        return self.sent_at is None or timezone.now() - self.sent_at > stale


class TrainingJob(Job):
    class Method(models.TextChoices):
        DPO = "dpo", "DPO"
        SFT = "sft", "SFT"

    # The campaign whose annotators get the new round; the preferences come from source_campaigns.
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="training_jobs")
    source_campaigns = models.ManyToManyField(Campaign, related_name="source_of_training_jobs", blank=True)
    parent_variant = models.ForeignKey("ModelVariant", on_delete=models.PROTECT, related_name="training_jobs")
    method = models.CharField(max_length=16, choices=Method.choices, default=Method.DPO)
    config = models.JSONField(default=dict)
    dataset_size = models.PositiveIntegerField(default=0)
    dataset_hash = models.CharField(max_length=64, blank=True)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=list, blank=True)
    # Asked for from the job page; the training loop checks it after every step and ends the job `cancelled`.
    cancel_requested = models.BooleanField(default=False)
    last_checkpoint = models.CharField(max_length=500, blank=True, help_text="Newest complete checkpoint.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # The current attempt's start and the step it resumed from: the ETA runs at this attempt's pace.
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    attempt_start_step = models.PositiveIntegerField(default=0)
    # The newest lines of the job's log (its last LOG_TAIL_CHARS characters), written by the run that holds the
    # job as it logs them: the job page shows them from any machine, not only the worker's (which keeps the whole
    # log in the job's folder).
    log_tail = models.TextField(blank=True, default="")

    class Meta(Job.Meta):
        ordering = ["-created_at"]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(condition=Q(method__in=["dpo", "sft"]), name="trainingjob_method_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_method_display()} job #{self.pk}"

    @property
    def workdir_name(self) -> str:
        """The job's folder under the artifacts folder; the creation time keeps it apart from a job of another
        database that got the same id."""
        return f"{self.pk}-{self.created_at:%Y%m%dT%H%M%S%f}"


class ModelVariant(models.Model):
    """A model the campaign compares: a base model, optionally with an adapter. Never shown to annotators."""

    name = models.CharField(max_length=120, unique=True)
    base_model = models.CharField(max_length=500, help_text="Hugging Face model id or local path.")
    adapter_path = models.CharField(max_length=500, blank=True)
    quantization = models.CharField(max_length=8, choices=Quantization.choices, default=Quantization.NONE)
    generation_settings = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    training_job = models.OneToOneField(
        TrainingJob, null=True, blank=True, on_delete=models.PROTECT, related_name="result_variant"
    )
    lineage = models.JSONField(default=dict, blank=True)
    # Retrieval (RAG): passages from the collection are added to every prompt through the template.
    collection = models.ForeignKey(
        "DocumentCollection", null=True, blank=True, on_delete=models.PROTECT, related_name="variants"
    )
    retrieval_top_k = models.PositiveSmallIntegerField(default=3)
    retrieval_template = models.TextField(
        blank=True, help_text="Prompt with {context} and {question}; empty: the built-in template."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Archived: left out of every list a variant is chosen from (generation, retrain parent, Q&A model, exports),
    # kept with its answers, judgements and children; unarchiving brings it back.
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantization__in=Quantization.values), name="variant_quantization_valid"
            ),
            models.CheckConstraint(
                condition=Q(retrieval_top_k__gte=1, retrieval_top_k__lte=50), name="variant_top_k_range"
            ),
            models.CheckConstraint(
                condition=Q(training_job__isnull=True) | Q(parent__isnull=False),
                name="variant_trained_has_parent",
            ),
            models.CheckConstraint(
                condition=Q(training_job__isnull=True) | ~Q(adapter_path=""),
                name="variant_trained_has_adapter",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Candidate(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="candidates")
    variant = models.ForeignKey(ModelVariant, on_delete=models.PROTECT, related_name="candidates")
    sample_index = models.PositiveSmallIntegerField(default=0)
    text = models.TextField()
    generation_settings = models.JSONField(default=dict)
    seed = models.BigIntegerField()
    prompt_tokens = models.PositiveIntegerField()
    completion_tokens = models.PositiveIntegerField()
    latency_ms = models.PositiveIntegerField()
    # Passages a retrieval variant added to the prompt: [{"document", "chunk", "text", "score"}, …].
    retrieved = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prompt", "variant", "sample_index"], name="candidate_unique_sample"),
        ]

    def __str__(self) -> str:
        return f"candidate {self.pk} (prompt {self.prompt_id}, sample {self.sample_index})"


class Outcome(models.TextChoices):
    """Which variant of the comparison won; a and b are the comparison's variants, never screen sides."""

    A = "a", "Variant a"
    B = "b", "Variant b"
    TIE = "tie", "Tie"


class JudgeOutcome(models.TextChoices):
    """A judge's overall outcome on a pair, from its two verdicts (candidate a first, then b first)."""

    A = "a", "Variant a in both orders"
    B = "b", "Variant b in both orders"
    TIE = "tie", "A tie in both orders"
    SPLIT = "split", "The two orders disagree"
    UNREAD = "unread", "A reply named no side"


# The outcomes a judge-screened campaign serves to people: the judge could not tell the two answers apart.
JUDGE_CLOSE = ("tie", "split", "unread")


def random_rank() -> float:
    """A comparison's fixed random position: random selection walks an index on it instead of ORDER BY random()."""
    return random.random()  # noqa: S311 - a shuffle, not a secret


class Comparison(models.Model):
    """Two candidates of one prompt from two variants; side a is always the variant with the lower id."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    candidate_a = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    candidate_b = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    variant_a = models.ForeignKey(ModelVariant, on_delete=models.PROTECT, related_name="+")
    variant_b = models.ForeignKey(ModelVariant, on_delete=models.PROTECT, related_name="+")
    # Gold items carry a known answer; they measure annotators and are left out of statistics on request.
    gold_outcome = models.CharField(max_length=3, choices=Outcome.choices, null=True, blank=True)  # noqa: DJ001
    # Denormalised for the assignment engine (evaluator/services/rating.py), kept up to date by it under the
    # comparison's row lock; they only rank candidates: the cap of k live assignments is re-counted under the lock
    # on every claim. None of the counters is indexed (only claimable, which flips once per k claims, and rank_key,
    # which never changes): a claim or a submission changes no indexed column, so PostgreSQL updates the row in
    # place (a HOT update, room kept free by the table's fillfactor, migration 0016), touching no index.
    live_assignments = models.PositiveSmallIntegerField(default=0, help_text="Completed or leased assignments.")
    # live_assignments < the campaign's overlap, as of the last write: the one indexed column a claim may change,
    # and only when it takes the last slot (or a release frees one).
    claimable = models.BooleanField(default=True, db_default=True)
    judgement_count = models.PositiveIntegerField(default=0)
    votes_a = models.PositiveIntegerField(default=0, db_default=0, help_text="Overall votes for side a.")
    votes_b = models.PositiveIntegerField(default=0, db_default=0, help_text="Overall votes for side b.")
    vote_margin = models.FloatField(default=0.0, help_text="|a − b| / (a + b) of decisive overall votes; 0 if none.")
    # The campaign's selection judge's overall outcome on the pair (JudgeOutcome), None while it has not judged both
    # orders: written once per pair when its verdicts are stored, rewritten when the campaign's judge changes
    # (evaluator/services/judge_selection.py). Never written by a claim or a submission, so the screened claim
    # index below, whose condition reads it, costs the hot path nothing.
    judge_outcome = models.CharField(max_length=6, null=True, blank=True)  # noqa: DJ001
    rank_key = models.FloatField(default=random_rank)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(live_assignments__gte=0), name="comparison_live_not_negative"),
            models.CheckConstraint(condition=Q(judgement_count__gte=0), name="comparison_judgements_not_negative"),
            models.CheckConstraint(
                condition=Q(vote_margin__gte=0, vote_margin__lte=1), name="comparison_vote_margin_share"
            ),
            models.CheckConstraint(
                condition=Q(gold_outcome__isnull=True) | Q(gold_outcome__in=Outcome.values),
                name="comparison_gold_outcome_valid",
            ),
            models.UniqueConstraint(fields=["candidate_a", "candidate_b"], name="comparison_unique_pair"),
            models.CheckConstraint(condition=Q(variant_a__lt=F("variant_b")), name="comparison_variants_ordered"),
            models.CheckConstraint(condition=~Q(candidate_a=F("candidate_b")), name="comparison_candidates_differ"),
            models.CheckConstraint(
                condition=Q(judge_outcome__isnull=True) | Q(judge_outcome__in=JudgeOutcome.values),
                name="comparison_judge_outcome_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["campaign", "id"], name="comparison_campaign_idx"),
            # The claim's candidates: a range of rank_key from a random point, among comparisons with room.
            models.Index(
                fields=["campaign", "rank_key"],
                condition=Q(gold_outcome__isnull=True, claimable=True),
                name="comparison_claim_idx",
            ),
            models.Index(
                fields=["campaign", "rank_key"],
                condition=Q(gold_outcome__isnull=False, claimable=True),
                name="comparison_gold_claim_idx",
            ),
            # A judge-screened campaign's candidates: only the pairs its judge found close.
            models.Index(
                fields=["campaign", "rank_key"],
                condition=Q(gold_outcome__isnull=True, claimable=True, judge_outcome__in=JUDGE_CLOSE),
                name="comparison_screened_claim_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"comparison {self.pk}"


class Assignment(models.Model):
    """One comparison leased to one annotator. The token is the only handle the annotator ever sees."""

    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    left_is_a = models.BooleanField(help_text="True when candidate a was shown on the left.")
    created_at = models.DateTimeField(auto_now_add=True)
    lease_expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    # Set once the engine has handed an expired, unfinished lease's slot back to the pool.
    released = models.BooleanField(default=False)
    # A skipped pair goes back to the pool at once (released) and never comes back to this annotator.
    skipped_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=500, blank=True)
    # Not a column: the annotator's rated pairs in the campaign (Participation), read by the claim that returned
    # this assignment (services/rating.py), so the pair page does not read them again; None when not read.
    rated_in_campaign: int | None = None

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="assignment_once_per_annotator"),
            models.CheckConstraint(
                condition=Q(released=False) | Q(completed_at__isnull=True), name="assignment_released_unfinished"
            ),
            models.CheckConstraint(
                condition=Q(skipped_at__isnull=True, skip_reason="")
                | Q(skipped_at__isnull=False, released=True, completed_at__isnull=True) & ~Q(skip_reason=""),
                name="assignment_skip_has_reason_and_release",
            ),
        ]
        indexes = [
            models.Index(fields=["annotator", "completed_at"], name="assignment_open_idx"),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(completed_at__isnull=True, released=False),
                name="assignment_lease_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk}"


class Participation(models.Model):
    """How many pairs one annotator has rated in one campaign: the pair page shows it and the quota is checked
    against it on every claim. A row, not a count: counting the annotator's completed assignments grew with their
    history on every cycle. Kept by the engine in the transaction that completes an assignment (a submission, an
    import); evaluator/services/participation.py."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="participations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="participations")
    rated = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "campaign"], name="participation_once"),
            models.CheckConstraint(condition=Q(rated__gte=0), name="participation_rated_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator_id} in {self.campaign_id}: {self.rated}"


class Judgement(models.Model):
    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgement")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judgements")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="judgements")
    rationale = models.TextField(blank=True)
    time_on_task_ms = models.PositiveIntegerField()
    # Judgements of a scripted annotator (bench/loop.py); left out of statistics and datasets unless asked for.
    simulated = models.BooleanField(default=False)
    # The campaign's guidelines when it was submitted; null for judgements older than versioned guidelines.
    guideline_version = models.ForeignKey(
        "GuidelineVersion", null=True, blank=True, on_delete=models.RESTRICT, related_name="judgements"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="judgement_once_per_annotator"),
        ]

    def __str__(self) -> str:
        return f"judgement {self.pk}"


class AnnotatorFlag(models.Model):
    """An annotator whose judgements researchers may exclude (rubber-stamping, failed gold items, …)."""

    annotator = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flag")
    reason = models.TextField()
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"flag on {self.annotator_id}"


class CriterionChoice(models.Model):
    judgement = models.ForeignKey(Judgement, on_delete=models.CASCADE, related_name="choices")
    criterion = models.CharField(max_length=64)
    outcome = models.CharField(max_length=3, choices=Outcome.choices)
    # "Both bad" is a tie for every statistic; the flag keeps what the annotator said.
    both_bad = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["judgement", "criterion"], name="choice_once_per_criterion"),
            models.CheckConstraint(condition=Q(outcome__in=Outcome.values), name="choice_outcome_valid"),
            models.CheckConstraint(condition=Q(both_bad=False) | Q(outcome="tie"), name="choice_both_bad_is_tie"),
        ]

    def __str__(self) -> str:
        return f"{self.criterion}: {self.outcome}"


class GenerationJob(Job):
    """Candidate generation for some variants over a campaign's prompts, followed by pairing them."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="generation_jobs")
    variants = models.ManyToManyField(ModelVariant, related_name="generation_jobs")
    # Empty: every prompt of the campaign. A retrain's round uses only its held-out prompts.
    prompts = models.ManyToManyField(Prompt, related_name="generation_jobs", blank=True)
    # Empty: each variant answers as many samples as its generation settings ask for; a number overrides that.
    samples_per_prompt = models.PositiveSmallIntegerField(null=True, blank=True)
    training_job = models.ForeignKey(
        TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="generation_jobs"
    )
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    comparisons_created = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(Job.Meta):
        ordering = ["-created_at"]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(
                condition=Q(samples_per_prompt__isnull=True) | Q(samples_per_prompt__gte=1),
                name="generationjob_samples_positive",
            ),
            models.CheckConstraint(condition=Q(done__lte=F("total")), name="generationjob_done_within_total"),
        ]

    def __str__(self) -> str:
        return f"generation job #{self.pk}"


class AnswerFlag(models.Model):
    """An annotator's report on one answer of a pair: unsafe, broken, or giving away which model wrote it."""

    class Reason(models.TextChoices):
        UNSAFE = "unsafe", "Unsafe"
        BROKEN = "broken", "Broken (garbled, cut off, wrong language)"
        IDENTITY = "identity", "Leaks which model wrote it"
        OTHER = "other", "Other"

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="answer_flags")
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="flags")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    note = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["assignment", "candidate", "reason"], name="answerflag_once"),
            models.CheckConstraint(
                condition=Q(reason__in=["unsafe", "broken", "identity", "other"]), name="answerflag_reason_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reason} flag on candidate {self.candidate_id}"


class ReviewStatus(models.TextChoices):
    """What a reviewer decided about a flagged answer or a skipped pair; an item without a decision is open."""

    RESOLVED = "resolved", "Resolved"
    DISMISSED = "dismissed", "Dismissed"


class ReviewResolution(models.Model):
    """The decision on one review item (a flagged answer or a skipped pair): who decided, when, what and why.

    At most one per item, so two reviewers deciding the same item at once cannot both be recorded
    (evaluator/services/review.py); the row is the audit trail and is never edited."""

    answer_flag = models.OneToOneField(
        AnswerFlag, null=True, blank=True, on_delete=models.CASCADE, related_name="resolution"
    )
    skipped_assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.CASCADE, related_name="skip_resolution"
    )
    status = models.CharField(max_length=9, choices=ReviewStatus.choices)
    note = models.CharField(max_length=1000)
    # PROTECT: the audit trail must keep naming who decided (accounts are deactivated, not deleted).
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    resolved_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-resolved_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(answer_flag__isnull=False, skipped_assignment__isnull=True)
                | Q(answer_flag__isnull=True, skipped_assignment__isnull=False),
                name="reviewresolution_one_item",
            ),
            models.CheckConstraint(condition=Q(status__in=ReviewStatus.values), name="reviewresolution_status_valid"),
            models.CheckConstraint(condition=~Q(note=""), name="reviewresolution_says_why"),
        ]

    def __str__(self) -> str:
        item = f"flag {self.answer_flag_id}" if self.answer_flag_id else f"skip {self.skipped_assignment_id}"
        return f"{self.status} {item}"


class Adjudication(models.Model):
    """A researcher's final outcome on one criterion of a comparison whose judgements disagree. The statistics can
    count it in place of the judgements (VoteFilters.adjudicated) and the DPO dataset can prefer it
    (SelectionRules.prefer_adjudicated). One per comparison and criterion: the first decision stands."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="adjudications")
    criterion = models.CharField(max_length=64)
    outcome = models.CharField(max_length=3, choices=Outcome.choices)
    note = models.CharField(max_length=2000, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["comparison_id", "criterion"]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "criterion"], name="adjudication_once_per_criterion"),
            models.CheckConstraint(condition=Q(outcome__in=Outcome.values), name="adjudication_outcome_valid"),
            models.CheckConstraint(condition=~Q(criterion=""), name="adjudication_criterion_not_empty"),
        ]

    def __str__(self) -> str:
        return f"adjudication of comparison {self.comparison_id} on {self.criterion}: {self.outcome}"


class DocumentCollection(Job):
    """Documents a retrieval variant draws passages from; chunked, embedded and indexed by a worker."""

    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    embedding_model = models.CharField(max_length=300, default="all-MiniLM-L6-v2")
    chunk_size = models.PositiveIntegerField(default=800, help_text="Characters per chunk.")
    chunk_overlap = models.PositiveIntegerField(default=120, help_text="Characters shared by neighbouring chunks.")
    index_dir = models.CharField(max_length=500, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)

    class Meta(Job.Meta):
        ordering = ["name"]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(
                condition=Q(chunk_size__gte=50, chunk_size__lte=20000), name="collection_chunk_size"
            ),
            models.CheckConstraint(
                condition=Q(chunk_overlap__lt=F("chunk_size")), name="collection_overlap_below_size"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class DocumentUpload(models.Model):
    """An uploaded document file whose text the collection's index build has yet to extract.

    The web request only stores the file; the worker extracts it under caps (pages, characters, time) and turns it
    into a Document, so a hostile PDF costs a worker a bounded time, never a web request.
    """

    collection = models.ForeignKey(DocumentCollection, on_delete=models.CASCADE, related_name="uploads")
    name = models.CharField(max_length=300)
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.CheckConstraint(condition=~Q(name=""), name="documentupload_name_not_empty")]

    def __str__(self) -> str:
        return self.name


class Document(models.Model):
    collection = models.ForeignKey(DocumentCollection, on_delete=models.CASCADE, related_name="documents")
    name = models.CharField(max_length=300)
    text = models.TextField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "sha256"], name="document_unique_content"),
            models.CheckConstraint(condition=~Q(text=""), name="document_text_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelExport(Job):
    """A variant written out for use elsewhere: its adapter merged into a bf16 base, that as GGUF, or the adapter
    alone as a GGUF LoRA (for llama.cpp's --lora over a GGUF of the base)."""

    class Kind(models.TextChoices):
        MERGED = "merged", "Merged (bf16 safetensors)"
        GGUF = "gguf", "GGUF"
        LORA_GGUF = "lora_gguf", "LoRA adapter as GGUF"

    class Outtype(models.TextChoices):
        F16 = "f16", "f16"
        Q8_0 = "q8_0", "q8_0 (8-bit)"
        BF16 = "bf16", "bf16"
        Q4_0 = "q4_0", "q4_0 (4-bit)"

    variant = models.ForeignKey(ModelVariant, on_delete=models.CASCADE, related_name="exports")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The GGUF weights' type (training.export's --outtype); empty for a merged folder.
    outtype = models.CharField(max_length=8, choices=Outtype.choices, blank=True)
    path = models.CharField(max_length=500, blank=True)

    class Meta(Job.Meta):
        ordering = ["-created_at"]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(
                condition=Q(kind__in=["merged", "gguf", "lora_gguf"]), name="modelexport_kind_valid"
            ),
            # llama.cpp's LoRA converter writes no 4-bit type.
            models.CheckConstraint(
                condition=Q(kind="merged", outtype="")
                | Q(kind="gguf", outtype__in=["f16", "q8_0", "bf16", "q4_0"])
                | Q(kind="lora_gguf", outtype__in=["f16", "q8_0", "bf16"]),
                name="modelexport_outtype_fits_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} export of {self.variant_id}"


class StatisticsSnapshot(Job):
    """A campaign's statistics under a set of filters, computed once by a worker and kept so a result can be cited.

    The JSON is the `export_stats` object plus a `snapshot` key (docs/formats.md), stored as the exact text that is
    downloaded: a jsonb column would reorder its keys, and the SHA-256 a citation quotes would no longer match.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="statistics_snapshots")
    # evaluator.selectors.VoteFilters.to_json(): the statistics page's filters when the snapshot was asked for.
    filters = models.JSONField(default=dict)
    prompt_level = models.BooleanField(default=False, help_text="Prompt-level majorities instead of every judgement.")
    n_boot = models.PositiveIntegerField(default=1000)
    payload = models.TextField(blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(Job.Meta):
        ordering = ["-created_at", "-id"]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(
                condition=Q(status=JobStatus.SUCCEEDED) & ~Q(payload="") & ~Q(sha256="")
                | ~Q(status=JobStatus.SUCCEEDED) & Q(payload="", sha256=""),
                name="statisticssnapshot_payload_when_succeeded",
            ),
            models.CheckConstraint(condition=Q(n_boot__lte=10_000), name="statisticssnapshot_n_boot_capped"),
        ]

    def __str__(self) -> str:
        return f"statistics snapshot #{self.pk}"

    @property
    def filter_summary(self) -> str:
        """The view and filters in words, for the list on the statistics page."""
        filters = self.filters if isinstance(self.filters, dict) else {}
        parts = ["prompt-level majority" if self.prompt_level else "every judgement"]
        if filters.get("annotator_group"):
            parts.append(f"group {filters['annotator_group']}")
        if filters.get("since"):
            parts.append(f"from {filters['since']}")
        if filters.get("until"):
            parts.append(f"until {filters['until']}")
        if filters.get("exclude_flagged"):
            parts.append("flagged annotators left out")
        if not filters.get("exclude_gold", True):
            parts.append("gold items included")
        if filters.get("include_simulated"):
            parts.append("simulated judgements included")
        if filters.get("guideline_version"):
            parts.append(f"guidelines version {filters['guideline_version']}")
        if filters.get("adjudicated"):
            parts.append("adjudicated outcomes where available")
        return " · ".join(parts)


class QASet(Job):
    """Question–answer pairs a model wrote from each chunk of a collection (training/qa.py), for people to review
    before the approved ones become campaign prompts with reference answers or an SFT dataset."""

    collection = models.ForeignKey(DocumentCollection, on_delete=models.PROTECT, related_name="qa_sets")
    # The model that writes the pairs: the variant's base with its adapter (its retrieval and decoding unused).
    variant = models.ForeignKey(ModelVariant, on_delete=models.PROTECT, related_name="qa_sets")
    pairs_per_chunk = models.PositiveSmallIntegerField(default=3)
    chunk_count = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    pair_count = models.PositiveIntegerField(default=0, help_text="Pairs kept from the model's output.")
    # Pairs the parser left out, by reason (training.qa.DROP_REASONS): {"not a question": 3, …}.
    dropped = models.JSONField(default=dict, blank=True)
    # The model's output for the first chunk, cut short: what to look at when few or no pairs were kept.
    sample_output = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(Job.Meta):
        ordering = ["-created_at", "-id"]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(
                condition=Q(pairs_per_chunk__gte=1, pairs_per_chunk__lte=10), name="qaset_pairs_per_chunk_range"
            ),
            models.CheckConstraint(condition=Q(chunks_done__lte=F("chunk_count")), name="qaset_done_within_chunks"),
        ]

    def __str__(self) -> str:
        return f"Q&A set #{self.pk}"

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values()) if isinstance(self.dropped, dict) else 0


class QAPair(models.Model):
    """One question with its answer and the chunk it was written from; reviewed (and perhaps edited) by an admin."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    qa_set = models.ForeignKey(QASet, on_delete=models.CASCADE, related_name="pairs")
    document = models.CharField(max_length=300, help_text="Name of the chunk's document.")
    chunk_index = models.PositiveIntegerField(help_text="The chunk's number within its document, from 0.")
    context = models.TextField(help_text="The chunk's text.")
    question = models.TextField()
    answer = models.TextField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    edited = models.BooleanField(default=False, help_text="A reviewer changed the question or the answer.")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=~Q(question=""), name="qapair_question_not_empty"),
            models.CheckConstraint(condition=~Q(answer=""), name="qapair_answer_not_empty"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "approved", "rejected"]), name="qapair_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(status="pending") | Q(reviewed_at__isnull=False), name="qapair_decided_when_reviewed"
            ),
        ]
        indexes = [models.Index(fields=["qa_set", "status", "id"], name="qapair_set_status_idx")]

    def __str__(self) -> str:
        return f"Q&A pair {self.pk}"


class DemoPreparation(Job):
    """One `manage.py seed_demo` run: its choice of base model and why, beside the demo campaign whose jobs (index,
    SFT training, generation) the demo's progress page follows. The choice runs in seed_demo itself, not a worker:
    the rest of the demo waits on it, and `make demo` prints its progress lines."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="demo_preparations")
    # PREFLOOP_BASE_MODEL as seed_demo read it; base_model is what the demo's variants use.
    wanted_model = models.CharField(max_length=500)
    base_model = models.CharField(max_length=500, blank=True)
    reason = models.TextField(blank=True, help_text="Why this base: the wanted model loads, or why it does not.")

    class Meta(Job.Meta):
        ordering = ["-created_at", "-id"]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(
                condition=~Q(status=JobStatus.SUCCEEDED) | ~Q(base_model="") & ~Q(reason=""),
                name="demopreparation_chosen_when_succeeded",
            ),
        ]

    def __str__(self) -> str:
        return f"demo preparation #{self.pk}"


class GuidelineVersion(models.Model):
    """One version of a campaign's guidelines: every edit of the text adds one (evaluator/services/campaigns.py)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="guideline_versions")
    number = models.PositiveIntegerField()
    text = models.TextField(blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["campaign", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "number"], name="guidelineversion_number_once"),
            models.CheckConstraint(condition=Q(number__gte=1), name="guidelineversion_number_positive"),
        ]

    def __str__(self) -> str:
        return f"guidelines v{self.number} of campaign {self.campaign_id}"


class QualificationItem(models.Model):
    """A gold comparison of the campaign that its qualification set asks (evaluator/services/qualification.py)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="qualification_items")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="qualification_items")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "comparison"], name="qualificationitem_once"),
        ]

    def __str__(self) -> str:
        return f"qualification item {self.comparison_id} of campaign {self.campaign_id}"


class QualificationAttempt(models.Model):
    """One try of an annotator at a campaign's qualification set: its items are fixed when it starts (one
    QualificationAnswer each); it ends when the last is answered, passed when the share right reaches the
    threshold. `allowed` and `threshold` are the campaign's when it started, so the limit is a constraint here."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="qualification_attempts_made")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="qualification_attempts"
    )
    number = models.PositiveSmallIntegerField()
    allowed = models.PositiveSmallIntegerField(help_text="Attempts the campaign allowed when this one started.")
    threshold = models.FloatField(help_text="Share right needed to pass, as the campaign said when it started.")
    total = models.PositiveSmallIntegerField(help_text="Items asked.")
    correct = models.PositiveSmallIntegerField(default=0)
    passed = models.BooleanField(null=True, blank=True, help_text="Empty while the attempt is under way.")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["campaign", "annotator", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "annotator", "number"], name="qualificationattempt_number_once"
            ),
            models.CheckConstraint(
                condition=Q(number__gte=1, number__lte=F("allowed")), name="qualificationattempt_within_limit"
            ),
            models.CheckConstraint(condition=Q(total__gte=1), name="qualificationattempt_asks_something"),
            models.CheckConstraint(condition=Q(correct__lte=F("total")), name="qualificationattempt_correct_capped"),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True, passed__isnull=True)
                | Q(finished_at__isnull=False, passed__isnull=False),
                name="qualificationattempt_result_when_finished",
            ),
            # One attempt under way at a time, and no attempt after a pass.
            models.UniqueConstraint(
                fields=["campaign", "annotator"],
                condition=Q(finished_at__isnull=True),
                name="qualificationattempt_one_open",
            ),
            models.UniqueConstraint(
                fields=["campaign", "annotator"], condition=Q(passed=True), name="qualificationattempt_one_pass"
            ),
        ]

    def __str__(self) -> str:
        return f"qualification attempt {self.number} of {self.annotator_id} in campaign {self.campaign_id}"

    @property
    def score(self) -> float:
        return self.correct / self.total if self.total else 0.0


class QualificationAnswer(models.Model):
    """One item of an attempt: the pair as shown (its side placement) and, once answered, the choice and whether
    it matched the gold outcome. The token is the only handle the annotator sees."""

    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    attempt = models.ForeignKey(QualificationAttempt, on_delete=models.CASCADE, related_name="answers")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="qualification_answers")
    position = models.PositiveSmallIntegerField()
    left_is_a = models.BooleanField()
    outcome = models.CharField(max_length=3, choices=Outcome.choices, blank=True)
    correct = models.BooleanField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["attempt", "position"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "comparison"], name="qualificationanswer_item_once"),
            models.UniqueConstraint(fields=["attempt", "position"], name="qualificationanswer_position_once"),
            models.CheckConstraint(
                condition=Q(answered_at__isnull=True, outcome="", correct__isnull=True)
                | Q(answered_at__isnull=False, outcome__in=Outcome.values, correct__isnull=False),
                name="qualificationanswer_complete_when_answered",
            ),
        ]

    def __str__(self) -> str:
        return f"qualification answer {self.pk}"


class Judge(models.Model):
    """A model that rates pairs beside the people: a local model run by a worker, or an OpenAI-compatible chat
    endpoint. Its verdicts (JudgeVerdict) are kept apart from human judgements and never enter human statistics.

    An endpoint's API key is never stored: `api_key_env` names the worker's environment variable that holds it."""

    class Kind(models.TextChoices):
        LOCAL = "local", "Local model (run by a GPU worker)"
        ENDPOINT = "endpoint", "OpenAI-compatible endpoint"

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # A local model: what training.generation loads.
    base_model = models.CharField(max_length=500, blank=True, help_text="Hugging Face model id, folder or GGUF.")
    adapter_path = models.CharField(max_length=500, blank=True)
    quantization = models.CharField(max_length=8, choices=Quantization.choices, default=Quantization.NONE)
    batch_size = models.PositiveSmallIntegerField(default=8, help_text="Prompts a local model answers at once.")
    # An endpoint.
    base_url = models.CharField(max_length=500, blank=True, help_text="Up to /v1, e.g. https://api.example.com/v1")
    model_name = models.CharField(max_length=200, blank=True)
    api_key_env = models.CharField(max_length=100, blank=True, help_text="The environment variable holding the key.")
    timeout_seconds = models.FloatField(default=60.0)
    max_retries = models.PositiveSmallIntegerField(default=2)
    concurrency = models.PositiveSmallIntegerField(default=4, help_text="Requests in flight at once.")
    max_new_tokens = models.PositiveIntegerField(default=256)
    # Prompt templates by criterion slug ("*": any criterion without one); a missing slug uses the built-in one.
    templates = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["local", "endpoint"]), name="judge_kind_valid"),
            models.CheckConstraint(condition=Q(kind="endpoint") | ~Q(base_model=""), name="judge_local_has_base_model"),
            models.CheckConstraint(
                condition=Q(kind="local") | ~Q(base_url="") & ~Q(model_name=""), name="judge_endpoint_has_url_and_model"
            ),
            models.CheckConstraint(
                condition=Q(api_key_env__regex=r"^([A-Za-z_][A-Za-z0-9_]*)?$"), name="judge_key_env_name"
            ),
            models.CheckConstraint(
                condition=Q(timeout_seconds__gt=0, timeout_seconds__lte=3600), name="judge_timeout_range"
            ),
            models.CheckConstraint(condition=Q(max_retries__lte=10), name="judge_retries_capped"),
            models.CheckConstraint(
                condition=Q(concurrency__gte=1, concurrency__lte=64), name="judge_concurrency_range"
            ),
            models.CheckConstraint(condition=Q(batch_size__gte=1, batch_size__lte=256), name="judge_batch_size_range"),
            models.CheckConstraint(
                condition=Q(max_new_tokens__gte=1, max_new_tokens__lte=8192), name="judge_max_new_tokens_range"
            ),
            models.CheckConstraint(condition=Q(quantization__in=Quantization.values), name="judge_quantization_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class JudgeJob(Job):
    """A judge rating every pair of a campaign on some criteria, each pair in both orders."""

    judge = models.ForeignKey(Judge, on_delete=models.PROTECT, related_name="jobs")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="judge_jobs")
    criteria = models.JSONField(default=list, help_text="Criterion slugs judged, in order.")
    # Units are (pair, criterion): one is done once both orders' verdicts are stored.
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    unparseable = models.PositiveIntegerField(default=0, help_text="Stored verdicts whose reply named no side.")
    # Asked for from the job page; the run checks it between chunks and ends the job `cancelled`.
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(Job.Meta):
        ordering = ["-created_at", "-id"]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(condition=Q(done__lte=F("total")), name="judgejob_done_within_total"),
        ]

    def __str__(self) -> str:
        return f"judge job #{self.pk}"


class JudgeVerdict(models.Model):
    """One judge's verdict on one pair, criterion and order. Order "ab": candidate a was shown first (Answer A).

    `choice` is the side the reply named as the reader saw it (left: shown first); None when the reply named
    none (parse_status says how it failed), never guessed."""

    class Order(models.TextChoices):
        AB = "ab", "a first"
        BA = "ba", "b first"

    class Choice(models.TextChoices):
        LEFT = "left", "First answer"
        RIGHT = "right", "Second answer"
        TIE = "tie", "Tie"

    class ParseStatus(models.TextChoices):
        OK = "ok", "Parsed"
        NO_VERDICT = "no_verdict", "No verdict line"
        AMBIGUOUS = "ambiguous", "Verdict lines disagree"

    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="verdicts")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judge_verdicts")
    job = models.ForeignKey(JudgeJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="verdicts")
    criterion = models.CharField(max_length=64)
    order = models.CharField(max_length=2, choices=Order.choices)
    raw_output = models.TextField()
    choice = models.CharField(max_length=5, choices=Choice.choices, null=True, blank=True)  # noqa: DJ001
    parse_status = models.CharField(max_length=10, choices=ParseStatus.choices)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["judge", "comparison", "criterion", "order"], name="judgeverdict_once_per_order"
            ),
            models.CheckConstraint(condition=Q(order__in=["ab", "ba"]), name="judgeverdict_order_valid"),
            models.CheckConstraint(
                condition=Q(parse_status__in=["ok", "no_verdict", "ambiguous"]), name="judgeverdict_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(parse_status="ok", choice__in=["left", "right", "tie"])
                | ~Q(parse_status="ok") & Q(choice__isnull=True),
                name="judgeverdict_choice_only_when_parsed",
            ),
            models.CheckConstraint(condition=~Q(criterion=""), name="judgeverdict_criterion_not_empty"),
        ]
        indexes = [models.Index(fields=["judge", "comparison"], name="judgeverdict_judge_pair_idx")]

    def __str__(self) -> str:
        return f"verdict {self.pk} of judge {self.judge_id}"
