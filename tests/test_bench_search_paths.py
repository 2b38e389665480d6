"""bench/search_paths.py compares like with like: every path ranks the same top k as the index's
exact search, excluded items left out, on data where int8 codes keep the order."""

from __future__ import annotations

import numpy as np

from bench.search_paths import paths
from hybrid.index import FusedIndex, IndexConfig


def test_every_path_ranks_the_exact_top_k() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 24)).astype(np.float32)
    index = FusedIndex.build(vectors, IndexConfig(connectivity=8, expansion_add=32, expansion_search=32))
    queries = rng.normal(size=(5, 24)).astype(np.float32)
    excludes = [rng.choice(300, size=size, replace=False).astype(np.int64) for size in (0, 1, 7, 30, 120)]
    expected = np.stack([index.exact_search(q, 5, exclude=ex)[0] for q, ex in zip(queries, excludes, strict=True)])
    for name, way in paths(index, 5).items():
        found = way(queries, excludes)
        assert np.array_equal(found, expected), name
        assert not any(np.isin(f, ex).any() for f, ex in zip(found, excludes, strict=True)), name
