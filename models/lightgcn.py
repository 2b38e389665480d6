"""The LightGCN signal: graph-propagated embeddings, score = <final user, final item>.

User and item vectors are LightGCN's final (layer-averaged) embeddings, so the signal fits
the FactorModel contract as it is (../shared/DESIGN.md, "The fused-embedding identity"). Training
runs as one named Dask task (``lightgcn-train-*``) through models.lightgcn_trainer.

Tuning protocol: fit on ``TrainData(split='fit', validation='validation')`` to early-stop at
``best_epoch_``; the final model is refit on ``'train'`` with ``refit_config()``, for that many
epochs (no validation then), or on large data it is the tuned model refolded on 'train'
(training.pipeline.refit_signals), its users folded in over ``user_projection_``.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from models.base import LinearFoldIn, SharedValues, TrainData, TrainingOptions, gather_shared, register, require_client

if TYPE_CHECKING:
    from models.lightgcn_trainer import LightGCNResult


@dataclass
class LightGCNConfig:
    """Hyper-parameters of LightGCN, trained in the graph's spectral domain
    (models.lightgcn_trainer.SpectralLightGCN: layer-0 embeddings in the span of the top
    2 x ``rank`` eigenvectors of the normalised adjacency, propagation in closed form).

    The defaults are chosen on ml-latest-small (DESIGN.md protocol): fit on 'fit', early-stopped
    on validation (every 5 epochs, patience 5), the best validation NDCG@10 was 0.1233 at epoch 110
    (135 s on a single-threaded Dask worker, `bench/quality.py`, 2026-12-07); refit on 'train' for
    those 110 epochs: test NDCG@10 0.1196, Recall@10 0.0640 (142 s). (The first basis, 16 extra
    dimensions and 4 iterations, peaked at epoch 40 with the same 0.1233, test 0.1204, on a
    2-thread worker.) The full-graph trainer this replaced reached 0.1233 at epoch 280 (201 s a
    fit) and test 0.1189 / 0.0590. Beside it, on validation (first basis): rank 128 0.1192,
    rank 512 0.1251 (twice the SVD), batch 1024 0.1246 at epoch 20 then falling, batch 4096 and
    8192 slower per epoch to the same level, l2 1e-2 0.1216 at epoch 20 then falling.
    """

    embedding_dim: int = 64
    """Size of the layer-0 embeddings (and of the final vectors)."""
    num_layers: int = 3
    """Propagation layers; final embeddings average layers 0..num_layers."""
    learning_rate: float = 1e-2
    """Adam step size."""
    batch_size: int = 2048
    """Positive interactions per BPR step."""
    epochs: int = 200
    """Epochs of a final fit; with validation, the most epochs before early stopping."""
    epoch_size: int | None = None
    """Positives an epoch draws (without repetition); None: all of them. A step's cost does not
    grow with the graph, so on a large graph a shorter epoch lets early stopping look more often."""
    rank: int = 256
    """Singular pairs of the normalised interaction matrix kept (the basis of layer 0)."""
    power_iterations: int = 6
    """Subspace iterations of the truncated SVD (models.lightgcn_trainer.spectral_basis)."""
    l2: float = 1e-3
    """L2 weight on the batch's layer-0 embeddings (half squared norms / batch size, in expectation over batches)."""
    negatives: int = 4
    """Uniform negatives sampled per positive (their loss and L2 terms are averaged)."""
    init_std: float = 0.1
    """Standard deviation of the normal initialisation of the spectral parameters P and Q (a layer-0
    row's scale is then init_std x the norm of its basis row, about sqrt(rank / rows))."""
    patience: int = 5
    """Evaluations without a better validation NDCG@10 before stopping."""
    eval_every: int = 5
    """Epochs between validation evaluations."""
    validation_users: int | None = None
    """Validation users sampled for early stopping (seeded); None evaluates all of them."""

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "num_layers", "batch_size", "epochs", "negatives", "patience", "eval_every",
                     "rank", "power_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("learning_rate", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2!r}")
        if self.epoch_size is not None and (
            isinstance(self.epoch_size, bool) or not isinstance(self.epoch_size, int) or self.epoch_size < 1
        ):
            raise ValueError(f"epoch_size must be None or an integer >= 1, got {self.epoch_size!r}")
        if self.validation_users is not None and (
            isinstance(self.validation_users, bool) or not isinstance(self.validation_users, int) or self.validation_users < 1
        ):
            raise ValueError(f"validation_users must be None or an integer >= 1, got {self.validation_users!r}")
        if self.eval_every > self.epochs:
            raise ValueError(f"eval_every ({self.eval_every}) must not exceed epochs ({self.epochs})")


