"""The per-request context: the engine snapshot, the per-request DataLoaders, auth and cache tags.

Built by the GraphQL view's ``get_context`` for every request (never at module level), so a
DataLoader's cache lives exactly as long as its request and never leaks answers across bundles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

from graphql_api.engine import Engine, ItemRecord
from graphql_api.errors import Forbidden
from graphql_api.settings import ApiKey
from graphql_api.store import UserState
from hybrid.experiments import ActiveExperiment

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from graphql_api.runtime import Runtime


class Loaders:
    """DataLoaders of one request (item lookups batched into one vocabulary lookup)."""

    def __init__(self, engine: Engine, context: Context) -> None:
        async def load_items(ids: list[str]) -> list[ItemRecord | None]:
            return engine.items_by_id(ids)

        async def load_users(ids: list[str]) -> list[UserState]:
            return [await context.user_state(i) for i in ids]

        self.item = DataLoader(load_fn=load_items)
        """External item id -> ItemRecord, or None for an id the bundle does not know."""
        self.user_state = DataLoader(load_fn=load_users)
        """User id -> the store's online state (events, deletion, cache tags)."""


@dataclass
class Context:
    request: Request
    response: Response
    runtime: Runtime
    engine: Engine
    """The bundle this request is served from (fixed for the whole request)."""
    api_key: ApiKey | None = None
    """The request's accepted key (None: no key or an unknown one)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Cache tags of the users this answer depends on (generation key -> generation)."""
    variants: list[str] = field(default_factory=list)
    """Variants served by this request (for metrics, also on cache hits)."""
    operation: str = "unknown"
    operation_type: str = "query"
    cacheable: bool = False
    uncacheable: bool = False
    """Set by a resolver whose answer must not be cached (an exposure that could not be logged)."""
    experiment: ActiveExperiment | None = None
    """The running experiment, compiled for ``engine`` (fixed for the whole request)."""
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.engine, self)

    @property
    def settings(self) -> Any:
        return self.runtime.settings

    @property
    def store(self) -> Any:
        return self.runtime.store

    @property
    def metrics(self) -> Any:
        return self.runtime.metrics

    async def user_state(self, user_id: str) -> UserState:
        """The user's online state; the answer then depends on it (its tag is recorded)."""
        state = await self.runtime.store.user_state(user_id)
        self.tags.update(state.tags)
        return state

    def allows(self, scope: str, user_id: str | None = None) -> bool:
        """The request's key has ``scope`` (for ``user_id`` when the key is bound to a user); anything
        goes in development mode without keys."""
        if not self.settings.keys_configured:
            return True
        return self.api_key is not None and self.api_key.allows(scope, user_id)

    def require(self, scope: str, user_id: str | None = None) -> None:
        """Forbidden, naming the scope (and the user for a key bound to another), unless allowed."""
        if self.allows(scope, user_id):
            return
        if self.api_key is None:
            raise Forbidden(f"this operation needs an API key with the {scope} scope "
                            "(header X-API-Key or Authorization: Bearer <key>)")
        if scope not in self.api_key.scopes:
            raise Forbidden(f"this API key lacks the {scope} scope (it has {', '.join(sorted(self.api_key.scopes))})")
        raise Forbidden(f"this API key acts for one user only, not for user {user_id!r}")
