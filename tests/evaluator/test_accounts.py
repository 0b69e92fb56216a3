"""The admins' account page: list, create with a role and a password shown once, change roles, deactivate."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from evaluator.errors import ServiceError
from evaluator.roles import user_roles
from evaluator.services.accounts import account_create
from tests import factories

pytestmark = pytest.mark.django_db


def roles_of(username: str) -> set[str]:
    return set(get_user_model().objects.get(username=username).groups.values_list("name", flat=True))


def test_the_page_lists_every_account_with_its_roles_in_a_fixed_number_of_queries(
    client, admin_user, annotator, researcher, django_assert_num_queries
) -> None:
    client.force_login(admin_user)
    client.get(reverse("users"))  # the role groups exist; the count below is the steady state
    for index in range(5):
        factories.user(f"extra{index}", "annotator", "researcher")
    # session, the user with their roles, the users, their role groups
    with django_assert_num_queries(4):
        html = client.get(reverse("users")).content.decode()
    assert "ann" in html and "rex" in html and "extra4" in html
    assert "annotator, researcher" in html
    assert "Deactivate ann" in html


def test_an_admin_creates_an_account_with_a_generated_password_shown_once(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.post(reverse("user_create"), {"username": "nora", "role": "researcher"}, follow=True)
    html = response.content.decode()
    created = get_user_model().objects.get(username="nora")
    assert roles_of("nora") == {"researcher"} and not created.is_staff
    password = html.split("Password: ", 1)[1].split(" ", 1)[0]
    assert len(password) == 16 and created.check_password(password)
    assert password not in client.get(reverse("users")).content.decode()  # shown once


def test_an_admin_account_gets_django_admin_access_and_a_given_password(client, admin_user) -> None:
    client.force_login(admin_user)
    client.post(reverse("user_create"), {"username": "otis", "role": "admin", "password": "plum-tree-harbour-9"})
    created = get_user_model().objects.get(username="otis")
    assert created.is_staff and created.check_password("plum-tree-harbour-9")
    assert user_roles(created) == {"admin"}


def test_a_taken_username_a_weak_password_or_an_unknown_role_is_refused_and_nothing_is_created(
    client, admin_user, annotator
) -> None:
    client.force_login(admin_user)
    taken = client.post(reverse("user_create"), {"username": "ANN", "role": "annotator"}, follow=True)
    assert "An account named &#x27;ANN&#x27; already exists." in taken.content.decode()
    weak = client.post(reverse("user_create"), {"username": "pia", "role": "annotator", "password": "123"}, follow=True)
    assert "Password: This password is too short." in weak.content.decode()
    unknown = client.post(reverse("user_create"), {"username": "pia", "role": "overlord"}, follow=True)
    assert "Role: Select a valid choice. overlord is not one of the available choices." in unknown.content.decode()
    assert not get_user_model().objects.filter(username__iexact="pia").exists()
    assert get_user_model().objects.filter(username__iexact="ann").count() == 1
    with pytest.raises(ServiceError, match="Unknown role"):
        account_create(username="pia", roles=["overlord"])
    assert not get_user_model().objects.filter(username="pia").exists()


def test_an_admin_changes_a_users_roles(client, admin_user, annotator) -> None:
    client.force_login(admin_user)
    response = client.post(reverse("user_roles_update", args=[annotator.pk]), {"roles": ["annotator", "admin"]})
    assert response.status_code == 302
    annotator.refresh_from_db()
    assert roles_of("ann") == {"annotator", "admin"} and annotator.is_staff
    client.post(reverse("user_roles_update", args=[annotator.pk]), {"roles": ["researcher"]})
    annotator.refresh_from_db()
    assert roles_of("ann") == {"researcher"} and not annotator.is_staff


def test_no_roles_or_dropping_ones_own_admin_role_is_refused(client, admin_user, annotator) -> None:
    client.force_login(admin_user)
    none = client.post(reverse("user_roles_update", args=[annotator.pk]), {}, follow=True)
    assert "ann: Roles: This field is required." in none.content.decode()
    own = client.post(reverse("user_roles_update", args=[admin_user.pk]), {"roles": ["annotator"]}, follow=True)
    assert "You cannot take away your own admin role" in own.content.decode()
    assert roles_of("ann") == {"annotator"} and roles_of("ada") == {"admin"}


def test_a_deactivated_user_is_logged_out_and_can_be_reactivated(client, admin_user, annotator) -> None:
    client.force_login(annotator)
    assert client.get(reverse("rate")).status_code == 200
    admin = client.__class__()
    admin.force_login(admin_user)
    assert admin.post(reverse("user_deactivate", args=[annotator.pk])).status_code == 302
    annotator.refresh_from_db()
    assert not annotator.is_active
    assert client.get(reverse("rate")).status_code == 302  # the open session no longer works: to the login page
    assert "Reactivate ann" in admin.get(reverse("users")).content.decode()
    admin.post(reverse("user_reactivate", args=[annotator.pk]))
    annotator.refresh_from_db()
    assert annotator.is_active


def test_an_admin_cannot_deactivate_their_own_account(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.post(reverse("user_deactivate", args=[admin_user.pk]), follow=True)
    assert "You cannot deactivate your own account." in response.content.decode()
    admin_user.refresh_from_db()
    assert admin_user.is_active


def test_account_actions_take_a_post_and_an_admin(client, admin_user, researcher, annotator) -> None:
    client.force_login(admin_user)
    assert client.get(reverse("user_deactivate", args=[annotator.pk])).status_code == 405
    assert client.post(reverse("user_deactivate", args=[999_999])).status_code == 404
    client.force_login(researcher)
    assert client.post(reverse("user_deactivate", args=[annotator.pk])).status_code == 403
    assert client.post(reverse("user_create"), {"username": "sly", "role": "admin"}).status_code == 403
    annotator.refresh_from_db()
    assert annotator.is_active and not get_user_model().objects.filter(username="sly").exists()


def test_the_create_account_command_still_creates_or_resets(admin_user) -> None:
    from django.core.management import call_command

    call_command("create_account", "quin", "--role", "annotator", "--password", "first-pass-phrase")
    call_command("create_account", "quin", "--role", "researcher", "--password", "second-pass-phrase")
    user = get_user_model().objects.get(username="quin")
    assert roles_of("quin") == {"researcher"} and user.check_password("second-pass-phrase")
