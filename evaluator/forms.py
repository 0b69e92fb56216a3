"""Forms validate; services write."""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet

from evaluator.models import (
    DEFAULT_CRITERIA,
    OVERALL,
    AnswerFlag,
    Campaign,
    CampaignState,
    Comparison,
    DocumentCollection,
    Judge,
    ModelExport,
    ModelVariant,
    QAPair,
    QASet,
    Quantization,
    ReviewStatus,
    Selection,
    TrainingJob,
    default_criteria,
)
from evaluator.parsing.prompts import MAX_PROMPT_CHARS
from evaluator.roles import ANNOTATOR
from evaluator.rubric import MAX_CRITERIA, rubric_parse, rubric_text
from evaluator.selectors.campaigns import VoteFilters
from evaluator.selectors.qualification import qualification_candidates, qualification_item_ids
from evaluator.selectors.review import ADJUDICATION_RULES, ANY_CRITERION, AdjudicationRule
from training.qa import DEFAULT_PAIRS_PER_CHUNK, MAX_PAIRS_PER_CHUNK
from training.trainer_common import OPTIMIZERS

SIDE_CHOICES = [("left", "Left"), ("tie", "Tie"), ("right", "Right")]
# Most optimizer steps a retrain may ask for: far past any useful run on the preferences one campaign collects,
# and within the job's integer progress columns and the trainer's schedulers.
MAX_TRAINING_STEPS = 100_000
BOTH_BAD_CHOICE = ("both_bad", "Both bad")


