"""Judge pages: admins define judges (a local model or an OpenAI-compatible endpoint, a template per criterion,
previewed on a real pair) and run them over a campaign; researchers read a judge's calibration against the humans.

Nothing here is served to annotators: judge verdicts never reach the rating pages."""

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evaluator.errors import ServiceError
from evaluator.forms import form_errors
from evaluator.models import DEFAULT_CRITERIA, FINISHED_STATUSES, OVERALL, Campaign, Judge, JudgeJob, Quantization
from evaluator.roles import ADMIN, RESEARCHER, AuthenticatedHttpRequest, role_required
from evaluator.selectors.judges import (
    judge_calibration,
    judge_jobs_recent,
    judges_with_counts,
    preview_pair,
)
from evaluator.services.judges import (
    OVERALL_DEFINITION,
    judge_create,
    judge_job_cancel,
    judge_job_queue,
    judge_job_resume,
    judge_template,
    judge_update,
)
from training.judging import GENERIC, REQUIRED_PLACEHOLDERS, default_template, judge_prompt, template_problems

# The templates a judge's form edits, in order: the overall preference, the five default criteria, then the one
# used for any other criterion of a campaign's own rubric.
TEMPLATE_SLUGS = [OVERALL, *(criterion["slug"] for criterion in DEFAULT_CRITERIA), GENERIC]
_LABELS = {OVERALL: "Overall preference", GENERIC: "Any other criterion"} | {
    criterion["slug"]: criterion["label"] for criterion in DEFAULT_CRITERIA
}
_DEFINITIONS = {OVERALL: OVERALL_DEFINITION, GENERIC: "(the criterion's definition from the campaign's rubric)"} | {
    criterion["slug"]: criterion["definition"] for criterion in DEFAULT_CRITERIA
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SETTING_FIELDS = (
    "name",
    "kind",
    "base_model",
    "adapter_path",
    "quantization",
    "batch_size",
    "base_url",
    "model_name",
    "api_key_env",
    "timeout_seconds",
    "max_retries",
    "concurrency",
    "max_new_tokens",
)


def _template_field(slug: str) -> str:
    return f"template_{slug if slug != GENERIC else 'generic'}"


class JudgeForm(forms.Form):
    name = forms.CharField(max_length=120)
    kind = forms.ChoiceField(choices=Judge.Kind.choices, widget=forms.RadioSelect, initial=Judge.Kind.ENDPOINT)
    base_model = forms.CharField(
        max_length=500, required=False, label="Base model", help_text="Local judge: a Hub id, a folder or a GGUF file."
    )
    adapter_path = forms.CharField(max_length=500, required=False, help_text="Local judge: an optional LoRA adapter.")
    quantization = forms.ChoiceField(choices=Quantization.choices, initial=Quantization.NONE)
    batch_size = forms.IntegerField(min_value=1, max_value=256, initial=8, help_text="Local judge: prompts at once.")
    base_url = forms.URLField(
        max_length=500,
        required=False,
        label="Base URL",
        assume_scheme="https",
        help_text="Endpoint: up to /v1, e.g. https://api.example.com/v1 (…/chat/completions is added).",
    )
    model_name = forms.CharField(max_length=200, required=False, help_text="Endpoint: the model to ask for.")
    api_key_env = forms.CharField(
        max_length=100,
        required=False,
        label="API key variable",
        help_text="Endpoint: the NAME of the worker's environment variable holding the key (e.g. JUDGE_API_KEY), "
        "never the key. Empty: no key is sent.",
    )
    timeout_seconds = forms.FloatField(min_value=0.1, max_value=3600, initial=60.0, label="Timeout (seconds)")
    max_retries = forms.IntegerField(min_value=0, max_value=10, initial=2, help_text="Tries after a passing failure.")
    concurrency = forms.IntegerField(min_value=1, max_value=64, initial=4, help_text="Endpoint: requests at once.")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=8192, initial=256, label="Max new tokens")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        placeholders = ", ".join("{" + name + "}" for name in REQUIRED_PLACEHOLDERS)
        for slug in TEMPLATE_SLUGS:
            self.fields[_template_field(slug)] = forms.CharField(
                widget=forms.Textarea(attrs={"rows": 12, "class": "mono", "aria-label": f"Template: {_LABELS[slug]}"}),
                initial=default_template(slug),
                label=f"Template: {_LABELS[slug]}",
                help_text=f"Must hold {placeholders}; may hold {{criterion}} and {{definition}}.",
                max_length=20_000,
            )

    def clean_api_key_env(self) -> str:
        name: str = self.cleaned_data["api_key_env"].strip()
        if name and not _ENV_NAME.fullmatch(name):
            raise forms.ValidationError(
                "Write the name of an environment variable (letters, digits and _), not the key itself."
            )
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for slug in TEMPLATE_SLUGS:
            field = _template_field(slug)
            for problem in template_problems(data.get(field, "") or ""):
                self.add_error(field, problem)
        if data.get("kind") == Judge.Kind.LOCAL and not data.get("base_model"):
            self.add_error("base_model", "A local judge needs a base model.")
        if data.get("kind") == Judge.Kind.ENDPOINT:
            for field in ("base_url", "model_name"):
                if not data.get(field):
                    self.add_error(field, "An endpoint judge needs this.")
        return data

    def judge_fields(self) -> dict[str, Any]:
        """The cleaned values as the judge's fields: its settings, and its templates by criterion slug."""
        data = self.cleaned_data
        templates = {slug: data[_template_field(slug)] for slug in TEMPLATE_SLUGS}
        return {**{name: data[name] for name in _SETTING_FIELDS}, "templates": templates}

    @classmethod
    def of(cls, judge: Judge) -> "JudgeForm":
        initial: dict[str, Any] = {name: getattr(judge, name) for name in _SETTING_FIELDS}
        initial.update({_template_field(slug): judge_template(judge=judge, criterion=slug) for slug in TEMPLATE_SLUGS})
        return cls(initial=initial)


