"""What services raise: a refused request, and a job that must wait."""


class ServiceError(ValueError):
    """A request that cannot be carried out; the message is shown to the user as it is."""


class JobNotReady(Exception):
    """A job cannot start yet (what it needs is still being prepared); its task tries again later."""
