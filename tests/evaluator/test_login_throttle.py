"""Login throttling (evaluator/login_throttle.py): a limit per address beside the limit per username and address,
and the client's address read from X-Forwarded-For only behind trusted proxies. Real logins through the login
page, recorded by django-axes in PostgreSQL."""

import pytest
from axes.models import AccessAttempt
from django.db.models import Sum
from django.test import Client, RequestFactory
from django.urls import reverse

from evaluator.login_throttle import client_ip_address
from tests import factories

pytestmark = pytest.mark.django_db

CLIENT = "198.51.100.7"
PROXY = "10.0.0.2"


@pytest.fixture
def address_limit(settings) -> int:
    settings.PREFLOOP_LOGIN_FAILURES_PER_IP = 8
    return 8


def login(client: Client, username: str, password: str, **meta: str) -> int:
    response = client.post(reverse("login"), {"username": username, "password": password}, **meta)
    return response.status_code


def test_one_password_sprayed_over_many_usernames_locks_the_address(client, annotator, address_limit) -> None:
    for index in range(address_limit - 1):
        assert login(client, f"user{index}", "Summer2026!") == 200  # the form again: wrong password, no lockout yet
    # Each username failed once, far under the per-user limit; the address's last allowed failure locks it, and it
    # is refused from then on, even with the right password of a real account.
    assert login(client, "user-last", "Summer2026!") == 429
    assert login(client, "ann", factories.PASSWORD) == 429
    assert "_auth_user_id" not in client.session


def test_the_spraying_address_does_not_lock_out_anyone_else(client, annotator, address_limit) -> None:
    for index in range(address_limit):
        login(client, f"user{index}", "Summer2026!", REMOTE_ADDR="203.0.113.9")
    assert login(client, "ann", factories.PASSWORD, REMOTE_ADDR="203.0.113.10") == 302


def test_under_the_address_limit_a_colleague_behind_the_same_address_still_logs_in(
    client, annotator, address_limit
) -> None:
    for index in range(address_limit - 1):
        login(Client(), f"user{index}", "wrong")
    assert login(client, "ann", factories.PASSWORD) == 302


def test_a_successful_login_does_not_clear_the_other_usernames_failures_from_its_address(
    annotator, address_limit
) -> None:
    for index in range(address_limit - 1):
        login(Client(), f"user{index}", "Summer2026!")
    assert login(Client(), "ann", factories.PASSWORD) == 302  # one valid account in the spray
    login(Client(), "user-last", "Summer2026!")  # the address's 8th failure
    failures = AccessAttempt.objects.filter(ip_address="127.0.0.1").aggregate(total=Sum("failures_since_start"))
    assert failures["total"] == address_limit
    assert login(Client(), "ann", factories.PASSWORD) == 429


def test_behind_a_trusted_proxy_the_lockout_keys_on_the_forwarded_client_address(client, annotator, settings) -> None:
    settings.PREFLOOP_TRUSTED_PROXY_COUNT = 1
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "ann", "wrong", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=CLIENT)
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {CLIENT}
    assert login(client, "ann", factories.PASSWORD, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=CLIENT) == 429
    # The same account from another client behind the same proxy is not locked out.
    assert login(Client(), "ann", factories.PASSWORD, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.8") == 302


def test_without_a_trusted_proxy_a_forged_forwarded_header_changes_nothing(client, annotator, settings) -> None:
    settings.PREFLOOP_TRUSTED_PROXY_COUNT = 0
    for index in range(settings.AXES_FAILURE_LIMIT):
        login(client, "ann", "wrong", REMOTE_ADDR=CLIENT, HTTP_X_FORWARDED_FOR=f"192.0.2.{index}")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {CLIENT}
    assert login(client, "ann", factories.PASSWORD, REMOTE_ADDR=CLIENT, HTTP_X_FORWARDED_FOR="192.0.2.99") == 429


@pytest.mark.parametrize(
    ("count", "trusted", "remote", "forwarded", "expected"),
    [
        (0, [], PROXY, CLIENT, PROXY),  # no proxy configured: the header is anyone's to write
        (1, [], PROXY, CLIENT, CLIENT),
        (1, [], PROXY, f"192.0.2.1, {CLIENT}", CLIENT),  # what the client prepended is ignored
        (2, [], PROXY, f"192.0.2.1, {CLIENT}, 10.0.0.1", CLIENT),  # two proxies: the second entry from the right
        (2, [], PROXY, CLIENT, PROXY),  # fewer entries than proxies: it did not come through them
        (1, [], PROXY, "unknown", PROXY),
        (1, ["10.0.0.0/8"], PROXY, CLIENT, CLIENT),
        (1, ["10.0.0.0/8"], "192.0.2.50", CLIENT, "192.0.2.50"),  # straight to the app, around the proxy
        (1, [], PROXY, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_address_is_read_from_the_trusted_proxies_only(
    settings, count: int, trusted: list[str], remote: str, forwarded: str, expected: str
) -> None:
    settings.PREFLOOP_TRUSTED_PROXY_COUNT = count
    settings.PREFLOOP_TRUSTED_PROXY_IPS = trusted
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip_address(request) == expected
