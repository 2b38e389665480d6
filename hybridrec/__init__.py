"""hybridrec's Python API: what the CLI does, as functions a notebook or a script can call.

The pieces, in the order a data scientist uses them (docs/walkthrough.py runs them all)::

    from hybridrec import (cluster_client, close_client, read_source, ingest, Dataset, PipelineConfig,
                           GAConfig, training_options, run_pipeline, load_bundle, HybridRecommender)

    client = cluster_client()                          # a LocalCluster; its dashboard URL is printed
    ingest(read_source("ml-latest-small"), "work/dataset", client=client)
    result = run_pipeline(Dataset.open("work/dataset"), PipelineConfig(signals=("als", "content", "popularity")),
                          training_options(client), bundle_root="work/bundles")
    print(result.table())                              # validation and test NDCG@10 per signal and the blend
    rec = HybridRecommender(load_bundle("work/bundles"))
    print(rec.recommend("1", 10).item_ids)
    close_client()

``signals()`` names the signals (models/signals.py, the one registry), ``GraphQLClient`` queries a
running server (``hybridrec serve``). Training needs a Dask client (models and the tuner are handed
it and raise ClientRequiredError without one); serving in-process (``HybridRecommender``) does not.
"""

from __future__ import annotations

from cluster.client import close_client
from cluster.client import get_client as cluster_client
from cluster.jobs import read_source
from cluster.placement import training_options
from etl.dataset import Dataset
from etl.errors import ClientRequiredError, DataError, HybridrecError
from etl.ingest import ingest
from hybrid.bundle import list_bundles
from hybrid.bundle import load as load_bundle
from training.pipeline import PipelineConfig, PipelineResult, evaluate_fusion, publish_bundle, run_pipeline, tune
from hybrid.recommender import HybridRecommender
from training.tuner import GAConfig
from hybridrec.graphql_client import GraphQLClient, GraphQLRequestError
from models.base import TrainingOptions
from models.signals import signal_names as signals

__all__ = [
    "ClientRequiredError",
    "DataError",
    "Dataset",
    "GAConfig",
    "GraphQLClient",
    "GraphQLRequestError",
    "HybridRecommender",
    "HybridrecError",
    "PipelineConfig",
    "PipelineResult",
    "TrainingOptions",
    "close_client",
    "cluster_client",
    "evaluate_fusion",
    "ingest",
    "list_bundles",
    "load_bundle",
    "publish_bundle",
    "read_source",
    "run_pipeline",
    "signals",
    "training_options",
    "tune",
]
