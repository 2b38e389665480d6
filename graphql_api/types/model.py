"""``Model``: the bundle being served."""

from __future__ import annotations

from datetime import datetime

import strawberry

from graphql_api.engine import Engine
from graphql_api.types.dataset_info import DatasetInfo
from graphql_api.types.metric import Metric
from graphql_api.types.signal import Signal
from graphql_api.types.signal_weight import SignalWeight


@strawberry.type(description="The model bundle this server answers from.")
class Model:
    version: str
    trained_at: datetime = strawberry.field(description="When the bundle was published.")
    signals: list[Signal]
    tuned_weights: list[SignalWeight]
    dataset: DatasetInfo
    metrics: list[Metric] = strawberry.field(description="Test metrics recorded with the bundle.")

    @classmethod
    def from_domain(cls, engine: Engine) -> Model:
        return cls(
            version=engine.version,
            trained_at=engine.created_at,
            signals=[Signal.from_domain(s) for s in engine.signals],
            tuned_weights=SignalWeight.from_domain(engine.bundle.weights),
            dataset=DatasetInfo.from_domain(engine.bundle.manifest.dataset),
            metrics=Metric.from_domain(engine.bundle.manifest.metrics),
        )