class GoldComparisonsField(forms.ModelMultipleChoiceField):
    """Gold comparisons to pick from, each named by its prompt, its id and its known answer."""

    def label_from_instance(self, obj: Comparison) -> str:
        return f"{obj.prompt.external_id} (pair #{obj.pk}, gold: {obj.get_gold_outcome_display()})"


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
    selection_judge = forms.ModelChoiceField(
        queryset=Judge.objects.order_by("name"),
        required=False,
        label="Selection judge",
        empty_label="None",
        help_text="Its overall verdicts steer the pairs served: under active selection, pairs it judged "
        "differently in the two orders, or against the votes so far, come first (docs/judges.md).",
    )
    judge_screening = forms.BooleanField(
        required=False,
        label="Screen pairs with the judge",
        help_text="Serve only the pairs the selection judge found close (a tie, or a different verdict once the "
        "answers swap sides); pairs it has not judged are not served. Statistics then cover those pairs only.",
    )
    guidelines = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        required=False,
        max_length=20000,
        help_text="Markdown shown to annotators in a collapsible panel above every pair.",
    )
    criteria = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        required=False,
        initial=rubric_text(DEFAULT_CRITERIA),
        label="Rubric",
        help_text=f"One criterion a line, “Name: one-line definition”, at most {MAX_CRITERIA}; the overall "
        "preference is always asked too. Empty: these five defaults. Fixed once the campaign exists.",
    )
    allow_both_bad = forms.BooleanField(
        required=False, label="Offer “both bad”", help_text="Stored as a tie, marked both bad."
    )
    show_reference = forms.BooleanField(
        required=False, label="Show reference answers", help_text="Each prompt's reference answer and context."
    )
    show_retrieved = forms.BooleanField(
        required=False,
        label="Show retrieved passages",
        help_text="The passages either answer's model retrieved, once, above both answers (never under one).",
    )
    priority = forms.IntegerField(
        min_value=-1000,
        max_value=1000,
        required=False,
        initial=0,
        help_text="Higher first: annotators get pairs from their highest-priority active campaign. Empty: 0.",
    )
    qualification_required = forms.BooleanField(
        required=False,
        label="Ask for a qualification",
        help_text="Annotators answer the gold comparisons picked below, and rate only once they pass.",
    )
    qualification_threshold = forms.FloatField(
        min_value=0.01,
        max_value=1.0,
        required=False,
        initial=0.8,
        label="Pass threshold",
        help_text="Share of qualification items to answer like the gold outcome (0.8: 4 of 5). Empty: as before.",
    )
    qualification_attempts = forms.IntegerField(
        min_value=1,
        max_value=20,
        required=False,
        initial=2,
        label="Attempts",
        help_text="Attempts each annotator gets. Empty: as before.",
    )
    qualification_items = GoldComparisonsField(
        queryset=Comparison.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Qualification items",
        help_text="Gold comparisons of this campaign (marked gold in the Django admin).",
    )

    def __init__(self, *args: Any, campaign: Campaign | None = None, **kwargs: Any) -> None:
        """`campaign`: the campaign being edited (its own name is no clash; the fields start from its values, and
        the rubric is left out: judgements refer to its criteria). A new campaign has no qualification settings
        yet: it has no gold comparisons to pick."""
        if campaign is not None:
            settings_ = [name for name in self.base_fields if name not in ("criteria", "qualification_items")]
            initial = {name: getattr(campaign, name) for name in settings_}
            initial["qualification_items"] = qualification_item_ids(campaign=campaign)
            kwargs.setdefault("initial", initial)
        super().__init__(*args, **kwargs)
        self.campaign = campaign
        if campaign is not None:
            del self.fields["criteria"]
            items = self.fields["qualification_items"]
            assert isinstance(items, forms.ModelMultipleChoiceField)  # for the type checker: declared above
            items.queryset = qualification_candidates(campaign=campaign)
        else:
            for name in (
                "qualification_required",
                "qualification_threshold",
                "qualification_attempts",
                "selection_judge",  # a new campaign has no pairs for a judge to have judged
                "judge_screening",
            ):
                del self.fields[name]
            del self.fields["qualification_items"]

    def clean_qualification_threshold(self) -> float:
        value = self.cleaned_data["qualification_threshold"]
        return value if value is not None else self.campaign.qualification_threshold if self.campaign else 0.8

    def clean_qualification_attempts(self) -> int:
        value = self.cleaned_data["qualification_attempts"]
        return value if value is not None else self.campaign.qualification_attempts if self.campaign else 2

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("qualification_required") and "qualification_items" in data and not data["qualification_items"]:
            self.add_error("qualification_items", "Pick at least one gold comparison for the qualification.")
        if data.get("judge_screening") and not data.get("selection_judge"):
            self.add_error("judge_screening", "Choose the selection judge that screens the pairs.")
        return data

    def clean_gold_rate(self) -> float:
        return self.cleaned_data["gold_rate"] or 0.0

    def clean_priority(self) -> int:
        return self.cleaned_data["priority"] or 0

    def clean_selection(self) -> str:
        return self.cleaned_data["selection"] or Selection.RANDOM

    def clean_criteria(self) -> list[dict[str, str]]:
        text = self.cleaned_data["criteria"]
        if not text.strip():
            return default_criteria()
        criteria, problems = rubric_parse(text)
        if problems:
            raise forms.ValidationError(problems)
        return criteria

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        others = Campaign.objects.exclude(pk=self.campaign.pk) if self.campaign else Campaign.objects.all()
        if others.filter(name=name).exists():
            raise forms.ValidationError("A campaign with this name already exists.")
        return name


class CampaignStateForm(forms.Form):
    """Move a campaign along its lifecycle; whether the move is allowed from its state is the service's rule."""

    state = forms.ChoiceField(choices=CampaignState.choices)


class CampaignMemberForm(forms.Form):
    """Assign one annotator (by username) or one group (by name) to a campaign."""

    username = forms.CharField(max_length=150, required=False, label="Annotator's username")
    group = forms.CharField(max_length=150, required=False, label="or a group")

    def clean_username(self) -> Any:
        username = self.cleaned_data["username"].strip()
        if not username:
            return None
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError(f"There is no user named “{username}”.")
        if not user.is_active:
            raise forms.ValidationError(f"“{username}” is deactivated; reactivate the account first.")
        if not user.is_superuser and not user.groups.filter(name=ANNOTATOR).exists():
            raise forms.ValidationError(
                f"“{username}” does not have the annotator role; give it on Accounts and roles first."
            )
        return user

    def clean_group(self) -> Group | None:
        name = self.cleaned_data["group"].strip()
        if not name:
            return None
        group = Group.objects.filter(name=name).first()
        if group is None:
            raise forms.ValidationError(f"There is no group named “{name}”.")
        return group

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        if bool(data.get("username")) == bool(data.get("group")):
            raise forms.ValidationError("Give either an annotator's username or a group name (one of the two).")
        return data


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


