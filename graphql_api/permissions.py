"""Who may run what, by the scopes of the request's key (graphql_api.settings.ApiKey): record
interactions needs write, deleteUserData admin, a user's history read. A key bound to a user acts
for that user only: the user ids themselves are checked where they are known (graphql_api.service).
With no keys (development mode only) everything is open."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission


class _Scope(BasePermission):
    scope = ""
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return info.context.allows(self.scope)


class RequiresWrite(_Scope):
    scope = "write"
    message = "this operation needs an API key with the write scope (header X-API-Key or Authorization: Bearer <key>)"


class RequiresAdmin(_Scope):
    scope = "admin"
    message = "this operation needs an admin key (header X-API-Key or Authorization: Bearer <key>)"
