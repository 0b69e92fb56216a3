from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class EvaluatorConfig(AppConfig):
    name = "evaluator"
    verbose_name = "Prefloop evaluator"

    def ready(self) -> None:
        # After every migrate (new models bring new permissions): the role groups exist and admins hold them.
        post_migrate.connect(_role_groups_after_migrate, sender=self)


def _role_groups_after_migrate(using: str = "default", **kwargs: Any) -> None:
    from evaluator.services.accounts import role_groups_ensure

    if using == "default":
        role_groups_ensure()
