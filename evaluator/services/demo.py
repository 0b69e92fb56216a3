"""The demo's preparation record: seed_demo's choice of base model, moved through the shared job lifecycle so the
demo's progress page shows it beside the campaign's index, training and generation jobs."""

from evaluator.errors import ServiceError
from evaluator.models import Campaign, DemoPreparation
from evaluator.services.jobs import job_fail, job_finish, job_start


def demo_preparation_start(*, campaign: Campaign, wanted_model: str) -> DemoPreparation:
    """A running preparation for `campaign`: one per `seed_demo` run, so a later start shows its own choice."""
    preparation = DemoPreparation.objects.create(campaign=campaign, wanted_model=wanted_model)
    if not job_start(model=DemoPreparation, job_id=preparation.pk, redelivered_ok=False):
        raise ServiceError(f"{preparation} could not be started.")
    preparation.refresh_from_db()
    return preparation


def demo_preparation_finish(*, preparation: DemoPreparation, base_model: str, reason: str) -> DemoPreparation:
    """Record the base model the demo's variants use and why it was chosen."""
    if not base_model or not reason:
        raise ServiceError("A demo preparation needs the chosen base model and the reason for it.")
    if not job_finish(model=DemoPreparation, job_id=preparation.pk, base_model=base_model, reason=reason):
        raise ServiceError(f"{preparation} had already ended.")
    preparation.refresh_from_db()
    return preparation


def demo_preparation_fail(*, preparation: DemoPreparation, error: BaseException | str) -> bool:
    """Mark the preparation failed with the reason; False when it had already ended."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return job_fail(model=DemoPreparation, job_id=preparation.pk, error=text)
