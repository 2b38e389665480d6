"""The API process loads what serving needs and nothing else (../shared/DESIGN.md, "Training apart
from serving"): whatever signals its bundle holds, a server never imports torch, torch_geometric,
scikit-learn, Dask, pandas or pyarrow, so a replica costs little memory and starts fast.

The real ``hybridrec serve`` runs on a bundle of every signal and answers what serving does with
them: explained recommendations, an explanation, similar items, a fold-in of a new user's
interaction, and an item added to the catalogue. When it stops, the server process writes the
names of the modules it holds (``sys.modules``: everything imported at start-up and while it
served) to a file, which the test reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from etl.dataset import Dataset
from bench.processes import start_uvicorn
from bench.tiny import publish_bundle
from models.base import SIGNAL_MODULES, FactorModel, TrainData, TrainingOptions

pytest_plugins = ["tests.api_helpers"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TRAINING_ONLY = ("torch", "torch_geometric", "sklearn", "dask", "distributed", "training", "pandas", "pyarrow")
"""Top-level packages that only training uses (fits, Dask dataframes and clusters, the pipeline and tuner,
the tables of ingest and the trainer: a bundle's vocabularies and item table are JSON)."""

RECS = """query($u: ID!) { recommendations(userId: $u, first: 5) { onlineInteractions items { score item { id }
  explanation { sentence contributions { signal value } drivers { similarity item { id } } } } } }"""
EXPLAIN = """query($u: ID!, $i: ID!) { explain(userId: $u, itemId: $i) { __typename
  ... on Explanation { score contributions { signal value } drivers { item { id } } } } }"""
SIMILAR = """query($i: ID!) { similarItems(itemId: $i, first: 5) { __typename
  ... on SimilarItems { items { item { id } } } } }"""
RECORD = 'mutation($u: ID!, $i: ID!) { recordInteraction(userId: $u, itemId: $i, value: 5) { __typename } }'
UPSERT = 'mutation($items: [ItemInput!]!) { upsertItems(items: $items) { added served } }'
NEW_ITEM = {"id": "new-1", "title": "Zebra Crossing", "genres": ["Comedy"], "tags": ["funny"], "year": 2026}


@pytest.fixture(scope="module")
def every_signal_root(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset,
                      tiny_models: dict[str, FactorModel], client: Any) -> Path:
    """A bundle root whose version holds every signal of models.base.SIGNAL_MODULES, fit small;
    content with title words too (an added item's embedding then reads its title)."""
    from models.content import ContentConfig, ContentModel
    from models.lightgcn import LightGCN, LightGCNConfig
    from models.sequence import SequenceConfig, SequenceModel
    from models.svd import SVDConfig, SVDItemItem

    models: dict[str, FactorModel] = dict(tiny_models)
    data = TrainData(tiny_dataset, split="train")
    options = TrainingOptions(client=client, device="cpu", seed=0)
    models["content"] = ContentModel(ContentConfig(dim=8, title_weight=0.5)).fit(data, options)
    models["lightgcn"] = LightGCN(LightGCNConfig(embedding_dim=8, num_layers=2, epochs=3, eval_every=1,
                                                 batch_size=64)).fit(data, options)
    models["svd"] = SVDItemItem(SVDConfig(factors=8)).fit(data, options)
    models["sequence"] = SequenceModel(SequenceConfig(factors=8)).fit(data, options)
    assert set(models) == set(SIGNAL_MODULES), "a signal is missing from the bundle"
    root = tmp_path_factory.mktemp("footprint") / "bundles"
    publish_bundle(root, tiny_dataset, models, version="v1")
    return root


def _data(http: httpx.Client, query: str, **variables: Any) -> dict[str, Any]:
    body = http.post("/graphql", json={"query": query, "variables": variables}).json()
    assert not body.get("errors"), body
    return body["data"]


def test_a_server_answers_every_signal_without_training_libraries(every_signal_root: Path, tmp_path: Path) -> None:
    env = {"HYBRIDREC_BUNDLE_ROOT": str(every_signal_root), "HYBRIDREC_EVENTS_DIR": str(tmp_path / "events"),
           "HYBRIDREC_ACCESS_LOG": "false", "HYBRIDREC_CACHE_TTL": "0",
           "HYBRIDREC_DEADLINE": "60"}  # not the 5 s default: a request may meet a loaded, shared machine
    modules_file = tmp_path / "modules.txt"
    server = start_uvicorn(env, tmp_path / "uvicorn.log", modules_file=modules_file)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            recs = _data(http, RECS, u="1")["recommendations"]["items"]
            top = recs[0]["item"]["id"]
            explained = _data(http, EXPLAIN, u="1", i=top)["explain"]
            similar = _data(http, SIMILAR, i=top)["similarItems"]
            assert _data(http, RECORD, u="newcomer", i=top)["recordInteraction"]["__typename"] == "InteractionRecorded"
            folded = _data(http, RECS, u="newcomer")["recommendations"]
            added = _data(http, UPSERT, items=[NEW_ITEM])["upsertItems"]
            similar_new = _data(http, SIMILAR, i=NEW_ITEM["id"])["similarItems"]
    finally:
        server.stop()

    assert len(recs) == 5 and all(r["explanation"]["contributions"] for r in recs)
    assert explained["__typename"] == "Explanation" and {c["signal"] for c in explained["contributions"]} >= {
        "COLLABORATIVE", "CONTENT", "GRAPH"}
    assert similar["__typename"] == "SimilarItems" and similar["items"]
    assert folded["onlineInteractions"] == 1 and top not in [r["item"]["id"] for r in folded["items"]]
    assert (added["added"], added["served"]) == (1, True)
    assert similar_new["__typename"] == "SimilarItems" and similar_new["items"]

    imported = set(modules_file.read_text().split())
    served_by = {"graphql_api.engine", "hybrid.bundle", "hybrid.explain", "models.content", "models.lightgcn",
                 "usearch"}
    assert served_by <= imported, f"the server's modules lack {sorted(served_by - imported)}"
    training = sorted(m for m in imported if m.split(".")[0] in TRAINING_ONLY)
    assert not training, (f"the API process imported {sorted({m.split('.')[0] for m in training})} "
                          f"({len(training)} modules, e.g. {training[:5]})")


BLAS_THREADS = """
import json, sys
import numpy as np
from threadpoolctl import threadpool_info
from graphql_api.app import create_app
from graphql_api.engine import Engine
from graphql_api.settings import Settings

create_app(Settings(bundle_root=sys.argv[1], events_dir=sys.argv[2], dev_mode=True))
engine = Engine.load(sys.argv[1])
engine.bundle.fusion.models["als"].pull_operands(np.array([0, 1, 2]), np.array([3, 4]))  # scipy's Cholesky
print(json.dumps({i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
"""


def test_a_serving_process_runs_every_blas_library_on_one_thread(api_root: Path, tmp_path: Path) -> None:
    """numpy and scipy each bring an OpenBLAS; a limit reaches only the libraries loaded when it is
    set, and scipy's (the ALS fold-in's Cholesky) loads after start-up unless serving_threads loads
    it first. Left on two threads, explained answers took 10 ms of CPU each instead of 2.8 (paired
    run of bench/api_load.py on the six-signal ml-latest-small bundle)."""
    import json
    import subprocess
    import sys

    from bench.processes import REPO

    done = subprocess.run([sys.executable, "-c", BLAS_THREADS, str(api_root), str(tmp_path / "events")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert any("scipy.libs" in path for path in threads) and any("numpy.libs" in path for path in threads)
    assert set(threads.values()) == {1}, threads