def choosable_variants() -> "QuerySet[ModelVariant]":
    """The variants a form offers to choose from: archived ones are kept with their data but offered nowhere."""
    return ModelVariant.objects.filter(archived_at__isnull=True)


class GenerationSettingsForm(forms.Form):
    """How a variant answers (training.generation.settings.GenerationSettings); editable until it has answers."""

    temperature = forms.FloatField(min_value=0.0, max_value=2.0, initial=0.7, help_text="0 means greedy.")
    top_p = forms.FloatField(min_value=0.01, max_value=1.0, initial=0.95)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=96)
    samples_per_prompt = forms.IntegerField(
        min_value=1, max_value=8, initial=1, required=False, help_text="Answers to each prompt; empty: 1."
    )

    def generation_settings(self) -> dict[str, Any]:
        settings_ = {key: self.cleaned_data[key] for key in ("temperature", "top_p", "max_new_tokens")}
        return {**settings_, "samples_per_prompt": self.cleaned_data["samples_per_prompt"] or 1}


class VariantForm(GenerationSettingsForm):
    field_order = [
        "name",
        "base_model",
        "adapter_path",
        "quantization",
        "temperature",
        "top_p",
        "max_new_tokens",
        "samples_per_prompt",
    ]

    name = forms.CharField(max_length=120, help_text="Only admins and researchers ever see this name.")
    base_model = forms.CharField(
        max_length=500,
        help_text="A Hugging Face model id, a local model folder, a .gguf file, or a shipped model such as "
        "smollm2-135m-instruct.",
    )
    adapter_path = forms.CharField(max_length=500, required=False, help_text="Optional PEFT adapter folder.")
    quantization = forms.ChoiceField(choices=Quantization.choices, initial=Quantization.NONE)
    collection = forms.ModelChoiceField(
        queryset=DocumentCollection.objects.all(),
        required=False,
        label="Retrieval collection",
        help_text="RAG: add passages from this collection to every prompt.",
    )
    retrieval_top_k = forms.IntegerField(
        min_value=1, max_value=50, initial=3, required=False, label="Passages (top k)", help_text="Empty: 3."
    )
    retrieval_template = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="With {context} and {question}; empty: the built-in template.",
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if ModelVariant.objects.filter(name=name).exists():
            raise forms.ValidationError("A variant with this name already exists.")
        return name

    def clean_base_model(self) -> str:
        from training.models import ModelSpecError, check_model

        base_model = str(self.cleaned_data["base_model"]).strip()
        try:
            check_model(base_model)  # cheap: a header or a config is read, nothing is loaded
        except ModelSpecError as error:
            raise forms.ValidationError(str(error)) from None
        return base_model

    def clean_adapter_path(self) -> str:
        from training.models import ModelSpecError, check_adapter

        adapter_path = str(self.cleaned_data["adapter_path"]).strip()
        if adapter_path:
            try:
                check_adapter(adapter_path)
            except ModelSpecError as error:
                raise forms.ValidationError(str(error)) from None
        return adapter_path


class VariantRenameForm(forms.Form):
    name = forms.CharField(max_length=120, label="New name", help_text="Only admins and researchers see it.")

    def __init__(self, *args: Any, variant: ModelVariant, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"name": variant.name})
        super().__init__(*args, **kwargs)
        self.variant = variant

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if ModelVariant.objects.filter(name=name).exclude(pk=self.variant.pk).exists():
            raise forms.ValidationError(f"A variant named “{name}” already exists.")
        return name


class VariantArchiveForm(forms.Form):
    """Archive or unarchive, from the button pressed."""

    action = forms.ChoiceField(choices=[("archive", "Archive"), ("unarchive", "Unarchive")])


class ModelExportForm(forms.Form):
    """An export of a variant; which outtype fits which kind is the service's rule (model_export_queue)."""

    kind = forms.ChoiceField(choices=ModelExport.Kind.choices)
    outtype = forms.ChoiceField(choices=[("", "—"), *ModelExport.Outtype.choices], required=False)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files from one input; each is checked as a FileField would check one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        files = data if isinstance(data, list | tuple) else [data]
        return [super(MultipleFileField, self).clean(item, initial) for item in files]


class CollectionForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    embedding_model = forms.CharField(
        max_length=300,
        initial="all-MiniLM-L6-v2",
        help_text="A sentence-transformers model name or path; the default works offline.",
    )
    chunk_size = forms.IntegerField(min_value=50, max_value=20000, initial=800, help_text="Characters per chunk.")
    chunk_overlap = forms.IntegerField(min_value=0, max_value=19999, initial=120, help_text="Characters shared.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        size, overlap = data.get("chunk_size"), data.get("chunk_overlap")
        if size is not None and overlap is not None and overlap >= size:
            self.add_error("chunk_overlap", "Must be smaller than the chunk size.")
        return data


class DocumentUploadForm(forms.Form):
    # The form metaclass moves declared fields into base_fields: this never shadows BaseForm.files at run time.
    files = MultipleFileField(  # type: ignore[assignment]  # django-stubs types declared fields as class attributes
        label="Documents", help_text="Text, markdown or PDF; several at once."
    )

    def clean_files(self) -> list[UploadedFile]:
        from training.rag import DOCUMENT_SUFFIXES

        files = self.cleaned_data["files"]
        for upload in files:
            if upload.size > settings.PREFLOOP_MAX_UPLOAD_BYTES:
                raise forms.ValidationError(f"{upload.name} is larger than {settings.PREFLOOP_MAX_UPLOAD_BYTES} bytes.")
            if not str(upload.name).lower().endswith(DOCUMENT_SUFFIXES):
                raise forms.ValidationError(
                    f"{upload.name}: not a {', '.join(DOCUMENT_SUFFIXES)} file. Nothing was added."
                )
        return files


class GenerationForm(forms.Form):
    variants = forms.ModelMultipleChoiceField(queryset=choosable_variants(), widget=forms.CheckboxSelectMultiple)
    samples_per_prompt = forms.IntegerField(
        min_value=1, max_value=8, required=False, help_text="Empty: each variant's own samples per prompt."
    )

    def clean_variants(self) -> Any:
        variants = self.cleaned_data["variants"]
        if len(variants) < 2:
            raise forms.ValidationError("Choose at least two variants.")
        return variants


# The trainer settings every method takes: the retrain page's "Schedule" group, and the job config's keys.
SCHEDULE_FIELDS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "optim",
    "seed",
    "save_steps",
    "report_to",
)


