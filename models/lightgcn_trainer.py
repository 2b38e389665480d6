"""Training of the LightGCN signal: BPR sampling, Adam, epochs and early stopping.

The propagation model is PyG's ``torch_geometric.nn.models.LightGCN``, a pure ``nn.Module`` over
the bipartite graph (users ``0..U-1``, items ``U..U+I-1``, both edge directions). This module owns
everything around it (as lenskit's ``LightGCNTrainer`` does): the optimiser, uniform negative
sampling, the epoch loop and early stopping on validation NDCG@10 (etl.metrics, fit items
excluded). ``train_lightgcn`` is the function a Dask worker runs (see models.lightgcn).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.nn.conv import LGConv
from torch_geometric.nn.models import LightGCN
from tqdm.auto import tqdm

from etl.errors import DeviceUnavailableError
from etl.metrics import evaluate

if TYPE_CHECKING:
    from models.lightgcn import LightGCNConfig

logger = logging.getLogger(__name__)


@dataclass
class LightGCNResult:
    """What a training run hands back: final (layer-averaged) embeddings and its history."""

    user_embeddings: np.ndarray
    """(n_users, dim) float32."""
    item_embeddings: np.ndarray
    """(n_items, dim) float32."""
    epochs_run: int
    """Epochs trained before stopping."""
    best_epoch: int | None = None
    """Epoch of the kept embeddings when early stopping ran; None without validation."""
    best_ndcg: float | None = None
    """Validation NDCG@10 at ``best_epoch``."""
    history: list[tuple[int, float]] = field(default_factory=list)
    """(epoch, validation NDCG@10) at every evaluation."""
    device: str = "cpu"
    """The torch device the fit ran on ('cpu', 'cuda:0', ...)."""
    worker: str | None = None
    """Address of the Dask worker that ran the fit; None when it ran outside a Dask task."""
    adjacency_seconds: float = 0.0
    """Wall time of building the normalised adjacency and moving it to the device."""
    epoch_seconds: list[float] = field(default_factory=list)
    """Wall time of each epoch's training steps (its evaluation left out)."""


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when this process sees a GPU, else CPU; 'cpu' and 'cuda[:N]' are taken as given.

    Asking for CUDA in a process that sees no GPU is an error (DeviceUnavailableError), not a
    silent fall back to CPU.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device != "cpu" and not torch.cuda.is_available():
        where = _worker_address()
        raise DeviceUnavailableError(
            f"device {device!r} was asked for, but torch {torch.__version__} sees no CUDA device"
            + (f" on Dask worker {where}" if where else "")
        )
    return torch.device(device)


