"""Popularity: the baseline, and the popularity part of the blend.

Item coordinate = log(1 + train count), user coordinate = 1, so it fits the fused-embedding
identity (../shared/DESIGN.md) as a one-dimensional signal. Ranking equals ranking by count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.base import FactorModel, TrainData, TrainingOptions, register


@dataclass
class PopularityConfig:
    """Popularity has no hyperparameters; the config exists so every signal looks alike."""


@register
class Popularity(FactorModel):
    kind = "popularity"
    Config = PopularityConfig
    refolds = False  # a count: refit on 'train', it costs less than a fold-in and counts the latest events

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        counts = np.asarray((self.seen_ > 0).sum(axis=0), dtype=np.float64).ravel()
        self.item_factors_ = np.log1p(counts).astype(np.float32)[:, None]
        self.user_factors_ = np.ones((len(self.users_), 1), dtype=np.float32)

    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        return np.ones(1, dtype=np.float32)
