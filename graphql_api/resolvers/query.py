"""The Query root."""

from __future__ import annotations

import strawberry

from graphql_api import service
from graphql_api.context import Context
from graphql_api.engine import check_first
from graphql_api.errors import BadInput
from graphql_api.types.blend_weights_input import BlendWeightsInput
from graphql_api.types.explanation import Explanation
from graphql_api.types.item import Item
from graphql_api.types.item_filter_input import ItemFilterInput
from graphql_api.types.item_not_found import ItemNotFound
from graphql_api.types.model import Model
from graphql_api.types.recommendations import Recommendations
from graphql_api.types.results import ExplainResult, ItemResult, SimilarItemsResult
from graphql_api.types.similar_items import SimilarItems
from graphql_api.types.similarity_signal import SimilaritySignal
from graphql_api.types.user import User
from graphql_api.types.variant import Variant

Info = strawberry.Info[Context, None]


@strawberry.type
class Query:
    @strawberry.field(description="Top items for a user. An unknown user gets a cold-start answer that says so; "
                                  "interactions recorded since the bundle are folded in at once.")
    async def recommendations(
        self,
        info: Info,
        user_id: strawberry.ID,
        first: int = 10,
        variant: str | None = None,
        weights: BlendWeightsInput | None = None,
        filter: ItemFilterInput | None = None,  # noqa: A002 - the schema's argument name
        exclude_seen: bool = True,
    ) -> Recommendations:
        run = await service.recommend(
            info.context,
            str(user_id),
            first,
            variant,
            weights.to_domain() if weights is not None else None,
            filter.to_domain() if filter is not None else None,
            exclude_seen,
        )
        info.context.metrics.variants.labels(variant=run.result.variant).inc()
        return Recommendations.from_domain(run)

    @strawberry.field(description="Items most like an item, by one signal's item vectors or FUSED.")
    def similar_items(
        self,
        info: Info,
        item_id: strawberry.ID,
        first: int = 10,
        signal: SimilaritySignal = SimilaritySignal.FUSED,
        filter: ItemFilterInput | None = None,  # noqa: A002
    ) -> SimilarItemsResult:
        engine = info.context.engine
        items = service.similar_items(info.context, str(item_id), first, signal.value,
                                      filter.to_domain() if filter is not None else None)
        if items is None:
            return ItemNotFound.from_domain(str(item_id), engine.version)
        return SimilarItems.from_domain(str(item_id), signal, items, engine)

    @strawberry.field(description="Why an item scores as it does for a user (under the user's variant, "
                                  "a named one, or given weights).")
    async def explain(
        self,
        info: Info,
        user_id: strawberry.ID,
        item_id: strawberry.ID,
        variant: str | None = None,
        weights: BlendWeightsInput | None = None,
    ) -> ExplainResult:
        expl = await service.explain(info.context, str(user_id), str(item_id), variant,
                                     weights.to_domain() if weights is not None else None)
        if expl is None:
            return ItemNotFound.from_domain(str(item_id), info.context.engine.version)
        return Explanation.from_domain(expl, info.context.engine)

    @strawberry.field(description="One item by id.")
    async def item(self, info: Info, id: strawberry.ID) -> ItemResult:  # noqa: A002
        record = await info.context.loaders.item.load(str(id))
        if record is None:
            return ItemNotFound.from_domain(str(id), info.context.engine.version)
        return Item.from_domain(record)

    @strawberry.field(description="Items by id, in order; null where the bundle does not know the id.")
    async def items(self, info: Info, ids: list[strawberry.ID]) -> list[Item | None]:
        if len(ids) > service.MAX_ID_BATCH:
            raise BadInput(f"at most {service.MAX_ID_BATCH} ids per call, got {len(ids)}", field="ids")
        records = await info.context.loaders.item.load_many([str(i) for i in ids])
        return [None if r is None else Item.from_domain(r) for r in records]

    @strawberry.field(description="Items whose title contains the text (case-insensitive), most popular first.")
    def search_items(self, info: Info, title: str, first: int = 20) -> list[Item]:
        check_first(first)
        return [Item.from_domain(r) for r in info.context.engine.search_items(title, first)]

    @strawberry.field(description="A user: whether the bundle knows them, and their recent history.")
    async def user(self, info: Info, id: strawberry.ID) -> User:  # noqa: A002
        return User.from_domain(await service.user(info.context, str(id)))

    @strawberry.field(description="The blend variants of the served bundle (and of the running experiment, "
                                  "whose split the traffic shares then give).")
    def variants(self, info: Info) -> list[Variant]:
        experiment = info.context.experiment
        variants = experiment.variants if experiment is not None else info.context.engine.bundle.variants
        return [Variant.from_domain(v, variants.traffic.get(v.name, 0.0)) for v in variants]

    @strawberry.field(description="The model bundle being served.")
    def model(self, info: Info) -> Model:
        return Model.from_domain(info.context.engine)
