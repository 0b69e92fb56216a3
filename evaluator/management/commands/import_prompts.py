"""Import prompts: `python manage.py import_prompts prompts.jsonl --campaign "My campaign" [--create]`."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator import services
from evaluator.management.commands._campaigns import campaign_by_name
from evaluator.prompt_files import PromptFileError


class Command(BaseCommand):
    help = "Import prompts from a JSONL or CSV file into a campaign; all or nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--campaign", required=True, help="Campaign name.")
        parser.add_argument("--create", action="store_true", help="Create the campaign if it does not exist.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        campaign = campaign_by_name(options["campaign"], create=options["create"])
        try:
            count = services.prompts_import(campaign=campaign, file_name=path.name, data=path.read_bytes())
        except (PromptFileError, services.ServiceError) as error:
            raise CommandError(f"{path}: {error}; nothing was imported") from None
        self.stdout.write(self.style.SUCCESS(f"Imported {count} prompts into {campaign.name!r}."))