def normalized_adjacency(interactions: sp.csr_matrix) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the user-item graph as a sparse CSR tensor (binary, both directions).

    Normalised once here so that LGConv runs with ``normalize=False``: the same propagation as
    PyG's default, without recomputing the degrees at every batch.
    """
    n_users, n_items = interactions.shape
    r = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    r.sum_duplicates()
    r.eliminate_zeros()
    r.data[:] = 1.0
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)
    norm = sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt)
    norm = sp.csr_matrix(norm, dtype=np.float32)
    norm.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what PyG's spmm uses
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(norm.indptr.astype(np.int64)),
            torch.from_numpy(norm.indices.astype(np.int64)),
            torch.from_numpy(norm.data),
            size=(n_users + n_items, n_users + n_items),
            check_invariants=True,
        )


class _SymmetricSpmm(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``, whose gradient is ``adj @ grad`` again.

    torch's own backward of a CSR product transposes the matrix at every step, which made a
    LightGCN backward pass about 8x its forward pass; the normalised adjacency is symmetric, so
    the transpose is the matrix itself.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, torch.sparse.mm(ctx.adj, grad)


class SymmetricLGConv(LGConv):
    """PyG's LGConv over a pre-normalised symmetric adjacency, with the cheap backward above."""

    def __init__(self) -> None:
        super().__init__(normalize=False)

    def message_and_aggregate(self, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _SymmetricSpmm.apply(adj_t, x)


def build_model(n_nodes: int, config: LightGCNConfig) -> LightGCN:
    """PyG's LightGCN with its convolutions over the symmetric normalised adjacency."""
    model = LightGCN(n_nodes, config.embedding_dim, config.num_layers, normalize=False)
    model.convs = torch.nn.ModuleList(SymmetricLGConv() for _ in range(config.num_layers))
    torch.nn.init.normal_(model.embedding.weight, std=config.init_std)
    return model


class BPRSampler:
    """Uniform negative sampling for BPR: every positive once per epoch, in random order.

    A sampled negative that is one of the user's positives is redrawn for a few vectorised
    rounds; the rare survivors stay (as noise the loss tolerates).
    """

    ROUNDS = 5

    def __init__(self, interactions: sp.csr_matrix, negatives: int, rng: np.random.Generator) -> None:
        csr = sp.csr_matrix(interactions)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        self.users = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
        self.items = csr.indices.astype(np.int64)
        self.n_items = csr.shape[1]
        self.negatives, self.rng = negatives, rng
        self._keys = self.users * self.n_items + self.items  # sorted: canonical CSR

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        # Looked up in sorted order: numpy's binary search narrows from the previous hit, which at
        # 16M positives made a million lookups ~12x faster than in random order.
        keys = users * self.n_items + items
        order = np.argsort(keys)
        wanted = keys[order]
        pos = np.minimum(np.searchsorted(self._keys, wanted), self._keys.size - 1)
        hit = np.empty(keys.size, dtype=bool)
        hit[order] = self._keys[pos] == wanted
        return hit

    def epoch(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (users, positives, negatives) int64 arrays; negatives are (batch, negatives)."""
        order = self.rng.permutation(self.users.size)
        for start in range(0, order.size, batch_size):
            idx = order[start : start + batch_size]
            users = self.users[idx]
            neg = self.rng.integers(0, self.n_items, size=(idx.size, self.negatives))
            # only redrawn negatives are checked again (the others already passed)
            at = np.arange(neg.size)
            flat, rep = neg.reshape(-1), np.repeat(users, self.negatives)
            for _ in range(self.ROUNDS):
                at = at[self._is_positive(rep[at], flat[at])]
                if at.size == 0:
                    break
                flat[at] = self.rng.integers(0, self.n_items, size=at.size)
            yield users, self.items[idx], neg


class LightGCNTrainer:
    """Fits a PyG LightGCN with BPR; early-stops on validation NDCG@10 when validation is given."""

    def __init__(
        self,
        config: LightGCNConfig,
        device: str = "auto",
        seed: int = 0,
        progress: bool = False,
        time_limit: float | None = None,
    ) -> None:
        """``time_limit``: seconds of epochs (evaluations included) after which the fit stops at the
        end of the running epoch, evaluating it when validation is given; None runs every epoch."""
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit must be None or > 0 seconds, got {time_limit!r}")
        self.config = config
        self.device = resolve_device(device)
        self.seed = seed
        self.progress = progress
        self.time_limit = time_limit

    def fit(self, train: sp.csr_matrix, validation: sp.csr_matrix | None = None) -> LightGCNResult:
        """Train on ``train`` (users x items); with ``validation``, keep the best evaluated epoch."""
        cfg = self.config
        n_users, n_items = train.shape
        if validation is not None and validation.shape != train.shape:
            raise ValueError(f"validation shape {validation.shape} differs from train {train.shape}")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        model = build_model(n_users + n_items, cfg).to(self.device)
        started = time.perf_counter()
        adj = normalized_adjacency(train).to(self.device)
        self._sync()
        adjacency_seconds = time.perf_counter() - started
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        sampler = BPRSampler(train, cfg.negatives, rng)
        val = self._validation_rows(validation, rng) if validation is not None else None

        best: tuple[np.ndarray, np.ndarray] | None = None
        best_epoch, best_ndcg, history, stale = None, -np.inf, [], 0
        epoch_seconds: list[float] = []
        epoch = 0
        bar = tqdm(range(1, cfg.epochs + 1), desc="lightgcn", disable=not self.progress)
        started = time.perf_counter()
        for epoch in bar:
            model.train()
            epoch_start = time.perf_counter()
            for users, pos, neg in sampler.epoch(cfg.batch_size):
                loss = self._batch_loss(model, adj, n_users, users, pos, neg)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            self._sync()
            epoch_seconds.append(time.perf_counter() - epoch_start)
            out_of_time = self.time_limit is not None and time.perf_counter() - started >= self.time_limit
            logger.info("lightgcn epoch %d on %s: %.2f s", epoch, self.device, epoch_seconds[-1])
            if val is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time):
                user_emb, item_emb = self._embeddings(model, adj, n_users)
                ndcg = evaluate(lambda rows: user_emb[rows] @ item_emb.T, train, val)["ndcg@10"]
                history.append((epoch, ndcg))
                bar.set_postfix(ndcg=f"{ndcg:.4f}")
                logger.info("lightgcn epoch %d: validation NDCG@10 %.4f", epoch, ndcg)
                if ndcg > best_ndcg:
                    best, best_epoch, best_ndcg, stale = (user_emb, item_emb), epoch, ndcg, 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
            if out_of_time:
                logger.info("lightgcn: time limit of %.0f s reached after epoch %d", self.time_limit, epoch)
                break
        bar.close()
        if best is None:
            best = self._embeddings(model, adj, n_users)
        return LightGCNResult(
            user_embeddings=best[0],
            item_embeddings=best[1],
            epochs_run=epoch,
            best_epoch=best_epoch,
            best_ndcg=None if best_epoch is None else float(best_ndcg),
            history=history,
            device=str(adj.device),
            worker=_worker_address(),
            adjacency_seconds=adjacency_seconds,
            epoch_seconds=epoch_seconds,
        )

    def _sync(self) -> None:
        """Wait for the device's queued work, so that wall times count it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _batch_loss(
        self, model: LightGCN, adj: torch.Tensor, n_users: int, users: np.ndarray, pos: np.ndarray, neg: np.ndarray
    ) -> torch.Tensor:
        """BPR over (user, positive, negative) triples plus L2 on the batch's layer-0 embeddings.

        The L2 term follows the official LightGCN: half the squared norms of the ego embeddings
        of the batch's users, positives and negatives, divided by the batch size.
        """
        b, k = neg.shape
        items = np.concatenate([pos[:, None], neg], axis=1) + n_users  # (b, 1 + k): positive first
        nodes = np.concatenate([users, items.ravel()])
        # Two gathers (index_select: its backward is a plain index_add, no sort; slices of one
        # gather would each zero-fill a gradient of the whole gather).
        final = model.get_embedding(adj)
        user_emb = torch.index_select(final, 0, torch.from_numpy(users).to(self.device))
        item_emb = torch.index_select(final, 0, torch.from_numpy(items.ravel()).to(self.device))
        scores = (item_emb.view(b, 1 + k, -1) * user_emb.unsqueeze(1)).sum(-1)
        bpr = torch.nn.functional.softplus(scores[:, 1:] - scores[:, :1]).mean()
        # Sum over the batch of squared ego norms, as counts per node (negatives averaged over k).
        weights = np.concatenate([np.ones(b), np.tile(np.r_[1.0, np.full(k, 1.0 / k)], b)])
        counts = np.bincount(nodes, weights=weights, minlength=model.num_nodes).astype(np.float32)
        ego_sq = model.embedding.weight.pow(2).sum(-1)
        reg = 0.5 * (torch.from_numpy(counts).to(self.device) @ ego_sq) / b
        return bpr + self.config.l2 * reg

    @staticmethod
    @torch.no_grad()
    def _embeddings(model: LightGCN, adj: torch.Tensor, n_users: int) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        out = model.get_embedding(adj).float().cpu().numpy()
        return np.ascontiguousarray(out[:n_users]), np.ascontiguousarray(out[n_users:])

    def _validation_rows(self, validation: sp.csr_matrix, rng: np.random.Generator) -> sp.csr_matrix:
        """The validation matrix, restricted to a seeded sample of its users when configured."""
        size = self.config.validation_users
        val = sp.csr_matrix(validation)
        users = np.flatnonzero(np.diff(val.indptr) > 0)
        if users.size == 0:
            raise ValueError("validation split has no interactions: cannot early-stop on it")
        if size is None or size >= users.size:
            return val
        keep = np.zeros(val.shape[0], dtype=np.float32)
        keep[rng.choice(users, size=size, replace=False)] = 1.0
        return sp.csr_matrix(sp.diags(keep) @ val)


def train_lightgcn(
    train: sp.csr_matrix,
    validation: sp.csr_matrix | None,
    config: LightGCNConfig,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
) -> LightGCNResult:
    """The task a Dask worker runs: train with this worker's threads, then restore torch's setting."""
    threads = _worker_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return LightGCNTrainer(config, device=device, seed=seed, progress=progress).fit(train, validation)
    finally:
        torch.set_num_threads(previous)


def _worker_threads() -> int:
    """Threads this task may use: the Dask worker's thread count, else the machine's cores."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return max(1, os.cpu_count() or 1)


def _worker_address() -> str | None:
    """The address of the Dask worker running this code; None outside a Dask task (or without Dask)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None
