"""Prometheus metrics of one app instance (its own registry, so test apps do not collide).

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess
mode) so that /metrics sums every worker; otherwise a scrape sees the worker that answered.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The API's metrics; ``render()`` gives the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram(
            "hybridrec_request_seconds",
            "GraphQL request latency by operation (root fields) and whether the answer was cached",
            ["operation", "cached"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter("hybridrec_cache", "Answer-cache lookups", ["result"], registry=r)
        self.variants = Counter("hybridrec_variant", "Recommendations served per blend variant", ["variant"], registry=r)
        self.errors = Counter("hybridrec_errors", "Errors by kind", ["kind"], registry=r)
        self.events = Counter("hybridrec_interactions_accepted", "Interactions accepted by the mutations", registry=r)
        self.reloads = Counter("hybridrec_bundle_reloads", "Bundles switched to by hot reload", registry=r)
        self.bundle = Gauge("hybridrec_bundle_info", "The bundle being served (value 1)", ["version"], registry=r)
        self.search_batch = Histogram(
            "hybridrec_search_batch_size",
            "Queries ranked together by one index search (concurrent requests batched, graphql_api.batching)",
            buckets=(1, 2, 4, 8, 16),
            registry=r,
        )
        self.redis_up = Gauge("hybridrec_redis_up", "1 when Redis answers, 0 when it does not", registry=r)
        # experiments (hybrid.experiments): per arm, what was shown and what users did after it
        arm = ["experiment", "variant"]
        self.experiment = Gauge("hybridrec_experiment_running", "The running experiment (value 1)", ["experiment"],
                                registry=r)
        self.exposures = Counter("hybridrec_experiment_exposures", "Distinct lists shown under an experiment arm "
                                 "(a cached answer re-shows its list: not counted again)", arm, registry=r)
        self.outcomes = Counter("hybridrec_experiment_outcomes", "Interactions recorded with an exposure id", arm,
                                registry=r)
        self.clicks = Counter("hybridrec_experiment_clicks", "Outcomes whose item was in the shown list", arm,
                              registry=r)
        self.conversions = Counter("hybridrec_experiment_conversions", "Clicks whose value reached the experiment's "
                                   "conversion value", arm, registry=r)
        self.outcome_ndcg = Counter("hybridrec_experiment_outcome_ndcg", "Sum over outcomes of the NDCG of the "
                                    "interacted item against the shown list (1/log2(rank+1), 0 when not shown); "
                                    "divided by outcomes: mean NDCG, and clicks/outcomes the hit rate", arm,
                                    registry=r)

    def set_bundle(self, version: str) -> None:
        self.bundle.clear()
        self.bundle.labels(version=version).set(1)

    def set_experiment(self, name: str | None) -> None:
        self.experiment.clear()
        if name is not None:
            self.experiment.labels(experiment=name).set(1)

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
