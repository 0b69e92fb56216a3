"""Roles are Django groups; one decorator guards every page."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django_htmx.middleware import HtmxDetails

from evaluator.compiled import Compiled

ANNOTATOR = "annotator"
RESEARCHER = "researcher"
ADMIN = "admin"
ROLES = (ANNOTATOR, RESEARCHER, ADMIN)

# The user's roles are kept on the user object for the rest of the request, as ModelBackend keeps permissions.
_ROLES_CACHE = "_prefloop_roles"


class AuthenticatedHttpRequest(HttpRequest):
    """The request a view behind `role_required` receives: a signed-in user, and django-htmx's details."""

    user: User
    htmx: HtmxDetails


def user_roles(user: User | AnonymousUser) -> frozenset[str]:
    if not user.is_authenticated:
        return frozenset()
    if getattr(user, "is_superuser", False):
        return frozenset(ROLES)
    cached: frozenset[str] | None = getattr(user, _ROLES_CACHE, None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        setattr(user, _ROLES_CACHE, cached)
    return cached


class RolesBackend(ModelBackend):
    """Django's ModelBackend, but the signed-in user of each request is read with their roles in the same query:
    one statement fewer on every page (the roles are read for every page's navigation and guard). Sessions made
    by ModelBackend itself (before this backend) still work: it stays in AUTHENTICATION_BACKENDS after this one."""

    def get_user(self, user_id: Any) -> User | None:
        found = _user_with_roles.fetch(user=int(user_id))
        user = found[0] if found else None
        if user is None or not self.user_can_authenticate(user):
            return None
        setattr(user, _ROLES_CACHE, frozenset(role for role in ROLES if getattr(user, f"_role_{role}")))
        return user


@Compiled
def _user_with_roles(*, user: int) -> QuerySet[User]:
    groups = Group.objects.filter(user=OuterRef("pk"))
    roles = {f"_role_{role}": Exists(groups.filter(name=role)) for role in ROLES}
    return get_user_model()._default_manager.filter(pk=user).annotate(**roles)


def role_required(*roles: str) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Let a view through for logged-in users holding any of `roles`; 403 for the others."""

    def decorate(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @login_required
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not user_roles(request.user) & set(roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return guarded

    return decorate
