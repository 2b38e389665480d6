"""Blend variants: generated and operator variants, sticky traffic split, request weights."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hybrid.variants import CUSTOM, Variants

SIGNALS = ("als", "content", "lightgcn", "popularity")
TUNED = {"als": 1.0, "content": 0.2, "lightgcn": 0.7, "popularity": 0.1}

TOML = """
salt = "exp-1"

[traffic]
tuned = 0.5
als_heavy = 0.3
als = 0.2

[variants.als_heavy]
description = "twice the collaborative weight"
weights = { als = 2.0, content = 0.2, lightgcn = 0.7, popularity = 0.1 }

[variants.content_first]
weights = { content = 1.0, popularity = 0.3 }
cold_start = "content"
"""


@pytest.fixture
def variants(tmp_path: Path) -> Variants:
    path = tmp_path / "variants.toml"
    path.write_text(TOML)
    return Variants.from_file(path, SIGNALS, TUNED)


def test_generated_and_operator_variants(variants: Variants):
    assert variants.names == ("tuned", *SIGNALS, "als_heavy", "content_first")
    assert variants.get("tuned").weights == TUNED
    assert variants.get("content").weights == {"als": 0.0, "content": 1.0, "lightgcn": 0.0, "popularity": 0.0}
    assert variants.get("content").cold_start == "content" and variants.get("als").cold_start == "popularity"
    heavy = variants.get("als_heavy")
    assert heavy.weights["als"] == 2.0 and heavy.description == "twice the collaborative weight"
    assert variants.get("content_first").weights == {"als": 0.0, "content": 1.0, "lightgcn": 0.0, "popularity": 0.3}
    assert variants.get("content_first").cold_start == "content"


def test_only_present_signals_get_single_signal_variants():
    v = Variants(("als", "popularity"), {"als": 1.0, "popularity": 0.5})
    assert v.names == ("tuned", "als", "popularity")
    with pytest.raises(ValueError, match="unknown signal"):
        Variants(("als", "popularity"), {"als": 1.0}, {"x": {"weights": {"content": 1.0}}})


def test_unknown_variant_lists_known_ones(variants: Variants):
    known = "tuned, als, content, lightgcn, popularity, als_heavy, content_first"
    with pytest.raises(ValueError, match=rf"unknown variant 'nope'; known: {known}$"):
        variants.get("nope")
    with pytest.raises(ValueError, match="unknown variant"):
        variants.resolve("u1", variant="nope")


def test_sticky_assignment_is_stable(variants: Variants):
    ids = [f"user-{i}" for i in range(200)]
    first = [variants.assign(u) for u in ids]
    again = Variants.from_dict(json.loads(json.dumps(variants.to_dict())))
    assert [again.assign(u) for u in ids] == first
    assert [variants.resolve(u).name for u in ids] == first
    # golden values: sha256 of salt and id, so the same in every process, server and release
    # (Python's hash() of a str changes per process and would fail this)
    code = {"tuned": "t", "als_heavy": "h", "als": "a"}
    assert "".join(code[variants.assign(f"user-{i}")] for i in range(40)) == "htthtahttttttttaaththhthatttthttttathttt"
    assert variants.bucket("user-0") == pytest.approx(0.22683544587537144, abs=1e-15)
    # a new salt reshuffles
    config = variants.to_dict() | {"salt": "exp-2"}
    other = Variants.from_dict(config)
    assert sum(a != b for a, b in zip(first, (other.assign(u) for u in ids), strict=True)) > 40


def test_split_proportions_follow_shares(variants: Variants):
    counts = Counter(variants.assign(str(i)) for i in range(10_000))
    assert set(counts) == {"tuned", "als_heavy", "als"}
    for name, share in {"tuned": 0.5, "als_heavy": 0.3, "als": 0.2}.items():
        assert abs(counts[name] / 10_000 - share) < 0.02, (name, counts)


def test_request_weights_are_validated(variants: Variants):
    v = variants.resolve("u1", weights={"als": 1.0, "content": 0.5})
    assert v.name == CUSTOM and v.weights == {"als": 1.0, "content": 0.5, "lightgcn": 0.0, "popularity": 0.0}
    for bad, message in [
        ({"als": -1.0}, ">= 0"),
        ({"als": float("nan")}, "finite"),
        ({"bogus": 1.0}, "unknown signal"),
        ({"als": 0.0}, "all zero"),
    ]:
        with pytest.raises(ValueError, match=message):
            variants.resolve("u1", weights=bad)
    with pytest.raises(ValueError, match="either a variant or explicit weights"):
        variants.resolve("u1", variant="als", weights={"als": 1.0})


def test_bad_operator_files(tmp_path: Path):
    def load(text: str, suffix: str = ".json") -> Variants:
        path = tmp_path / f"v{suffix}"
        path.write_text(text)
        return Variants.from_file(path, SIGNALS, TUNED)

    with pytest.raises(ValueError, match="cannot be redefined"):
        load(json.dumps({"tuned": {"weights": {"als": 1.0}}}))
    with pytest.raises(ValueError, match="needs a 'weights'"):
        load(json.dumps({"x": {"description": "no weights"}}))
    with pytest.raises(ValueError, match="unknown variant"):
        load(json.dumps({"traffic": {"ghost": 1.0}}))
    with pytest.raises(ValueError, match="all zero"):
        load(json.dumps({"traffic": {"tuned": 0.0}}))
    with pytest.raises(ValueError, match="cold_start"):
        load(json.dumps({"x": {"weights": {"als": 1.0}, "cold_start": "random"}}))
    with pytest.raises(ValueError, match="not valid TOML"):
        load("[variants", ".toml")
    with pytest.raises(ValueError, match="does not exist"):
        Variants.from_file(tmp_path / "missing.json", SIGNALS, TUNED)
    # the bare form (variants at the top level) works too
    bare = load(json.dumps({"mine": {"weights": {"lightgcn": 1.0}}, "traffic": {"mine": 1}}))
    assert bare.assign("anyone") == "mine"


def test_round_trip_through_dict(variants: Variants):
    again = Variants.from_dict(variants.to_dict())
    assert again.names == variants.names
    assert again.traffic == variants.traffic and again.salt == "exp-1"
    assert [again.get(n) for n in again.names] == [variants.get(n) for n in variants.names]
