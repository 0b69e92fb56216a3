"""Export the DPO preference dataset:

    python manage.py export_dpo_dataset --campaign NAME --out PATH --format jsonl|hf
        [--criterion overall | --weights '{"overall": 1, "factual_accuracy": 0.5}'] [--min-agreement 0.6]
        [--held-out-prompts FILE] [--include-gold] [--include-flagged] [--prefer-adjudicated] [--judge ID]

jsonl writes TRL preference JSONL to PATH; hf writes a Hugging Face `datasets` folder (load_from_disk). The
selection rules are evaluator.selectors.dpo_dataset.SelectionRules (docs/formats.md). The dataset's metadata (its
rules and sources, the judge named when --judge asked for one) goes to PATH.metadata.json beside a JSONL file, or to
prefloop_metadata.json inside the folder.
"""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.models import OVERALL, Campaign, Judge, JudgeVerdict
from evaluator.selectors.dpo_dataset import (
    SelectionRules,
    dpo_hf_write,
    dpo_jsonl_write,
    dpo_metadata,
    dpo_metadata_path,
    dpo_metadata_write,
    held_out_prompts_read,
    preference_records_select,
)


class Command(BaseCommand):
    help = "Export a campaign's preference pairs for DPO as TRL JSONL or a Hugging Face datasets folder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--format", required=True, choices=("jsonl", "hf"))
        rule = parser.add_mutually_exclusive_group()
        rule.add_argument("--criterion", default=OVERALL, help="The criterion that decides (default overall).")
        rule.add_argument("--weights", help='JSON object of criterion weights, e.g. {"overall": 1, "safety": 0.5}.')
        parser.add_argument("--min-agreement", type=float, help="Majority share per comparison, in (0, 1].")
        parser.add_argument("--held-out-prompts", type=Path, help="File of prompt ids to keep out, one a line.")
        parser.add_argument("--include-gold", action="store_true", help="Keep gold items in.")
        parser.add_argument("--include-flagged", action="store_true", help="Keep flagged annotators' judgements.")
        parser.add_argument(
            "--prefer-adjudicated", action="store_true", help="Count adjudicated outcomes instead of the judgements'."
        )
        parser.add_argument(
            "--judge",
            type=int,
            metavar="ID",
            help="Also add the pairs this judge found decisive in both orders that no human record covers "
            "(off by default: human judgements only).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(name=options["campaign"]).first()
        if campaign is None:
            raise CommandError(f"no campaign named {options['campaign']!r}")
        weights = None
        if options["weights"]:
            try:
                weights = json.loads(options["weights"])
            except json.JSONDecodeError as error:
                raise CommandError(f"--weights is not valid JSON ({error.msg})") from None
        held_out: frozenset[str] = frozenset()
        if options["held_out_prompts"]:
            try:
                held_out = held_out_prompts_read(options["held_out_prompts"])
            except OSError as error:
                raise CommandError(f"--held-out-prompts: {error}") from None
        try:
            rules = SelectionRules(
                criterion=options["criterion"],
                weights=weights,
                min_agreement=options["min_agreement"],
                held_out_prompts=held_out,
                include_gold=options["include_gold"],
                exclude_flagged=not options["include_flagged"],
                prefer_adjudicated=options["prefer_adjudicated"],
                judge_id=options["judge"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["judge"] is not None:
            _check_judge(options["judge"], campaign)
        unknown = sorted(set(rules.criterion_weights) - set(campaign.criterion_slugs))
        if unknown:
            raise CommandError(
                f"unknown criterion {', '.join(unknown)}; the campaign has {', '.join(campaign.criterion_slugs)}"
            )
        records = preference_records_select(campaign=campaign, rules=rules)
        if not records:
            raise CommandError("no judgement passes the selection rules; nothing was written")
        if options["format"] == "jsonl":
            dpo_jsonl_write(records, options["out"])
        else:
            dpo_hf_write(records, options["out"])
        metadata = dpo_metadata(campaign=campaign, rules=rules, records=len(records))
        metadata_path = dpo_metadata_write(metadata, dpo_metadata_path(options["out"], options["format"]))
        self.stdout.write(
            self.style.SUCCESS(
                f"Wrote {len(records)} preference pairs to {options['out']} (metadata: {metadata_path})."
            )
        )


def _check_judge(judge_id: int, campaign: Campaign) -> None:
    """--judge names a judge that has verdicts on the campaign's pairs, else nothing is written."""
    judge = Judge.objects.filter(pk=judge_id).first()
    if judge is None:
        raise CommandError(f"--judge: no judge with id {judge_id}")
    if not JudgeVerdict.objects.filter(judge=judge, comparison__campaign=campaign).exists():
        raise CommandError(f"--judge: judge {judge.name!r} (id {judge_id}) has no verdicts on {campaign.name!r}")
