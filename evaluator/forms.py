"""Forms validate; services write."""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import UploadedFile

from evaluator.models import Campaign, ModelVariant, Quantization, Selection
from evaluator.selectors import VoteFilters

SIDE_CHOICES = [("left", "Left"), ("tie", "Tie"), ("right", "Right")]


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    overlap = forms.IntegerField(min_value=1, max_value=50, initial=3, help_text="Judgements per comparison (k).")
    quota_per_annotator = forms.IntegerField(
        min_value=1, required=False, help_text="Most pairs one annotator rates in this campaign; empty: no limit."
    )
    gold_rate = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        required=False,
        initial=0.0,
        help_text="Share of pairs served from gold items (comparisons with a known answer).",
    )
    selection = forms.ChoiceField(
        choices=Selection.choices,
        required=False,
        initial=Selection.RANDOM,
        help_text="Active: the pairs with the fewest and most uncertain judgements first.",
    )

    def clean_gold_rate(self) -> float:
        return self.cleaned_data["gold_rate"] or 0.0

    def clean_selection(self) -> str:
        return self.cleaned_data["selection"] or Selection.RANDOM

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if Campaign.objects.filter(name=name).exists():
            raise forms.ValidationError("A campaign with this name already exists.")
        return name


class PromptImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (one object per line) or CSV with columns id, prompt, reference, context.")

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        limit = settings.PREFLOOP_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(f"The file is {upload.size:,} bytes; the limit is {limit:,}.")
        if not upload.name.lower().endswith((".jsonl", ".ndjson", ".csv")):
            raise forms.ValidationError("Upload a .jsonl or .csv file.")
        return upload


class VariantForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="Only admins and researchers ever see this name.")
    base_model = forms.CharField(max_length=500, help_text="Hugging Face model id or a local path.")
    adapter_path = forms.CharField(max_length=500, required=False, help_text="Optional PEFT adapter folder.")
    quantization = forms.ChoiceField(choices=Quantization.choices, initial=Quantization.NONE)
    temperature = forms.FloatField(min_value=0.0, max_value=2.0, initial=0.7, help_text="0 means greedy.")
    top_p = forms.FloatField(min_value=0.01, max_value=1.0, initial=0.95)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=96)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if ModelVariant.objects.filter(name=name).exists():
            raise forms.ValidationError("A variant with this name already exists.")
        return name

    def generation_settings(self) -> dict[str, Any]:
        return {key: self.cleaned_data[key] for key in ("temperature", "top_p", "max_new_tokens")}


class GenerationForm(forms.Form):
    variants = forms.ModelMultipleChoiceField(queryset=ModelVariant.objects.all(), widget=forms.CheckboxSelectMultiple)
    samples_per_prompt = forms.IntegerField(min_value=1, max_value=8, initial=1)

    def clean_variants(self) -> Any:
        variants = self.cleaned_data["variants"]
        if len(variants) < 2:
            raise forms.ValidationError("Choose at least two variants.")
        return variants


class RetrainForm(forms.Form):
    parent_variant = forms.ModelChoiceField(
        queryset=ModelVariant.objects.filter(adapter_path=""),
        help_text="The base variant the new adapter is trained on; the new variant is rated against it.",
    )
    beta = forms.FloatField(min_value=0.001, max_value=10.0, initial=0.1, label="DPO β")
    learning_rate = forms.FloatField(min_value=1e-7, max_value=1e-2, initial=5e-5)
    num_train_epochs = forms.FloatField(min_value=0.1, max_value=20, initial=1.0, label="Epochs")
    max_steps = forms.IntegerField(min_value=-1, initial=-1, help_text="-1: run all epochs.")
    per_device_train_batch_size = forms.IntegerField(min_value=1, max_value=64, initial=2, label="Batch size")
    max_length = forms.IntegerField(min_value=32, max_value=8192, initial=512)
    lora_r = forms.IntegerField(min_value=1, max_value=256, initial=16, label="LoRA r")
    lora_alpha = forms.IntegerField(min_value=1, max_value=512, initial=32, label="LoRA α")
    lora_dropout = forms.FloatField(min_value=0.0, max_value=0.9, initial=0.05, label="LoRA dropout")

    def clean_max_steps(self) -> int:
        steps = self.cleaned_data["max_steps"]
        if steps == 0:
            raise forms.ValidationError("Use -1 to run all epochs, or a positive number of steps.")
        return steps

    def job_config(self) -> dict[str, Any]:
        data = self.cleaned_data
        qlora = {key: data[key] for key in ("lora_r", "lora_alpha", "lora_dropout")}
        keys = ("beta", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "max_length")
        return {**{key: data[key] for key in keys}, "qlora": qlora}


class RatingForm(forms.Form):
    """One left/tie/right choice per rubric criterion and overall, plus an optional rationale."""

    rationale = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=5000)

    def __init__(self, *args: Any, campaign: Campaign, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rubric = [
            *campaign.criteria,
            {"slug": "overall", "label": "Overall", "definition": "All things considered, which answer is better?"},
        ]
        for criterion in self.rubric:
            self.fields[criterion["slug"]] = forms.ChoiceField(
                choices=SIDE_CHOICES,
                widget=forms.RadioSelect,
                label=criterion["label"],
                help_text=criterion["definition"],
            )
        self.order_fields([criterion["slug"] for criterion in self.rubric] + ["rationale"])

    def choices(self) -> dict[str, str]:
        return {criterion["slug"]: self.cleaned_data[criterion["slug"]] for criterion in self.rubric}


class StatisticsFilterForm(forms.Form):
    """The statistics page's filters, read from the query string."""

    VIEWS = [("judgement", "Every judgement"), ("prompt", "Prompt-level majority")]

    view = forms.ChoiceField(choices=VIEWS, required=False, initial="judgement")
    annotator_group = forms.ModelChoiceField(
        queryset=Group.objects.order_by("name"), required=False, to_field_name="name", empty_label="All annotators"
    )
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    exclude_flagged = forms.BooleanField(required=False, label="Exclude flagged annotators")
    include_gold = forms.BooleanField(required=False, label="Include gold items")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def vote_filters(self) -> VoteFilters:
        data = self.cleaned_data
        group = data.get("annotator_group")
        return VoteFilters(
            annotator_group=group.name if group else None,
            since=data.get("since"),
            until=data.get("until"),
            exclude_flagged=bool(data.get("exclude_flagged")),
            exclude_gold=not data.get("include_gold"),
        )

    def prompt_level(self) -> bool:
        return self.cleaned_data.get("view") == "prompt"
