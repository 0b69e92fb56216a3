"""Import prompts: `python manage.py import_prompts prompts.jsonl --campaign "My campaign" [--create]`.

All or nothing, a campaign made by --create included.
"""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from evaluator.errors import ServiceError
from evaluator.management.commands._campaigns import campaign_by_name, import_refused
from evaluator.parsing.prompts import PromptFileError
from evaluator.services.imports import prompts_import


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
        data = path.read_bytes()
        try:
            # One transaction: a refused file rolls back the campaign --create made for it too.
            with transaction.atomic():
                campaign = campaign_by_name(options["campaign"], create=options["create"])
                count = prompts_import(campaign=campaign, file_name=path.name, data=data)
        except (PromptFileError, ServiceError) as error:
            raise import_refused(path, error) from None
        self.stdout.write(self.style.SUCCESS(f"Imported {count} prompts into {campaign.name!r}."))
