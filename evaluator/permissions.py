"""API permissions; a module of its own because DRF's settings import it while `rest_framework.views` loads."""

from typing import TYPE_CHECKING, Any

from rest_framework.permissions import BasePermission

from evaluator.roles import ADMIN, RESEARCHER, user_roles

if TYPE_CHECKING:
    from rest_framework.request import Request


class IsResearcher(BasePermission):
    message = "This API is for researchers and admins."

    def has_permission(self, request: "Request", view: Any) -> bool:
        return bool(user_roles(request.user) & {RESEARCHER, ADMIN})
