"""etl.jsonable: what the pipeline, bundles and benches write as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from etl.jsonable import jsonable


@dataclass
class Config:
    factors: int
    rate: float
    path: Path


def test_converts_what_the_project_records():
    value = {"config": Config(np.int64(8), np.float32(0.5), Path("/x")), 3: (1, np.nan, float("inf")),
             "array": np.arange(3, dtype=np.int32), "flag": np.bool_(True), "none": None}
    out = jsonable(value)
    assert out == {"config": {"factors": 8, "rate": 0.5, "path": "/x"}, "3": [1, None, None], "array": [0, 1, 2],
                   "flag": True, "none": None}
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_names_what_it_cannot_write():
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        jsonable({"a": {1, 2}})
