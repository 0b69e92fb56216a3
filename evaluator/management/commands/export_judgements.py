"""Export raw judgements: `python manage.py export_judgements --campaign NAME --format csv|jsonl|parquet [--out FILE]`.

One row per judgement × criterion (docs/formats.md); written to stdout when --out is not given. Every judgement
is exported, gold items included (see the is_gold column), except simulated ones (a scripted annotator's, from
bench/loop.py): add --include-simulated for those (see the is_simulated column).
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.models import Campaign
from evaluator.selectors.campaigns import VoteFilters
from evaluator.selectors.exports import RAW_FORMATS, judgements_export


class Command(BaseCommand):
    help = "Export a campaign's judgements as CSV, JSONL or Parquet, streamed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument("--format", required=True, choices=RAW_FORMATS)
        parser.add_argument("--out", type=Path, help="Output file; stdout when left out.")
        parser.add_argument(
            "--include-simulated", action="store_true", help="Also export judgements of scripted annotators."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(name=options["campaign"]).first()
        if campaign is None:
            raise CommandError(f"no campaign named {options['campaign']!r}")
        filters = VoteFilters(exclude_gold=False, include_simulated=options["include_simulated"])
        chunks = judgements_export(campaign=campaign, file_format=options["format"], filters=filters)
        write_chunks(chunks, options["out"], self.stdout)


def write_chunks(chunks: Iterable[bytes], out: Path | None, stdout: Any) -> None:
    """Write byte chunks to the file `out`, or to the command's stdout: its binary buffer when it has one (the real
    stdout), else decoded as UTF-8 (a StringIO in tests; binary formats belong in a file there)."""
    if out is not None:
        with Path(out).open("wb") as sink:
            for chunk in chunks:
                sink.write(chunk)
        return
    stream = getattr(stdout, "_out", stdout)  # Django's OutputWrapper around the real stream
    binary = getattr(stream, "buffer", None)
    stream.flush()
    for chunk in chunks:
        if binary is not None:
            binary.write(chunk)
        else:
            stream.write(chunk.decode("utf-8"))
    (binary or stream).flush()
