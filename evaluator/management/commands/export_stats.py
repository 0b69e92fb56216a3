"""Export statistics: `python manage.py export_stats --campaign NAME --format json|csv [--table pairs] [--n-boot N]
[--include-simulated]`.

JSON prints one object, `CampaignStatistics.to_json()` with variants named (docs/formats.md); CSV prints one
table (pairs, leaderboard or agreement). Gold items and simulated judgements (a scripted annotator's, from
bench/loop.py) are left out, as on the statistics page; --include-simulated counts the latter.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.management.commands.export_judgements import write_chunks
from evaluator.models import Campaign
from evaluator.selectors.campaigns import VoteFilters
from evaluator.selectors.exports import SUMMARY_FORMATS, SUMMARY_TABLES, summary_export


class Command(BaseCommand):
    help = "Export a campaign's statistics as JSON (everything) or CSV (one table)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument("--format", required=True, choices=SUMMARY_FORMATS)
        parser.add_argument("--table", default="pairs", choices=SUMMARY_TABLES, help="CSV only (default pairs).")
        parser.add_argument("--n-boot", type=int, default=1000, help="Bootstrap resamples for the intervals.")
        parser.add_argument(
            "--include-simulated", action="store_true", help="Also count judgements of scripted annotators."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(name=options["campaign"]).first()
        if campaign is None:
            raise CommandError(f"no campaign named {options['campaign']!r}")
        if options["n_boot"] < 0:
            raise CommandError("--n-boot must be 0 or more")
        chunks = summary_export(
            campaign=campaign,
            file_format=options["format"],
            table=options["table"],
            filters=VoteFilters(include_simulated=options["include_simulated"]),
            n_boot=options["n_boot"],
        )
        write_chunks(chunks, None, self.stdout)