class RetrainForm(forms.Form):
    """A retrain job: method, data (source campaigns, selection rules, held-out prompts) and hyperparameters.

    The defaults are the documented QLoRA recipe: NF4 with double quantisation, paged 8-bit AdamW, LoRA r 16,
    α 32, dropout 0.05 on all linear layers, DPO β 0.1.
    """

    method = forms.ChoiceField(choices=TrainingJob.Method.choices, initial=TrainingJob.Method.DPO)
    parent_variant = forms.ModelChoiceField(
        queryset=choosable_variants(),
        help_text="The variant the new adapter improves on; the new variant is rated blind against it.",
    )
    source_campaigns = forms.ModelMultipleChoiceField(
        queryset=Campaign.objects.all(), required=False, help_text="Where the preferences come from; empty: this one."
    )
    criterion = forms.ChoiceField(
        choices=[(OVERALL, "Overall")],
        initial=OVERALL,
        help_text="Which choice decides a pair: the overall preference or one of the campaign's criteria.",
    )
    min_agreement = forms.FloatField(
        min_value=0.01, max_value=1.0, required=False, help_text="Pool each pair's judgements; empty: one each."
    )
    include_gold = forms.BooleanField(required=False, initial=False, label="Include gold items")
    exclude_flagged = forms.BooleanField(required=False, initial=True, label="Leave out flagged annotators")
    prefer_adjudicated = forms.BooleanField(
        required=False,
        initial=False,
        label="Prefer adjudicated outcomes",
        help_text="Where a researcher adjudicated a pair, its final outcome decides it instead of the judgements.",
    )
    held_out_share = forms.FloatField(
        min_value=0.0, max_value=0.9, initial=0.2, help_text="Share of prompts kept out of training for the new round."
    )
    held_out_ids = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Held-out prompt ids",
        help_text="One id a line; overrides the share.",
    )
    sft_source = forms.ChoiceField(
        choices=[("chosen", "Chosen answers"), ("qa", "Q&A file")],
        initial="chosen",
        label="SFT data",
    )
    qa_file = forms.FileField(required=False, label="Q&A file (JSONL)", help_text='{"question": …, "answer": …}')
    qa_set = forms.ModelChoiceField(
        queryset=QASet.objects.filter(pairs__status=QAPair.Status.APPROVED).distinct(),
        required=False,
        label="or a Q&A set",
        help_text="Its approved pairs (Manage → Q&A sets).",
    )
    load_in_4bit = forms.BooleanField(required=False, initial=True, label="4-bit base (QLoRA)")
    double_quant = forms.BooleanField(required=False, initial=True, label="Double quantisation")
    beta = forms.FloatField(min_value=0.001, max_value=10.0, initial=0.1, label="DPO β")
    learning_rate = forms.FloatField(min_value=1e-7, max_value=1e-2, initial=5e-5)
    num_train_epochs = forms.FloatField(min_value=0.1, max_value=20, initial=1.0, label="Epochs")
    max_steps = forms.IntegerField(
        min_value=-1, max_value=MAX_TRAINING_STEPS, initial=-1, help_text="-1: run all epochs."
    )
    per_device_train_batch_size = forms.IntegerField(min_value=1, max_value=64, initial=2, label="Batch size")
    gradient_accumulation_steps = forms.IntegerField(min_value=1, max_value=256, initial=1)
    max_length = forms.IntegerField(min_value=32, max_value=8192, initial=512)
    optim = forms.ChoiceField(choices=[(name, name) for name in OPTIMIZERS], initial="paged_adamw_8bit")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=42)
    report_to = forms.ChoiceField(
        choices=[("none", "Job page only"), ("tensorboard", "TensorBoard"), ("mlflow", "MLflow")],
        initial="none",
        label="Also log to",
        help_text="MLflow needs the mlflow package and MLFLOW_TRACKING_URI on the workers.",
    )
    save_steps = forms.IntegerField(
        min_value=1, max_value=100_000, initial=25, label="Checkpoint every", help_text="Steps between checkpoints."
    )
    lora_r = forms.IntegerField(min_value=1, max_value=256, initial=16, label="LoRA r")
    lora_alpha = forms.IntegerField(min_value=1, max_value=512, initial=32, label="LoRA α")
    lora_dropout = forms.FloatField(min_value=0.0, max_value=0.9, initial=0.05, label="LoRA dropout")
    target_modules = forms.CharField(
        initial="all-linear", max_length=500, help_text="all-linear, or names, comma-separated."
    )

    # How the retrain page groups the fields: (legend, what the group decides, field names); every field once.
    FIELDSETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
        ("Method and parent", "What to train, and from which variant.", ("method", "parent_variant")),
        (
            "Data selection",
            "Which judgements become preference pairs, and which prompts stay out for the new round.",
            (
                "source_campaigns",
                "criterion",
                "min_agreement",
                "include_gold",
                "exclude_flagged",
                "prefer_adjudicated",
                "held_out_share",
                "held_out_ids",
            ),
        ),
        ("SFT data", "Used by SFT only: what the model is taught to answer.", ("sft_source", "qa_file", "qa_set")),
        (
            "QLoRA",
            "How the base is loaded and the adapter shaped.",
            ("load_in_4bit", "double_quant", "lora_r", "lora_alpha", "lora_dropout", "target_modules"),
        ),
        ("DPO", "Used by DPO only.", ("beta",)),
        (
            "Schedule",
            "Optimiser, steps and checkpoints.",
            SCHEDULE_FIELDS,
        ),
    )

    def fieldsets(self) -> list[tuple[str, str, list[forms.BoundField]]]:
        """The bound fields in FIELDSETS' groups, for the retrain page."""
        return [(legend, note, [self[name] for name in names]) for legend, note, names in self.FIELDSETS]

    def __init__(self, *args: Any, campaign: Campaign | None = None, **kwargs: Any) -> None:
        """`campaign`: the campaign the job is queued from; its rubric gives the criteria to choose from."""
        super().__init__(*args, **kwargs)
        self.campaign = campaign
        if campaign is not None:
            labels = {criterion["slug"]: criterion.get("label") or criterion["slug"] for criterion in campaign.criteria}
            self.fields["criterion"].choices = [(OVERALL, "Overall"), *labels.items()]  # type: ignore[attr-defined]

    def clean_max_steps(self) -> int:
        steps = self.cleaned_data["max_steps"]
        if steps == 0:
            raise forms.ValidationError("Use -1 to run all epochs, or a positive number of steps.")
        return steps

    def clean_target_modules(self) -> str | list[str]:
        """The string all-linear, or a list of module names (never one bare name: PEFT reads a string as a regular
        expression that must match a module's full dotted name)."""
        from training.lora_targets import ALL_LINEAR

        names = [name.strip() for name in self.cleaned_data["target_modules"].split(",") if name.strip()]
        if not names:
            raise forms.ValidationError(f"Give {ALL_LINEAR} or module names, comma-separated.")
        if names == [ALL_LINEAR]:
            return ALL_LINEAR
        if ALL_LINEAR in names:
            raise forms.ValidationError(f"{ALL_LINEAR} stands alone: it already names every linear layer.")
        return names

    def clean_held_out_ids(self) -> list[str]:
        return sorted({line.strip() for line in self.cleaned_data["held_out_ids"].splitlines() if line.strip()})

    def clean_qa_file(self) -> UploadedFile | None:
        upload = self.cleaned_data["qa_file"]
        if upload and upload.size > settings.PREFLOOP_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is larger than {settings.PREFLOOP_MAX_UPLOAD_BYTES} bytes.")
        return upload

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("method") == TrainingJob.Method.SFT and data.get("sft_source") == "qa":
            if not data.get("qa_file") and not data.get("qa_set"):
                self.add_error("qa_file", "Choose the Q&A file to train on.")
            elif data.get("qa_file") and data.get("qa_set"):
                self.add_error("qa_set", "Choose a Q&A file or a Q&A set, not both.")
        self._check_criterion_in_sources(data)
        self._check_target_modules_in_base(data)
        return data

    def _check_criterion_in_sources(self, data: dict[str, Any]) -> None:
        criterion = data.get("criterion")
        sources = list(data.get("source_campaigns") or ([self.campaign] if self.campaign else []))
        lacking = [source.name for source in sources if criterion and criterion not in source.criterion_slugs]
        if lacking:
            names = ", ".join(f"“{name}”" for name in lacking)
            verb = "has" if len(lacking) == 1 else "have"
            self.add_error("criterion", f"{names} {verb} no criterion “{criterion}”: choose one every source rates.")

    def _check_target_modules_in_base(self, data: dict[str, Any]) -> None:
        """The parent's base model must have the target modules: checked on its config, nothing loaded, so a bad
        name is refused here rather than by PEFT in the worker once the model is in memory."""
        from training.lora_targets import check_target_modules
        from training.models import ModelSpecError

        parent, targets = data.get("parent_variant"), data.get("target_modules")
        if parent is None or not targets:
            return
        try:
            check_target_modules(parent.base_model, targets)
        except ModelSpecError as error:
            self.add_error("parent_variant", f"Its base model cannot be read: {error}")
        except ValueError as error:
            self.add_error("target_modules", str(error))

    def training(self) -> dict[str, Any]:
        """The training library's config values (training.dpo.DPOJobConfig / training.sft.SFTJobConfig)."""
        data = self.cleaned_data
        qlora = {
            "load_in_4bit": data["load_in_4bit"],
            "double_quant": data["double_quant"],
            "lora_r": data["lora_r"],
            "lora_alpha": data["lora_alpha"],
            "lora_dropout": data["lora_dropout"],
            "target_modules": data["target_modules"],
        }
        keys = list(SCHEDULE_FIELDS)
        if data["method"] == TrainingJob.Method.DPO:
            keys.insert(0, "beta")
        return {**{key: data[key] for key in keys}, "qlora": qlora}

    def selection(self) -> dict[str, Any]:
        """The preference selection rules (evaluator.selectors.dpo_dataset.SelectionRules)."""
        data = self.cleaned_data
        keys = ("criterion", "min_agreement", "include_gold", "exclude_flagged", "prefer_adjudicated")
        return {key: data[key] for key in keys}


