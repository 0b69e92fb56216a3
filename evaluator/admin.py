"""Django admin for inspecting rows; day-to-day work happens on Prefloop's own pages."""

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from evaluator import models
from evaluator.rubric import rubric_problems


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
    readonly_fields = ["state", "state_changed_at"]


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
class PromptAdmin(admin.ModelAdmin):
    list_display = ["external_id", "campaign", "text"]
    list_select_related = ["campaign"]
    search_fields = ["external_id", "text"]


@admin.register(models.AnnotatorFlag)
class AnnotatorFlagAdmin(admin.ModelAdmin):
    list_display = ["annotator", "reason", "flagged_by", "created_at"]
    list_select_related = ["annotator", "flagged_by"]
    raw_id_fields = ["annotator", "flagged_by"]


@admin.register(models.Comparison)
class ComparisonAdmin(admin.ModelAdmin):
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
