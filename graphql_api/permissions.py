"""Who may run what: mutations need an API key, deleteUserData an admin key (when keys exist)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission


class RequiresKey(BasePermission):
    message = "this operation needs an API key (header X-API-Key or Authorization: Bearer <key>)"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        ctx = info.context
        return not ctx.settings.keys_configured or ctx.has_key()


class RequiresAdmin(BasePermission):
    message = "this operation needs an admin key (header X-API-Key or Authorization: Bearer <key>)"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        ctx = info.context
        return not ctx.settings.keys_configured or ctx.is_admin()
