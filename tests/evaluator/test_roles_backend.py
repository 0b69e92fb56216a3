"""The session user is read with their roles in one query (evaluator.roles.RolesBackend): a password login uses it,
a session made by ModelBackend still works, and a role taken away counts from the user's next request."""

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests import factories

pytestmark = pytest.mark.django_db


def test_a_password_login_reads_the_user_and_their_roles_in_one_query(client, annotator) -> None:
    client.post(reverse("login"), {"username": "ann", "password": factories.PASSWORD})
    assert client.session[BACKEND_SESSION_KEY] == "evaluator.roles.RolesBackend"

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("home"))

    assert response.status_code == 302 and response["Location"] == reverse("rate")
    users = [query["sql"] for query in queries.captured_queries if '"auth_user"' in query["sql"]]
    assert len(users) == 1 and '"auth_group"' in users[0]
    assert not [query for query in queries.captured_queries if query["sql"].startswith('SELECT "auth_group"')]


def test_a_session_signed_in_through_model_backend_still_works(client, annotator) -> None:
    client.force_login(annotator, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get(reverse("rate")).status_code == 200


def test_a_role_taken_away_counts_from_the_next_request(client, annotator) -> None:
    client.force_login(annotator)
    assert client.get(reverse("rate")).status_code == 200

    annotator.groups.remove(Group.objects.get(name="annotator"))

    assert client.get(reverse("rate")).status_code == 403


def test_a_deactivated_user_is_signed_out(client, annotator) -> None:
    client.force_login(annotator)
    annotator.is_active = False
    annotator.save(update_fields=["is_active"])

    response = client.get(reverse("rate"))

    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
