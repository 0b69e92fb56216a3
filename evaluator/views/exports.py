"""Downloads of a campaign's judgements, statistics and DPO dataset, streamed. Researchers and admins only.

Filters come from the query string, with the statistics page's names (annotator_group, since, until,
exclude_flagged, include_gold); see docs/formats.md for the files.
"""

import json
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.utils.text import slugify

from evaluator.forms import StatisticsFilterForm
from evaluator.models import Campaign
from evaluator.roles import ADMIN, RESEARCHER, role_required
from evaluator.selectors.campaigns import VoteFilters
from evaluator.selectors.dpo_dataset import SelectionRules, dpo_metadata, preference_records_select
from evaluator.selectors.exports import (
    CONTENT_TYPES,
    RAW_FORMATS,
    SUMMARY_FORMATS,
    SUMMARY_TABLES,
    judgements_export,
    summary_export,
)
from evaluator.selectors.judges import judges_of_campaign

# The DPO download's metadata (dpo_metadata) as one line of JSON.
METADATA_HEADER = "Prefloop-Dataset-Metadata"


def _filters(request: HttpRequest) -> VoteFilters | HttpResponse:
    form = StatisticsFilterForm(request.GET)
    if not form.is_valid():
        problems = "; ".join(f"{name}: {' '.join(map(str, errors))}" for name, errors in form.errors.items())
        return HttpResponseBadRequest(f"Bad filter: {problems}", content_type="text/plain; charset=utf-8")
    return form.vote_filters()


def _download(chunks: Iterator[bytes], campaign: Campaign, stem: str, extension: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type=CONTENT_TYPES[extension])
    filename = f"{slugify(campaign.name) or 'campaign'}-{stem}.{extension}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _bad_format(file_format: str, allowed: tuple[str, ...]) -> HttpResponse:
    return HttpResponseBadRequest(
        f"Unknown format {file_format!r}: use one of {', '.join(allowed)}.", content_type="text/plain; charset=utf-8"
    )


@role_required(RESEARCHER, ADMIN)
def judgements_download(request: HttpRequest, campaign_id: int, file_format: str) -> HttpResponseBase:
    """Every judgement × criterion as CSV, JSONL or Parquet (gold items only with include_gold=on)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    if file_format not in RAW_FORMATS:
        return _bad_format(file_format, RAW_FORMATS)
    filters = _filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    chunks = judgements_export(campaign=campaign, file_format=file_format, filters=filters)
    return _download(chunks, campaign, "judgements", file_format)


@role_required(RESEARCHER, ADMIN)
def summary_download(request: HttpRequest, campaign_id: int, file_format: str) -> HttpResponseBase:
    """The statistics: JSON (everything) or CSV (the table named by ?table=, pairs by default)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    if file_format not in SUMMARY_FORMATS:
        return _bad_format(file_format, SUMMARY_FORMATS)
    table = request.GET.get("table", "pairs")
    if table not in SUMMARY_TABLES:
        return HttpResponseBadRequest(
            f"Unknown table {table!r}: use one of {', '.join(SUMMARY_TABLES)}.",
            content_type="text/plain; charset=utf-8",
        )
    filters = _filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    chunks = summary_export(campaign=campaign, file_format=file_format, table=table, filters=filters)
    stem = "statistics" if file_format == "json" else f"statistics-{table}"
    return _download(chunks, campaign, stem, file_format)


def _flag(request: HttpRequest, name: str) -> bool:
    """A yes/no query parameter: on, true or 1 is yes; absent or anything else, no."""
    return request.GET.get(name, "").lower() in ("on", "true", "1")


@role_required(RESEARCHER, ADMIN)
def dpo_download(request: HttpRequest, campaign_id: int) -> HttpResponseBase:
    """The DPO preference dataset (TRL JSONL) under the default selection rules, or ?criterion=,
    ?min_agreement=, ?prefer_adjudicated=on and ?judge=<id> (one of the campaign's judges; off by default) when
    given. The dataset's metadata rides along in the Prefloop-Dataset-Metadata header; ?metadata=on returns it
    alone, as JSON (docs/formats.md)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    criterion = request.GET.get("criterion") or SelectionRules.criterion
    if criterion not in campaign.criterion_slugs:
        return HttpResponseBadRequest(f"Unknown criterion {criterion!r}.", content_type="text/plain; charset=utf-8")
    judge_id = _judge_id(request, campaign)
    if isinstance(judge_id, HttpResponse):
        return judge_id
    try:
        raw = request.GET.get("min_agreement")
        rules = SelectionRules(
            criterion=criterion,
            min_agreement=float(raw) if raw else None,
            prefer_adjudicated=_flag(request, "prefer_adjudicated"),
            judge_id=judge_id,
        )
    except ValueError as error:
        return HttpResponseBadRequest(f"Bad selection rule: {error}.", content_type="text/plain; charset=utf-8")
    records = preference_records_select(campaign=campaign, rules=rules)
    metadata = dpo_metadata(campaign=campaign, rules=rules, records=len(records))
    if _flag(request, "metadata"):
        return JsonResponse(metadata, json_dumps_params={"ensure_ascii": False, "indent": 2})
    lines = (json.dumps(record, ensure_ascii=False).encode() + b"\n" for record in records)
    response = _download(lines, campaign, "dpo" if judge_id is None else f"dpo-judge-{judge_id}", "jsonl")
    # A header is ASCII: the JSON escapes any other character.
    response[METADATA_HEADER] = json.dumps(metadata, ensure_ascii=True, separators=(",", ":"))
    return response


def _judge_id(request: HttpRequest, campaign: Campaign) -> int | HttpResponse | None:
    """?judge=: None when absent or empty; else the id of a judge with verdicts on the campaign, or a 400."""
    raw = request.GET.get("judge", "").strip()
    if not raw:
        return None
    judges = dict(judges_of_campaign(campaign=campaign).values_list("pk", "name"))
    if not raw.isdigit() or int(raw) not in judges:
        known = ", ".join(f"{pk} ({name})" for pk, name in judges.items()) or "none"
        return HttpResponseBadRequest(
            f"Unknown judge {raw!r} for this campaign: its judges are {known}.",
            content_type="text/plain; charset=utf-8",
        )
    return int(raw)