class RatingForm(forms.Form):
    """One left/tie/right choice (or "both bad" where the campaign offers it) per rubric criterion and overall,
    plus an optional rationale."""

    rationale = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=5000)

    def __init__(self, *args: Any, campaign: Campaign, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rubric = [
            *campaign.criteria,
            {"slug": "overall", "label": "Overall", "definition": "All things considered, which answer is better?"},
        ]
        self.allow_both_bad = campaign.allow_both_bad
        sides = [*SIDE_CHOICES, BOTH_BAD_CHOICE] if campaign.allow_both_bad else SIDE_CHOICES
        for criterion in self.rubric:
            # Criteria edited as raw JSON (the Django admin, older rows) may lack a label or definition.
            self.fields[criterion["slug"]] = forms.ChoiceField(
                choices=sides,
                widget=forms.RadioSelect,
                label=criterion.get("label") or criterion["slug"],
                help_text=criterion.get("definition", ""),
            )
        self.order_fields([criterion["slug"] for criterion in self.rubric] + ["rationale"])

    def choices(self) -> dict[str, str]:
        return {criterion["slug"]: self.cleaned_data[criterion["slug"]] for criterion in self.rubric}


class SkipForm(forms.Form):
    reason = forms.CharField(max_length=500, label="Why skip this pair?")


class AnswerFlagForm(forms.Form):
    side = forms.ChoiceField(choices=[("left", "Left answer"), ("right", "Right answer")])
    reason = forms.ChoiceField(choices=AnswerFlag.Reason.choices)
    note = forms.CharField(max_length=1000, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("reason") == AnswerFlag.Reason.OTHER and not data.get("note", "").strip():
            self.add_error("note", "Say what is wrong with the answer.")
        return data


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
    include_simulated = forms.BooleanField(required=False, label="Include simulated judgements")
    adjudicated = forms.BooleanField(required=False, label="Adjudicated outcomes where available")
    guideline_version = forms.IntegerField(
        required=False,
        min_value=1,
        label="Guidelines version",
        help_text="Only judgements made under this version of the guidelines. Empty: all.",
    )
    category = forms.CharField(
        required=False,
        max_length=64,
        label="Prompt category",
        help_text="Only prompts tagged with this category. Empty: all.",
    )
    exclude_outliers = forms.BooleanField(
        required=False,
        label="Exclude outlier annotators",
        help_text="Leave out annotators whose votes the others' ratings explain far worse than chance would.",
    )

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
            include_simulated=bool(data.get("include_simulated")),
            adjudicated=bool(data.get("adjudicated")),
            guideline_version=data.get("guideline_version"),
            category=data.get("category") or None,
            exclude_outliers=bool(data.get("exclude_outliers")),
        )

    def prompt_level(self) -> bool:
        return self.cleaned_data.get("view") == "prompt"


class AnnotatorFlagForm(forms.Form):
    reason = forms.CharField(max_length=1000, help_text="Why researchers may want to leave this annotator out.")


ROLE_CHOICES = [("annotator", "Annotator"), ("researcher", "Researcher"), ("admin", "Admin")]


class AccountCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=ROLE_CHOICES)
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput,
        help_text="Empty: a generated one. Either way it is shown once, after the account is made.",
    )

    def clean_username(self) -> str:
        username = self.cleaned_data["username"].strip()
        validate_username = get_user_model().username_validator
        validate_username(username)
        return username

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("password") and data.get("username"):
            try:
                password_validation.validate_password(data["password"], get_user_model()(username=data["username"]))
            except forms.ValidationError as error:
                self.add_error("password", error)
        return data