class JudgeJobForm(forms.Form):
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.order_by("name"))
    criteria = forms.MultipleChoiceField(
        choices=[],
        widget=forms.CheckboxSelectMultiple,
        initial=[OVERALL],
        help_text="Each pair is asked twice per criterion (both orders).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slugs = {OVERALL: "Overall preference"} | {c["slug"]: c["label"] for c in DEFAULT_CRITERIA}
        for campaign in Campaign.objects.only("criteria"):
            for criterion in campaign.criteria:
                slugs.setdefault(criterion["slug"], criterion["label"])
        self.fields["criteria"].choices = list(slugs.items())  # type: ignore[attr-defined]


def _previews(form: JudgeForm) -> list[dict[str, Any]]:
    """Each template of the form filled in with a real pair (the newest), or none when there is no pair yet."""
    pair = preview_pair()
    if pair is None:
        return []
    values = form.cleaned_data if form.is_bound and hasattr(form, "cleaned_data") else {}
    previews = []
    for slug in TEMPLATE_SLUGS:
        field = _template_field(slug)
        template = values.get(field) if values else form[field].value()
        if not template or template_problems(template):
            continue
        text = judge_prompt(
            template,
            prompt=pair.prompt.text,
            answer_a=pair.candidate_a.text,
            answer_b=pair.candidate_b.text,
            criterion=_LABELS[slug],
            definition=_DEFINITIONS[slug],
        )
        previews.append({"slug": slug, "label": _LABELS[slug], "text": text})
    return previews


def _form_page(request: HttpRequest, form: JudgeForm, judge: Judge | None) -> HttpResponse:
    """The judge form, with its errors when refused (as the project's other refused forms come back: a 200 page)."""
    context: dict[str, Any] = {
        "form": form,
        "judge": judge,
        "previews": _previews(form),
        "pair": preview_pair(),
        "template_fields": [form[_template_field(slug)] for slug in TEMPLATE_SLUGS],
        "setting_fields": [form[name] for name in _SETTING_FIELDS if name not in ("name", "kind")],
    }
    if judge is not None:
        jobs = list(judge_jobs_recent(judge=judge))
        campaigns = {job.campaign_id: job.campaign for job in jobs}
        context.update({"jobs": jobs, "job_form": JudgeJobForm(), "campaigns": list(campaigns.values())})
    return render(request, "judges/form.html", context)


@require_GET
@role_required(ADMIN)
def judges(request: HttpRequest) -> HttpResponse:
    return render(request, "judges/index.html", {"judges": judges_with_counts(), "jobs": judge_jobs_recent()})


@require_http_methods(["GET", "POST"])
@role_required(ADMIN)
def judge_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The new-judge form; "Preview" shows the templates filled in with a real pair without saving."""
    if request.method == "GET":
        return _form_page(request, JudgeForm(), None)
    form = JudgeForm(request.POST)
    if not form.is_valid() or request.POST.get("action") == "preview":
        return _form_page(request, form, None)
    try:
        judge = judge_create(**form.judge_fields(), created_by=request.user)
    except ServiceError as error:
        form.add_error(None, str(error))
        return _form_page(request, form, None)
    messages.success(request, f"Judge “{judge.name}” saved.")
    return redirect("judge_detail", judge_id=judge.pk)


@require_http_methods(["GET", "POST"])
@role_required(ADMIN)
def judge_detail(request: AuthenticatedHttpRequest, judge_id: int) -> HttpResponse:
    """A judge's settings and templates (editable, previewed), its jobs, and the form that runs it."""
    judge = get_object_or_404(Judge, pk=judge_id)
    if request.method == "GET":
        form = JudgeForm.of(judge)
        form_page = _form_page(request, form, judge)
        return form_page
    form = JudgeForm(request.POST)
    if not form.is_valid() or request.POST.get("action") == "preview":
        return _form_page(request, form, judge)
    try:
        judge_update(judge=judge, **form.judge_fields())
    except ServiceError as error:
        form.add_error(None, str(error))
        return _form_page(request, form, judge)
    messages.success(request, f"Judge “{judge.name}” saved.")
    return redirect("judge_detail", judge_id=judge.pk)


@require_POST
@role_required(ADMIN)
def judge_job_create(request: AuthenticatedHttpRequest, judge_id: int) -> HttpResponse:
    judge = get_object_or_404(Judge, pk=judge_id)
    form = JudgeJobForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("judge_detail", judge_id=judge.pk)
    try:
        job = judge_job_queue(
            judge=judge,
            campaign=form.cleaned_data["campaign"],
            criteria=form.cleaned_data["criteria"],
            created_by=request.user,
        )
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("judge_detail", judge_id=judge.pk)
    messages.success(request, f"{job} queued: {job.total} pair × criterion units, each asked in both orders.")
    return redirect("judge_job_detail", job_id=job.pk)


@require_GET
@role_required(ADMIN)
def judge_job_detail(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    """A judge job's progress; an HTMX poll gets only the progress, and 286 (stop polling) once it has ended."""
    job = get_object_or_404(JudgeJob.objects.select_related("judge", "campaign", "created_by"), pk=job_id)
    running = job.status not in FINISHED_STATUSES
    context = {"job": job, "running": running}
    if request.htmx:
        return render(request, "judges/_job_progress.html", context, status=200 if running else 286)
    return render(request, "judges/job.html", context)


@require_POST
@role_required(ADMIN)
def judge_job_stop(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(JudgeJob, pk=job_id)
    if judge_job_cancel(job=job):
        messages.success(request, f"{job}: cancelled, or stopping after the pairs it is judging now.")
    else:
        messages.error(request, f"{job} has already ended.")
    return redirect("judge_job_detail", job_id=job.pk)


@require_POST
@role_required(ADMIN)
def judge_job_restart(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(JudgeJob, pk=job_id)
    if judge_job_resume(job=job):
        messages.success(request, f"{job} queued again: it judges the pairs still missing.")
    else:
        messages.error(request, f"{job} can be resumed only once it has failed or been cancelled.")
    return redirect("judge_job_detail", job_id=job.pk)


@require_GET
@role_required(RESEARCHER, ADMIN)
def judge_calibration_page(request: HttpRequest, campaign_id: int, judge_id: int) -> HttpResponse:
    """How far the judge agrees with the campaign's human judgements, criterion by criterion."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    judge = get_object_or_404(Judge, pk=judge_id)
    page = judge_calibration(judge=judge, campaign=campaign)
    return render(request, "judges/calibration.html", {"page": page, "campaign": campaign, "judge": judge})
