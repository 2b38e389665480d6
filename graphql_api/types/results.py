"""Result unions: an answer, or the typed error an expected failure gives.

(Unions only name their members, so they share this module.)
"""

from __future__ import annotations

from typing import Annotated

import strawberry

from graphql_api.types.explanation import Explanation
from graphql_api.types.interaction_recorded import InteractionRecorded
from graphql_api.types.item import Item
from graphql_api.types.item_not_found import ItemNotFound
from graphql_api.types.similar_items import SimilarItems

ItemResult = Annotated[Item | ItemNotFound, strawberry.union("ItemResult")]
SimilarItemsResult = Annotated[SimilarItems | ItemNotFound, strawberry.union("SimilarItemsResult")]
ExplainResult = Annotated[Explanation | ItemNotFound, strawberry.union("ExplainResult")]
RecordInteractionResult = Annotated[InteractionRecorded | ItemNotFound, strawberry.union("RecordInteractionResult")]