class AccountRolesForm(forms.Form):
    roles = forms.MultipleChoiceField(choices=ROLE_CHOICES, widget=forms.CheckboxSelectMultiple)


def form_errors(form: forms.Form) -> str:
    return "; ".join(
        f"{form[name].label if name in form.fields else 'Form'}: {' '.join(map(str, errors))}"
        for name, errors in form.errors.items()
    )


class QASetForm(forms.Form):
    collection = forms.ModelChoiceField(
        queryset=DocumentCollection.objects.all(), help_text="An indexed collection: each chunk is one request."
    )
    variant = forms.ModelChoiceField(
        queryset=choosable_variants(),
        label="Model",
        help_text="The variant whose base model and adapter write the pairs, decoding greedily.",
    )
    pairs_per_chunk = forms.IntegerField(
        min_value=1, max_value=MAX_PAIRS_PER_CHUNK, initial=DEFAULT_PAIRS_PER_CHUNK, label="Pairs per chunk"
    )


class QAPairReviewForm(forms.Form):
    """A reviewer's question, answer and decision; the decision comes from the button pressed."""

    question = forms.CharField(max_length=MAX_PROMPT_CHARS, widget=forms.Textarea(attrs={"rows": 2}))
    answer = forms.CharField(max_length=MAX_PROMPT_CHARS, widget=forms.Textarea(attrs={"rows": 3}))
    status = forms.ChoiceField(choices=QAPair.Status.choices)


