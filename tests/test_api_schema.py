"""schema.graphql is the exported SDL of the code-first schema; these fail when they drift apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from strawberry.printer import print_schema

from graphql_api.schema import build_schema, schema
from graphql_api.settings import Limits

REPO = Path(__file__).resolve().parents[1]
SDL = REPO / "schema.graphql"
FIX = "regenerate it: strawberry export-schema graphql_api.schema:schema --output schema.graphql"


def test_schema_file_matches_code() -> None:
    assert SDL.read_text() == print_schema(schema) + "\n", f"schema.graphql is out of date; {FIX}"


def test_export_schema_cli_reproduces_the_file() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "strawberry", "export-schema", "graphql_api.schema:schema"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    assert out.strip() == SDL.read_text().strip(), f"schema.graphql differs from export-schema; {FIX}"


def test_limits_do_not_change_the_sdl() -> None:
    strict = build_schema(Limits(max_depth=3, max_aliases=1, max_tokens=50, introspection=False))
    assert print_schema(strict) == print_schema(schema)


def test_canonical_query_fields_exist() -> None:
    sdl = SDL.read_text()
    for needle in ("recommendations(userId: ID!, first: Int! = 10, variant: String = null, "
                   "weights: BlendWeightsInput = null, filter: ItemFilterInput = null, excludeSeen: Boolean! = true)",
                   "similarItems(itemId: ID!", "explain(userId: ID!, itemId: ID!", "searchItems(title: String!",
                   "recordInteractions(batch: [InteractionInput!]!)", "deleteUserData(userId: ID!)",
                   "enum SimilaritySignal {\n  FUSED\n  COLLABORATIVE\n  CONTENT\n  GRAPH\n}"):
        assert needle in sdl, needle
