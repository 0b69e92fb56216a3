"""Accounts and role groups: the create_account command and the admins' account page both come here."""

import secrets
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group, Permission, User
from django.db import IntegrityError, transaction

from evaluator.errors import ServiceError
from evaluator.models import AnnotatorFlag
from evaluator.roles import ADMIN, ROLES


def role_groups_ensure() -> dict[str, Group]:
    """The three role groups. The admin group holds every permission on Prefloop's own models, so that admins
    (staff, not superusers) can use the Django admin's pages for them: gold items, flags, rubrics. Users and
    groups stay with superusers there: with those an admin could make himself one."""
    groups = {role: Group.objects.get_or_create(name=role)[0] for role in ROLES}
    groups[ADMIN].permissions.add(*Permission.objects.filter(content_type__app_label="evaluator"))
    return groups


@transaction.atomic
def account_create_or_reset(*, username: str, role: str, password: str | None = None) -> tuple[AbstractUser, str]:
    """Create the user (or reset its password) with exactly `role`; returns the user and its password."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    password = password or password_generate()
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(password)
    user.is_staff = role == "admin"
    user.save()
    user.groups.set([role_groups_ensure()[role]])
    return user, password


def password_generate() -> str:
    """16 URL-safe characters (96 random bits) from the OS's CSPRNG."""
    return secrets.token_urlsafe(12)


def account_create(*, username: str, roles: Iterable[str], password: str | None = None) -> tuple[AbstractUser, str]:
    """A new account holding `roles`; refused when the username is taken (in any letter case).

    Returns the user and its password: the one given, or a generated one, to be shown once and never stored.
    """
    username = username.strip()
    wanted = _roles_checked(roles)
    if not username:
        raise ServiceError("Give the account a username.")
    users = get_user_model().objects
    if users.filter(username__iexact=username).exists():
        raise ServiceError(f"An account named {username!r} already exists.")
    password = password or password_generate()
    try:
        with transaction.atomic():
            user = users.create_user(username=username, password=password, is_staff=ADMIN in wanted)
            groups = role_groups_ensure()
            user.groups.set([groups[role] for role in wanted])
    except IntegrityError:  # created by someone else between the check and the insert
        raise ServiceError(f"An account named {username!r} already exists.") from None
    return user, password


@transaction.atomic
def account_roles_set(*, user: AbstractUser, roles: Iterable[str], by: User) -> None:
    """Give `user` exactly `roles` (Django admin access goes with the admin role); an admin keeps their own."""
    wanted = _roles_checked(roles)
    if user.pk == by.pk and ADMIN not in wanted:
        raise ServiceError("You cannot take away your own admin role: ask another admin.")
    groups = role_groups_ensure()
    user.groups.set([groups[role] for role in wanted])
    user.is_staff = ADMIN in wanted
    user.save(update_fields=["is_staff"])


def account_deactivate(*, user: AbstractUser, by: User) -> None:
    """Lock the account out (its sessions and API token stop working at once); its judgements stay."""
    if user.pk == by.pk:
        raise ServiceError("You cannot deactivate your own account.")
    user.is_active = False
    user.save(update_fields=["is_active"])


def account_reactivate(*, user: AbstractUser) -> None:
    user.is_active = True
    user.save(update_fields=["is_active"])


def _roles_checked(roles: Iterable[str]) -> list[str]:
    wanted = sorted(set(roles))
    unknown = [role for role in wanted if role not in ROLES]
    if unknown:
        raise ServiceError(f"Unknown role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}.")
    if not wanted:
        raise ServiceError("Give the account at least one role; deactivate it to lock it out.")
    return wanted


def api_token_rotate(*, user: User) -> str:
    """Replace the user's API token with a new one and return it (shown once)."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user).key


ANNOTATOR_FLAG_REASON_MAX = 1000


def annotator_flag(*, annotator: User, reason: str, by: User) -> AnnotatorFlag:
    """Flag an annotator (researchers may then leave their judgements out); flagging again replaces the reason."""
    reason = reason.strip()
    if not reason:
        raise ServiceError("Say why you flag this annotator.")
    if len(reason) > ANNOTATOR_FLAG_REASON_MAX:
        raise ServiceError(
            f"The reason is {len(reason)} characters long; at most {ANNOTATOR_FLAG_REASON_MAX} are allowed."
        )
    flag, _ = AnnotatorFlag.objects.update_or_create(annotator=annotator, defaults={"reason": reason, "flagged_by": by})
    return flag


def annotator_unflag(*, annotator: User) -> bool:
    """Take the annotator's flag away; False when there was none."""
    deleted, _ = AnnotatorFlag.objects.filter(annotator=annotator).delete()
    return bool(deleted)
