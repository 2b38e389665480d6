"""The one signal registry (models/signals.py): every list of signal names derives from it."""

from __future__ import annotations

import pytest

from graphql_api.engine import SIGNAL_NAMES
from graphql_api.types.blend_weights_input import BlendWeightsInput
from graphql_api.types.signal import Signal
from graphql_api.types.similarity_signal import SimilaritySignal
from hybrid.explain import SIGNAL_LABELS
from hybrid.fusion import SIGNAL_ORDER
from hybrid.item_maps import MAPPED_KINDS
from training.pipeline import DEFAULT_SIGNALS
from hybrid.variants import Variants
from models.base import SIGNAL_MODULES, model_class
from models.signals import SIGNALS, driver_signals, signal, signal_names


def test_the_six_signals_keep_their_names_labels_and_graphql_values() -> None:
    assert {s.name: (s.kind, s.label, s.graphql) for s in SIGNALS} == {
        "als": ("als", "collaborative", "COLLABORATIVE"),
        "content": ("content", "content", "CONTENT"),
        "lightgcn": ("lightgcn", "graph", "GRAPH"),
        "popularity": ("popularity", "popularity", "POPULARITY"),
        "svd": ("svd", "item-item", "SPECTRAL"),
        "sequence": ("sequence", "what-comes-next", "SEQUENTIAL"),
    }
    assert SIGNAL_ORDER == ("als", "content", "lightgcn", "popularity")
    assert DEFAULT_SIGNALS == ("als", "content", "lightgcn", "popularity", "sequence", "svd")
    assert MAPPED_KINDS == ("als", "lightgcn", "svd", "sequence")
    assert driver_signals() == ("als", "lightgcn", "content", "svd", "sequence")


@pytest.mark.parametrize("spec", SIGNALS, ids=lambda s: s.name)
def test_every_list_derives_from_the_registry(spec) -> None:
    assert signal(spec.name) is spec
    assert SIGNAL_NAMES[spec.name] == spec.graphql
    assert SIGNAL_LABELS[spec.name] == spec.label
    assert Signal.from_domain(spec.name) is Signal[spec.graphql]
    assert Signal[spec.graphql].value == spec.name
    assert (spec.graphql in SimilaritySignal.__members__) == spec.similarity
    assert BlendWeightsInput(**{spec.graphql.lower(): 2.0}).to_domain() == {spec.name: 2.0}
    assert SIGNAL_MODULES[spec.kind] == spec.module
    assert model_class(spec.kind).kind == spec.kind
    assert spec.name in DEFAULT_SIGNALS


def test_the_schema_lists_exactly_the_registry() -> None:
    assert [m.value for m in Signal] == list(signal_names())
    assert len(BlendWeightsInput.__annotations__) == len(SIGNALS)
    assert [m.name for m in SimilaritySignal] == ["FUSED", "COLLABORATIVE", "CONTENT", "GRAPH"]
    with pytest.raises(ValueError):
        Signal.from_domain("fused")
    with pytest.raises(ValueError, match="unknown signal 'ease'; known: als, content"):
        signal("ease")


def test_single_signal_variants_are_described_by_the_registry() -> None:
    variants = Variants(("als", "svd"), {"als": 1.0, "svd": 1.0})
    assert variants.get("svd").description == signal("svd").description
    assert variants.get("als").description == "collaborative signal only (implicit ALS)"
