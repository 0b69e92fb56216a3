"""Export the DPO preference dataset:

    python manage.py export_dpo_dataset --campaign NAME --out PATH --format jsonl|hf
        [--criterion overall | --weights '{"overall": 1, "factual_accuracy": 0.5}'] [--min-agreement 0.6]
        [--held-out-prompts FILE] [--include-gold] [--include-flagged]

jsonl writes TRL preference JSONL to PATH; hf writes a Hugging Face `datasets` folder (load_from_disk). The
selection rules are evaluator.selectors.dpo_dataset.SelectionRules (docs/formats.md).
"""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.models import OVERALL, Campaign
from evaluator.selectors.dpo_dataset import (
    SelectionRules,
    dpo_hf_write,
    dpo_jsonl_write,
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
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
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
        self.stdout.write(self.style.SUCCESS(f"Wrote {len(records)} preference pairs to {options['out']}."))
