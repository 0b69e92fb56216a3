"""Accounts and role groups."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.db import transaction

from evaluator.roles import ROLES


def role_groups_ensure() -> dict[str, Group]:
    return {role: Group.objects.get_or_create(name=role)[0] for role in ROLES}


@transaction.atomic
def account_create_or_reset(*, username: str, role: str, password: str | None = None) -> tuple[AbstractUser, str]:
    """Create the user (or reset its password) with exactly `role`; returns the user and its password."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    password = password or secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(password)
    user.is_staff = role == "admin"
    user.save()
    user.groups.set([role_groups_ensure()[role]])
    return user, password
