"""Create an account (or reset its password): `python manage.py create_account alice --role annotator`."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from evaluator.roles import ROLES
from evaluator.services.accounts import account_create_or_reset


class Command(BaseCommand):
    help = "Create a user with one role (annotator, researcher, admin), or reset its password."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLES, required=True)
        parser.add_argument("--password", help="Default: a generated one, printed once.")

    def handle(self, *args: Any, **options: Any) -> None:
        _, password = account_create_or_reset(
            username=options["username"], role=options["role"], password=options["password"]
        )
        self.stdout.write(f"{options['username']} ({options['role']}): {password}")