@register
class LightGCN(LinearFoldIn):
    """LightGCN (He et al. 2020) trained with BPR on a Dask worker.

    Learned state: ``user_factors_``, ``item_factors_`` (final embeddings), ``item_degrees_`` and
    ``user_projection_`` (for fold_in), ``epochs_run_``, and with validation ``best_epoch_`` / ``best_ndcg_``; after a
    fit, ``device_`` says where it trained ('cpu', 'cuda:0').
    """

    kind = "lightgcn"
    Config = LightGCNConfig
    best_epoch_: int | None = None
    """The validated best epoch count of a fit with validation (early stopping); None otherwise."""
    user_projection_: np.ndarray | None = None
    """(n_items, dim) float32 rows a history is folded over (``projection_rows``); None in a
    model saved before they were kept."""

    def refit_config(self) -> LightGCNConfig:
        """After a fit that early-stopped on validation: the config for its validated epoch count
        (``epochs`` = ``best_epoch_``, ``eval_every`` at most that). Otherwise the config as given."""
        if self.best_epoch_ is None:
            return self.config
        best = int(self.best_epoch_)
        return replace(self.config, epochs=best, eval_every=min(self.config.eval_every, best))

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        # torch is imported by fitting only: a server loads this model to score and fold in
        from models.lightgcn_trainer import train_lightgcn

        train = data.matrix()
        validation = data.matrix(data.validation) if data.validation is not None else None
        client = require_client(options.client, "lightgcn fit")
        resources = dict(options.resources) if options.resources else None
        shared = SharedValues(client, [train] if validation is None else [train, validation])
        key = f"lightgcn-train-{uuid.uuid4().hex}"

        def submit(fresh: bool, suffix: str) -> list[Any]:
            train_f, *val_f = shared.get(fresh)
            return [client.submit(
                train_lightgcn,
                train_f,
                val_f[0] if val_f else None,
                self.config,
                device=options.device,
                seed=options.seed,
                progress=options.progress,
                key=key + suffix,
                pure=False,
                resources=resources,
            )]

        result: LightGCNResult = gather_shared(client, key, submit)[0]
        shared.release()
        if resources and result.device == "cpu":
            warnings.warn(
                f"LightGCN ran on CPU: worker {result.worker} advertises a GPU, but its torch sees no CUDA device",
                RuntimeWarning,
                stacklevel=3,
            )
        self.user_factors_ = np.asarray(result.user_embeddings, dtype=np.float32)
        self.item_factors_ = np.asarray(result.item_embeddings, dtype=np.float32)
        self.user_projection_ = None if result.user_projection is None else np.asarray(result.user_projection, np.float32)
        self.item_degrees_ = np.diff(train.tocsc().indptr).astype(np.float32)
        self.epochs_run_ = int(result.epochs_run)
        self.best_epoch_ = result.best_epoch
        self.best_ndcg_ = result.best_ndcg
        self.history_ = list(result.history)
        self.device_ = result.device

    def refold(self, data: TrainData) -> LightGCN:
        """``FactorModel.refold``; ValueError for a model saved without its fold-in rows, whose
        fold-in (one propagation step over the item vectors, about 0.66 of a trained vector's norm)
        would not match the scale its blend weight was tuned in: fit such a model again."""
        if self.user_projection_ is None:
            raise ValueError("lightgcn: this model has no fold-in rows (user_projection.npy: saved before they were "
                             "kept); fit it again on the split (refit 'fit') rather than refolding it")
        return super().refold(data)

    def history_weights(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The distinct rows of a history and 1 / sqrt(d_j n) for each (d_j: the item's degree in the
        training graph, n: the distinct items): the normalised adjacency's row of a user with that
        history. The graph is binary, so ``values`` are only checked for shape, not used."""
        items, _ = self._history(items, values)
        items = np.unique(items)
        if items.size == 0:
            return items, np.zeros(0, dtype=np.float64)
        return items, 1.0 / np.sqrt(np.maximum(self.item_degrees_[items].astype(np.float64), 1.0) * items.size)

    def projection_rows(self, rows: np.ndarray) -> np.ndarray:
        """The rows a history is folded over (float64): ``user_projection_`` (V S^-1 M_users, see
        models.lightgcn_trainer.SpectralLightGCN.user_projection), with which a trained user's
        history gives back its trained vector to the basis residual, and a new history the basis's
        extension to it. An item without a row there (added while serving, or a model saved before
        the rows were kept) is folded over its item vector: one propagation step, whose vectors
        have about 0.66 of a trained one's norm (median cosine 0.97 on ml-latest-small)."""
        rows = np.asarray(rows, dtype=np.int64)
        known = self.user_projection_
        if known is None:
            return self.item_rows(rows)
        inside = rows < known.shape[0]
        if inside.all():
            return np.asarray(known[rows], dtype=np.float64)
        out = self.item_rows(rows)
        out[inside] = known[rows[inside]]
        return out

    def fold_in_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        """``fold_in`` of every row, vectorised: the normalised rows of the binary history matrix
        times the fold-in rows of every item."""
        binary = sp.csr_matrix((np.ones(histories.nnz), histories.indices.copy(), histories.indptr.copy()),
                               shape=histories.shape)
        binary.sum_duplicates()  # sorts its indices in place: the history matrix keeps its time order
        binary.data[:] = 1.0
        lengths = np.diff(binary.indptr).astype(np.float64)
        row_scale = np.divide(1.0, np.sqrt(lengths), out=np.zeros_like(lengths), where=lengths > 0)
        col_scale = 1.0 / np.sqrt(np.maximum(self.item_degrees_.astype(np.float64), 1.0))
        weights = sp.csr_matrix(sp.diags(row_scale) @ binary @ sp.diags(col_scale))
        rows = self.projection_rows(np.arange(histories.shape[1]))
        return np.asarray(weights @ rows, dtype=np.float32)

    def _extend_items(self, item_factors: np.ndarray) -> None:
        self.item_degrees_ = np.concatenate([self.item_degrees_, np.zeros(len(item_factors), np.float32)])

    def _extra_state(self) -> dict[str, Any]:
        return {
            "epochs_run": getattr(self, "epochs_run_", None),
            "best_epoch": self.best_epoch_,
            "best_ndcg": getattr(self, "best_ndcg_", None),
        }

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"item_degrees": self.item_degrees_}
        if self.user_projection_ is not None:
            arrays["user_projection"] = self.user_projection_
        return arrays

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.item_degrees_ = arrays["item_degrees"]
        projection = arrays.get("user_projection")
        n_items, dim = self.item_factors_.shape  # items added after the fit have no row (projection_rows)
        if projection is not None and (projection.ndim != 2 or projection.shape[1] != dim
                                       or projection.shape[0] > n_items):
            raise ValueError(f"lightgcn: user_projection.npy has shape {projection.shape}, "
                             f"the item factors {self.item_factors_.shape}")
        self.user_projection_ = projection
        self.epochs_run_ = state.get("epochs_run")
        self.best_epoch_ = state.get("best_epoch")
        self.best_ndcg_ = state.get("best_ndcg")