class QAToCampaignForm(forms.Form):
    campaign = forms.ModelChoiceField(
        queryset=Campaign.objects.all(), help_text="Each approved pair becomes a prompt with a reference answer."
    )


class ReviewFilterForm(forms.Form):
    """The review page's filters, read from the query string."""

    campaign = forms.ModelChoiceField(queryset=Campaign.objects.order_by("name"), required=False, empty_label="All")
    kind = forms.ChoiceField(
        choices=[("", "Flags and skips"), ("flag", "Flagged answers"), ("skip", "Skipped pairs")], required=False
    )
    reason = forms.ChoiceField(
        choices=[("", "Any reason"), *AnswerFlag.Reason.choices], required=False, label="Flag reason"
    )
    state = forms.ChoiceField(
        choices=[("open", "Open"), ("resolved", "Resolved"), ("dismissed", "Dismissed"), ("all", "All")],
        required=False,
        label="Status",
    )


class ReviewDecisionForm(forms.Form):
    """A decision on a flagged answer or a skipped pair; the decision comes from the button pressed."""

    status = forms.ChoiceField(choices=ReviewStatus.choices)
    note = forms.CharField(max_length=1000, help_text="What was done, or why there is nothing to do.")


class AdjudicationQueueForm(forms.Form):
    """The adjudication queue's rule, criterion and which comparisons to show, read from the query string."""

    rule = forms.ChoiceField(choices=list(ADJUDICATION_RULES.items()), required=False, label="Disputed when")
    criterion = forms.ChoiceField(required=False)
    shown = forms.ChoiceField(
        choices=[("pending", "Awaiting adjudication"), ("adjudicated", "Adjudicated"), ("all", "All disputed")],
        required=False,
        label="Show",
    )

    def __init__(self, *args: Any, campaign: Campaign, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        labels = [(c["slug"], c.get("label") or c["slug"]) for c in campaign.criteria]
        criterion = self.fields["criterion"]
        assert isinstance(criterion, forms.ChoiceField)  # declared above
        criterion.choices = [(OVERALL, "Overall"), *labels, (ANY_CRITERION, "Any criterion")]

    def adjudication_rule(self) -> AdjudicationRule:
        data = self.cleaned_data
        return AdjudicationRule(rule=data.get("rule") or "any", criterion=data.get("criterion") or OVERALL)


class AdjudicationForm(forms.Form):
    """A final outcome for each criterion not adjudicated yet (each may be left for later), and a note."""

    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=2000)

    def __init__(
        self, *args: Any, campaign: Campaign, names: tuple[str, str], decided: Any = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        rubric = [*campaign.criteria, {"slug": OVERALL, "label": "Overall"}]
        outcomes = [("", "Leave open"), ("a", f"a: {names[0]}"), ("tie", "Tie"), ("b", f"b: {names[1]}")]
        self.criteria = [criterion for criterion in rubric if criterion["slug"] not in decided]
        for criterion in self.criteria:
            self.fields[criterion["slug"]] = forms.ChoiceField(
                choices=outcomes, required=False, label=criterion.get("label") or criterion["slug"]
            )
        self.order_fields([criterion["slug"] for criterion in self.criteria] + ["note"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.outcomes():
            raise forms.ValidationError("Choose an outcome for at least one criterion.")
        return data

    def outcomes(self) -> dict[str, str]:
        return {c["slug"]: self.cleaned_data[c["slug"]] for c in self.criteria if self.cleaned_data.get(c["slug"])}


class QualificationAnswerForm(forms.Form):
    """A qualification item's one question: the overall preference (left, tie or right)."""

    overall = forms.ChoiceField(
        choices=SIDE_CHOICES,
        widget=forms.RadioSelect,
        label="Overall",
        help_text="All things considered, which answer is better?",
    )
