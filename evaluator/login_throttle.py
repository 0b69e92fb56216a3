"""Login throttling with django-axes: whose address a login comes from, and a limit per address beside the limit
per username and address (prefloop/settings.py, `AXES_*` and `PREFLOOP_TRUSTED_PROXY_*`; docs/deployment.md)."""

import ipaddress
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_lockout_parameters
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest


def client_ip_address(request: HttpRequest) -> str | None:
    """The address a login is counted against (`AXES_CLIENT_IP_CALLABLE`).

    With PREFLOOP_TRUSTED_PROXY_COUNT=N, the N-th entry from the right of X-Forwarded-For: each trusted proxy
    appends the address it received the request from, so that entry was written by the outermost trusted proxy,
    and anything left of it came from the client, who can write what it likes. With fewer entries than N, or a
    connection from outside PREFLOOP_TRUSTED_PROXY_IPS (when set), the request did not come through the proxies
    and the socket's own address is used."""
    remote = request.META.get("REMOTE_ADDR")
    count: int = settings.PREFLOOP_TRUSTED_PROXY_COUNT
    if count == 0 or not _from_trusted_proxy(remote):
        return remote
    forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(forwarded) < count:
        return remote
    candidate = forwarded[-count]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        # A proxy that writes something other than an address (an "unknown", a port) is misconfigured; the socket's
        # address at least cannot be forged.
        return remote


def _from_trusted_proxy(remote: str | None) -> bool:
    networks: list[str] = settings.PREFLOOP_TRUSTED_PROXY_IPS
    if not networks:
        return True
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


class PerAddressLimitHandler(AxesDatabaseHandler):
    """django-axes' database handler with a limit of its own for the address-only lockout parameter.

    Axes compares the largest failure count over its lockout parameters with one limit (AXES_FAILURE_LIMIT). An
    address is shared by everyone behind one office NAT, so it gets the higher PREFLOOP_LOGIN_FAILURES_PER_IP: its
    count is scaled so that reaching that limit reads as reaching AXES_FAILURE_LIMIT."""

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        user_limit: int = settings.AXES_FAILURE_LIMIT
        address_limit: int = settings.PREFLOOP_LOGIN_FAILURES_PER_IP
        failures = 0
        parameters = get_lockout_parameters(request, credentials)
        for parameter, attempts in zip(parameters, self.get_user_attempts(request, credentials), strict=True):
            count = attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            if parameter == "ip_address":
                # count >= address_limit exactly when count * user_limit // address_limit >= user_limit.
                count = count * user_limit // address_limit
            failures = max(failures, count)
        return failures

    def reset_user_attempts(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        """On a successful login, forget that user's failures from this address only: the stock handler would
        also clear every other username's failures from the address, so one valid account would reset the
        address's count in the middle of a password spray."""
        username = get_client_username(request, credentials)
        address = request.axes_ip_address  # type: ignore[attr-defined]  # set by axes on every request
        count, _ = AccessAttempt.objects.filter(username=username, ip_address=address).delete()
        return count
