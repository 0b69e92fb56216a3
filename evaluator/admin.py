"""Django admin for inspecting rows; day-to-day work happens on Prefloop's own pages."""

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from evaluator import models
from evaluator.rubric import rubric_problems
from evaluator.services.participation import participations_recount


class RecountsParticipation(admin.ModelAdmin):
    """For rows whose deletion may take completed assignments with it: their campaigns' rated pairs per annotator
    (models.Participation) are recounted afterwards. `campaign_id` names the campaign's id from a row."""

    campaign_id = "campaign_id"

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self.delete_queryset(request, type(obj).objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        campaign_ids = set(queryset.values_list(self.campaign_id, flat=True))
        super().delete_queryset(request, queryset)
        participations_recount(campaign_ids=campaign_ids)


class CampaignAdminForm(forms.ModelForm):
    """CampaignAdmin's form (the admin supplies the model and fields): the rubric's JSON is checked."""

    def clean_criteria(self) -> Any:
        # The raw JSON is the rating form's rubric: a criterion without a slug would fail every pair page.
        criteria = self.cleaned_data["criteria"]
        problems = rubric_problems(criteria)
        if problems:
            raise forms.ValidationError(problems)
        return criteria


@admin.register(models.Campaign)
class CampaignAdmin(admin.ModelAdmin):
    """The lifecycle moves on the campaign page (conditional updates); here the state is only shown."""

    form = CampaignAdminForm
    list_display = ["name", "state", "priority", "overlap", "created_at"]
    list_filter = ["state"]
    search_fields = ["name"]
    # Guidelines and the qualification are set on the campaign page, where each guidelines edit becomes a version
    # and the qualification's items are checked.
    readonly_fields = ["state", "state_changed_at", "guidelines", "guidelines_version", "qualification_required"]
    readonly_fields += ["qualification_threshold", "qualification_attempts"]
    # Changing the selection judge rewrites every pair's judge outcome: the campaign page does it.
    readonly_fields += ["selection_judge", "judge_screening"]


@admin.register(models.CampaignMember)
class CampaignMemberAdmin(admin.ModelAdmin):
    """Who may rate which campaign; assigned and unassigned on the campaign's own page, which checks the names."""

    list_display = ["campaign", "user", "group", "added_by", "created_at"]
    list_filter = ["campaign"]
    list_select_related = ["campaign", "user", "group", "added_by"]
    raw_id_fields = ["campaign", "user", "group", "added_by"]


@admin.register(models.ModelVariant)
class ModelVariantAdmin(admin.ModelAdmin):
    list_display = ["name", "base_model", "adapter_path", "quantization", "parent", "created_at"]
    list_select_related = ["parent"]
    raw_id_fields = ["parent", "training_job"]


@admin.register(models.TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "campaign", "parent_variant", "status", "progress_step", "progress_total", "attempts"]
    list_filter = ["status"]
    list_select_related = ["campaign", "parent_variant"]


@admin.register(models.GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "campaign", "status", "done", "total", "comparisons_created"]
    list_filter = ["status"]
    list_select_related = ["campaign"]


@admin.register(models.Prompt)
class PromptAdmin(RecountsParticipation):
    list_display = ["external_id", "campaign", "category", "text"]
    list_select_related = ["campaign"]
    list_filter = ["category"]
    search_fields = ["external_id", "text", "category"]


@admin.register(models.AnnotatorFlag)
class AnnotatorFlagAdmin(admin.ModelAdmin):
    list_display = ["annotator", "reason", "flagged_by", "created_at"]
    list_select_related = ["annotator", "flagged_by"]
    raw_id_fields = ["annotator", "flagged_by"]


@admin.register(models.Comparison)
class ComparisonAdmin(RecountsParticipation):
    """Marking a comparison as a gold item (a known answer) happens here."""

    list_display = ["pk", "campaign", "prompt", "variant_a", "variant_b", "gold_outcome"]
    list_filter = ["campaign", "gold_outcome"]
    list_select_related = ["campaign", "prompt", "variant_a", "variant_b"]
    fields = ["gold_outcome"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # comparisons come from generation or import, never by hand


@admin.register(models.QASet)
class QASetAdmin(admin.ModelAdmin):
    """Read-mostly: Q&A sets are started and reviewed on Prefloop's own pages."""

    list_display = ["pk", "collection", "variant", "status", "pairs_per_chunk", "chunks_done", "pair_count"]
    list_filter = ["status"]
    list_select_related = ["collection", "variant"]
    readonly_fields = ["collection", "variant", "pairs_per_chunk", "chunk_count", "chunks_done", "pair_count"]
    readonly_fields += ["dropped", "sample_output", "created_by", "status", "error", "started_at", "finished_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a set is written by its job


@admin.register(models.QAPair)
class QAPairAdmin(admin.ModelAdmin):
    list_display = ["pk", "qa_set", "document", "question", "status", "edited", "reviewed_by"]
    list_filter = ["status", "edited"]
    list_select_related = ["qa_set", "reviewed_by"]
    search_fields = ["question", "answer", "document"]
    # Reviews go through the set's page, which records who reviewed and whether the text was edited.
    readonly_fields = ["qa_set", "document", "chunk_index", "context", "question", "answer", "status", "edited"]
    readonly_fields += ["reviewed_by", "reviewed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # pairs come from a Q&A set's job


class ReviewResolutionInline(admin.StackedInline):
    """A review item's decision, read-only: decisions are made on the review page, which records who and when."""

    model = models.ReviewResolution
    fk_name = "answer_flag"
    extra = 0
    can_delete = False
    fields = ("status", "note", "resolved_by", "resolved_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SkipResolutionInline(ReviewResolutionInline):
    fk_name = "skipped_assignment"


@admin.register(models.AnswerFlag)
class AnswerFlagAdmin(admin.ModelAdmin):
    """Answers annotators flagged; reviewed on the review page (/review/)."""

    list_display = ["pk", "campaign", "candidate", "reason", "note", "annotator", "created_at", "review_status"]
    list_filter = ["reason", "assignment__comparison__campaign"]
    list_select_related = ["assignment__annotator", "assignment__comparison__campaign", "candidate", "resolution"]
    search_fields = ["note"]
    readonly_fields = ["assignment", "candidate", "reason", "note", "created_at"]
    inlines = [ReviewResolutionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # flags come from the rating page

    @admin.display(description="campaign")
    def campaign(self, flag: models.AnswerFlag) -> str:
        return flag.assignment.comparison.campaign.name

    @admin.display(description="annotator")
    def annotator(self, flag: models.AnswerFlag) -> str:
        return flag.assignment.annotator.get_username()

    @admin.display(description="review")
    def review_status(self, flag: models.AnswerFlag) -> str:
        resolution = getattr(flag, "resolution", None)
        return resolution.status if resolution else "open"


class SkippedFilter(admin.SimpleListFilter):
    title = "skipped"
    parameter_name = "skipped"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Skipped"), ("no", "Not skipped")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() in ("yes", "no"):
            return queryset.filter(skipped_at__isnull=self.value() == "no")
        return queryset


@admin.register(models.Assignment)
class AssignmentAdmin(RecountsParticipation):
    """Read-only: assignments are leased, completed and skipped by the rating engine. Skips and their reasons are
    listed here (filter "skipped") and reviewed on the review page."""

    campaign_id = "comparison__campaign_id"
    list_display = ["pk", "comparison", "annotator", "created_at", "completed_at", "skipped_at", "skip_reason"]
    list_filter = [SkippedFilter, "comparison__campaign"]
    list_select_related = ["annotator"]
    search_fields = ["skip_reason", "annotator__username"]
    fields = (
        ("comparison", "annotator", "left_is_a"),
        ("created_at", "lease_expires_at", "completed_at", "released"),
        ("skipped_at", "skip_reason"),
    )
    inlines = [SkipResolutionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CriterionChoiceInline(admin.TabularInline):
    model = models.CriterionChoice
    extra = 0
    can_delete = False
    fields = ("criterion", "outcome", "both_bad")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class BothBadFilter(admin.SimpleListFilter):
    title = "both bad"
    parameter_name = "both_bad"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Some criterion both bad")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(choices__both_bad=True).distinct() if self.value() == "yes" else queryset


@admin.register(models.Judgement)
class JudgementAdmin(admin.ModelAdmin):
    """Read-only: judgements with their per-criterion choices ("both bad" included)."""

    list_display = ["pk", "comparison", "annotator", "simulated", "created_at"]
    list_filter = [BothBadFilter, "simulated", "comparison__campaign"]
    list_select_related = ["annotator"]
    fields = ("assignment", "comparison", "annotator", "rationale", "time_on_task_ms", "simulated")
    inlines = [CriterionChoiceInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.Adjudication)
class AdjudicationAdmin(admin.ModelAdmin):
    """Final outcomes of disputed comparisons, recorded on the adjudication pages; read-only here (the audit
    trail), deletable by an admin to reopen a criterion."""

    list_display = ["comparison", "criterion", "outcome", "decided_by", "decided_at", "note"]
    list_filter = ["criterion", "outcome", "comparison__campaign"]
    list_select_related = ["decided_by"]
    fields = ("comparison", "criterion", "outcome", "note", "decided_by", "decided_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.ReviewResolution)
class ReviewResolutionAdmin(admin.ModelAdmin):
    """The review audit trail: each decision on a flagged answer or a skipped pair, who made it and when."""

    list_display = ["pk", "status", "answer_flag", "skipped_assignment", "resolved_by", "resolved_at", "note"]
    list_filter = ["status"]
    list_select_related = ["resolved_by", "answer_flag", "skipped_assignment"]
    fields = ("answer_flag", "skipped_assignment", "status", "note", "resolved_by", "resolved_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.GuidelineVersion)
class GuidelineVersionAdmin(admin.ModelAdmin):
    """Versions of a campaign's guidelines, added by editing them on the campaign page; read-only here."""

    list_display = ["campaign", "number", "author", "created_at"]
    list_filter = ["campaign"]
    list_select_related = ["campaign", "author"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.QualificationAttempt)
class QualificationAttemptAdmin(admin.ModelAdmin):
    """Annotators' attempts at campaigns' qualifications (the quality page sums them up); read-only here."""

    list_display = ["campaign", "annotator", "number", "correct", "total", "passed", "started_at", "finished_at"]
    list_filter = ["campaign", "passed"]
    list_select_related = ["campaign", "annotator"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
