"""What services raise: a refused request, and a job that must wait."""

from typing import Any


class ServiceError(ValueError):
    """A request that cannot be carried out; the message is shown to the user as it is."""


class JobNotReady(Exception):
    """A job cannot start yet (what it needs is still being prepared); its task tries again later."""


class QualificationDue(ServiceError):
    """The campaign asks the annotator to pass its qualification before serving them any pair (the claim raises
    it; the rating page then shows the qualification instead)."""

    def __init__(self, campaign: Any) -> None:
        super().__init__(f"“{campaign.name}” asks you to pass its qualification first.")
        self.campaign = campaign
