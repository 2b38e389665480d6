"""Training of the LightGCN signal: spectral basis, BPR sampling, Adam, epochs and early stopping.

LightGCN is trained in the graph's spectral domain (``SpectralLightGCN``): one truncated SVD of
the normalised interaction matrix, then BPR steps that gather rows of its singular vectors and
never propagate over the whole graph, so a step's cost does not grow with the graph. This module
also owns everything around the model (as lenskit's ``LightGCNTrainer`` does): the optimiser,
uniform negative sampling, the epoch loop and early stopping on validation NDCG@10 (etl.metrics,
fit items excluded). ``train_lightgcn`` is the function a Dask worker runs (see models.lightgcn).
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
from tqdm.auto import tqdm

from etl.errors import DeviceUnavailableError
from etl.metrics import evaluate

if TYPE_CHECKING:
    from models.lightgcn import LightGCNConfig

logger = logging.getLogger(__name__)
# Set once at import, not per call: warnings.catch_warnings swaps the process-wide filters, which
# hides or restores other threads' warnings when fits run side by side (in-process Dask workers).
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


@dataclass
class LightGCNResult:
    """What a training run hands back: final (layer-averaged) embeddings and its history."""

    user_embeddings: np.ndarray
    """(n_users, dim) float32."""
    item_embeddings: np.ndarray
    """(n_items, dim) float32."""
    epochs_run: int
    """Epochs trained before stopping."""
    user_projection: np.ndarray | None = None
    """(n_items, dim) float32: V S^-1 M_users, the rows a user's history is folded over so that a
    trained user's history gives back its trained vector (``SpectralLightGCN.user_projection``)."""
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
    basis_seconds: float = 0.0
    """Wall time of the graph's spectral basis (normalisation and truncated SVD, on the device)."""
    basis_residual: float = 0.0
    """max_j |R~ v_j - s_j u_j| / s_j over the basis: how far its triplets are from exact ones."""
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


def normalized_interactions(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """D_u^-1/2 R D_i^-1/2 of the binary user-item matrix R (degrees counted on R itself): the
    off-diagonal block of LightGCN's normalised adjacency [[0, R~], [R~^T, 0]]."""
    r = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    r.sum_duplicates()
    r.eliminate_zeros()
    r.data[:] = 1.0
    inv_sqrt = (lambda deg: np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0))
    rows = inv_sqrt(np.asarray(r.sum(axis=1), dtype=np.float32).ravel())
    cols = inv_sqrt(np.asarray(r.sum(axis=0), dtype=np.float32).ravel())
    norm = sp.csr_matrix(sp.diags(rows) @ r @ sp.diags(cols), dtype=np.float32)
    norm.sort_indices()
    return norm


@dataclass
class SpectralBasis:
    """The top singular triplets of R~ = D_u^-1/2 R D_i^-1/2: R~ ~ U diag(s) V^T.

    They are the graph's eigenpairs: with A = [[0, R~], [R~^T, 0]] (LightGCN's normalised
    adjacency), A [U; V] = [U; V] diag(s) and A [U; -V] = -[U; -V] diag(s).
    """

    users: torch.Tensor
    """U: (n_users, rank) float32."""
    values: torch.Tensor
    """s: (rank,) float32, descending, in [0, 1]."""
    items: torch.Tensor
    """V: (n_items, rank) float32."""
    residual: float = 0.0
    """max_j |R~ v_j - s_j u_j| / s_j: 0 for exact triplets."""


def spectral_basis(interactions: sp.csr_matrix, rank: int, power_iterations: int, device: torch.device) -> SpectralBasis:
    """Top-``rank`` singular triplets of the normalised interaction matrix by randomised subspace
    iteration (Halko, Martinsson and Tropp 2011, algorithm 4.4; seeded by torch's generator): per
    iteration one sparse product with R~ and one with R~^T, each held as CSR on the device, so the
    cost is linear in the interactions. (``torch.svd_lowrank`` on the same COO matrix had not
    finished after 10 minutes at 16M interactions: it transposes and multiplies COO tensors; here
    each product took ~4 s.)

    The subspace is rank / 2 wider than asked (at least 16): ml-latest-small's spectrum is flat
    near rank 256 (s_128 = 0.29, s_255 = 0.25), and with 16 extra dimensions and 4 iterations the
    256th triplet's relative residual |R~ v - s u| / s was 9.7%; with rank / 2 and 6 iterations
    (the default) it is 0.5%, for ~1.6x the time. ``basis_residual`` measures it."""
    norm = normalized_interactions(interactions)
    n_users, n_items = norm.shape
    rank = max(1, min(rank, n_users, n_items))
    width = min(rank + max(16, rank // 2), n_users, n_items)
    r, r_t = _csr_tensor(norm, device), _csr_tensor(sp.csr_matrix(norm.T), device)
    q = torch.linalg.qr(torch.randn(n_items, width, device=device, dtype=torch.float32)).Q
    for _ in range(power_iterations):
        q = torch.linalg.qr(torch.sparse.mm(r, q)).Q  # users x width
        q = torch.linalg.qr(torch.sparse.mm(r_t, q)).Q  # items x width
    q_users = torch.linalg.qr(torch.sparse.mm(r, q)).Q
    small = torch.sparse.mm(r_t, q_users).T  # width x items: Q^T R~
    u, s, vh = torch.linalg.svd(small, full_matrices=False)
    users = q_users @ u[:, :rank]
    return SpectralBasis(users=users.contiguous(), values=s[:rank].contiguous(), items=vh[:rank].T.contiguous(),
                         residual=_residual(r, users, s[:rank], vh[:rank].T))


def _residual(r: torch.Tensor, users: torch.Tensor, values: torch.Tensor, items: torch.Tensor) -> float:
    """max_j |R~ v_j - s_j u_j| / s_j (one more sparse product); R~^T u_j = s_j v_j holds by construction."""
    gap = (torch.sparse.mm(r, items) - users * values).norm(dim=0)
    return float((gap / values.clamp_min(1e-12)).max()) if values.numel() else 0.0


def _csr_tensor(matrix: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sort_indices()
    return torch.sparse_csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)), torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(matrix.data), size=matrix.shape, device=device, check_invariants=True,
    )


class SpectralLightGCN(torch.nn.Module):
    """LightGCN whose layer-0 embeddings lie in the span of the graph's top eigenvectors.

    LightGCN's final embeddings are E = sum_k a_k A^k E0 (a_k = 1/(K+1), k = 0..K). Write the
    layer-0 embeddings in the eigenbasis the SpectralBasis gives, E0 = [U; V] P / sqrt(2) +
    [U; -V] Q / sqrt(2) (P, Q: rank x dim, the learned parameters); then A^k E0 is exact in closed
    form, with g(x) = sum_k a_k x^k:

        users: U (diag(g(s)) P + diag(g(-s)) Q) / sqrt(2)
        items: V (diag(g(s)) P - diag(g(-s)) Q) / sqrt(2)

    So a BPR step gathers its batch's rows of U and V and never propagates over the graph: its
    cost does not grow with the graph (full propagation costs about 31 s a step at MovieLens-25M
    on 2 cores). With exact triplets this is LightGCN itself with its layer-0 embeddings restricted
    to 2 x rank eigen-directions: those of the largest singular values, where the graph's
    collaborative signal lives (SVD-GCN, Peng et al. 2022, trains in the same basis). The +s half
    is what propagation amplifies; the -s half it damps (g(-1) = 0 for 3 layers), and the left-out
    directions near 0 it keeps at 1/(K+1), as layer 0 alone would. The randomised basis is exact
    to ``SpectralBasis.residual``. tests/test_lightgcn.py checks the closed form against PyG's
    stock LightGCN.
    """

    def __init__(self, basis: SpectralBasis, config: LightGCNConfig) -> None:
        super().__init__()
        rank, dim = basis.values.numel(), config.embedding_dim
        self.register_buffer("basis_users", basis.users)
        self.register_buffer("basis_items", basis.items)
        self.register_buffer("basis_values", basis.values)
        layers = torch.stack([basis.values.double() ** k for k in range(config.num_layers + 1)]).mean(0)
        alternating = torch.stack([(-basis.values.double()) ** k for k in range(config.num_layers + 1)]).mean(0)
        self.register_buffer("filter_pos", layers.float())  # g(s)
        self.register_buffer("filter_neg", alternating.float())  # g(-s)
        device = basis.values.device
        self.p = torch.nn.Parameter(torch.randn(rank, dim, device=device) * config.init_std)
        self.q = torch.nn.Parameter(torch.randn(rank, dim, device=device) * config.init_std)

    def layer0_maps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rank, dim) maps from basis rows to layer-0 embeddings: users U M, items V M."""
        return (self.p + self.q) * _HALF_SQRT2, (self.p - self.q) * _HALF_SQRT2

    def final_maps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rank, dim) maps from basis rows to final (layer-averaged) embeddings."""
        pos, neg = self.filter_pos[:, None] * self.p, self.filter_neg[:, None] * self.q
        return (pos + neg) * _HALF_SQRT2, (pos - neg) * _HALF_SQRT2

    def layer0(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 embeddings of every user and item."""
        users, items = self.layer0_maps()
        return self.basis_users @ users, self.basis_items @ items

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final embeddings of every user and item."""
        users, items = self.final_maps()
        return self.basis_users @ users, self.basis_items @ items

    def user_projection(self) -> torch.Tensor:
        """(n_items, dim) rows F = V S^-1 M_users that fold a history in: a user's basis row is
        U_u = R~_u V S^-1 (the triplets' R~ V = U S), so its final embedding U_u M_users is
        sum_i F_i / sqrt(d_u d_i) over its items, exact to ``SpectralBasis.residual`` for a user of
        the training graph and the basis's extension (Nystroem) to any other history. Directions
        with s below 1e-4 s_max (none on a connected graph's top spectrum) are left out."""
        values = self.basis_values
        floor = values.max().clamp_min(1e-30) * 1e-4 if values.numel() else values.new_tensor(1.0)
        inverse = torch.where(values > floor, 1.0 / values.clamp_min(1e-30), torch.zeros_like(values))
        users, _ = self.final_maps()
        return self.basis_items @ (inverse[:, None] * users)


_HALF_SQRT2 = 2.0**-0.5


class BPRSampler:
    """Uniform negative sampling for BPR: an epoch's positives (all, or a sample of them) once each, in
    random order.

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

    def epoch(self, batch_size: int, size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (users, positives, negatives) int64 arrays; negatives are (batch, negatives).

        ``size``: positives in the epoch, drawn without repetition (all of them when None or
        larger than their number)."""
        if size is None or size >= self.users.size:
            order = self.rng.permutation(self.users.size)
        else:
            order = self.rng.choice(self.users.size, size=size, replace=False)
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


class _ExpectedPenalty:
    """The expectation over a BPR batch of LightGCN's L2 term, as a quadratic form in the maps.

    A batch of b positives drawn uniformly from the N of the graph holds user u about b d_u / N
    times and item i as a positive b d_i / N times; its k negatives per positive (weighted 1/k)
    are uniform over the n items. So E[sum of squared layer-0 norms] / b is
    sum_u d_u/N |e_u|^2 + sum_i (d_i/N + 1/n) |e_i|^2, and with e = U M (or V M) that is
    tr(M^T C M) for the rank x rank matrices C = U^T diag(d_u/N) U, V^T diag(d_i/N + 1/n) V.
    Approximately: a negative that hits one of the user's positives is redrawn, so negatives are
    uniform over the user's other items; the difference is a share d_u/n of a user's negatives.
    """

    def __init__(self, basis: SpectralBasis, sampler: BPRSampler) -> None:
        device = basis.values.device
        n = max(sampler.users.size, 1)
        user_weight = np.bincount(sampler.users, minlength=basis.users.shape[0]) / n
        item_weight = np.bincount(sampler.items, minlength=basis.items.shape[0]) / n + 1.0 / sampler.n_items
        gram = (lambda rows, w: rows.T @ (rows * torch.from_numpy(w.astype(np.float32)).to(device)[:, None]))
        self.users, self.items = gram(basis.users, user_weight), gram(basis.items, item_weight)

    def __call__(self, model: SpectralLightGCN) -> torch.Tensor:
        users, items = model.layer0_maps()
        return 0.5 * ((users * (self.users @ users)).sum() + (items * (self.items @ items)).sum())


class LightGCNTrainer:
    """Fits LightGCN in the spectral domain with BPR; early-stops on validation NDCG@10 when validation
    is given."""

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
        if validation is not None and validation.shape != train.shape:
            raise ValueError(f"validation shape {validation.shape} differs from train {train.shape}")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        started = time.perf_counter()
        basis = spectral_basis(train, cfg.rank, cfg.power_iterations, self.device)
        self._sync()
        basis_seconds = time.perf_counter() - started
        model = SpectralLightGCN(basis, cfg)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        sampler = BPRSampler(train, cfg.negatives, rng)
        penalty = _ExpectedPenalty(basis, sampler)
        val = self._validation_rows(validation, rng) if validation is not None else None

        best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        best_epoch, best_ndcg, history, stale = None, -np.inf, [], 0
        epoch_seconds: list[float] = []
        epoch = 0
        bar = tqdm(range(1, cfg.epochs + 1), desc="lightgcn", disable=not self.progress)
        started = time.perf_counter()
        for epoch in bar:
            epoch_start = time.perf_counter()
            for users, pos, neg in sampler.epoch(cfg.batch_size, cfg.epoch_size):
                loss = self._batch_loss(model, penalty, users, pos, neg)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            self._sync()
            epoch_seconds.append(time.perf_counter() - epoch_start)
            out_of_time = self.time_limit is not None and time.perf_counter() - started >= self.time_limit
            logger.info("lightgcn epoch %d on %s: %.2f s", epoch, self.device, epoch_seconds[-1])
            if val is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time):
                user_emb, item_emb, projection = self._embeddings(model)
                ndcg = evaluate(lambda rows: user_emb[rows] @ item_emb.T, train, val)["ndcg@10"]
                history.append((epoch, ndcg))
                bar.set_postfix(ndcg=f"{ndcg:.4f}")
                logger.info("lightgcn epoch %d: validation NDCG@10 %.4f", epoch, ndcg)
                if ndcg > best_ndcg:
                    best, best_epoch, best_ndcg, stale = (user_emb, item_emb, projection), epoch, ndcg, 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
            if out_of_time:
                logger.info("lightgcn: time limit of %.0f s reached after epoch %d", self.time_limit, epoch)
                break
        bar.close()
        if best is None:
            best = self._embeddings(model)
        return LightGCNResult(
            user_embeddings=best[0],
            item_embeddings=best[1],
            user_projection=best[2],
            epochs_run=epoch,
            best_epoch=best_epoch,
            best_ndcg=None if best_epoch is None else float(best_ndcg),
            history=history,
            device=str(basis.values.device),
            worker=_worker_address(),
            basis_seconds=basis_seconds,
            basis_residual=basis.residual,
            epoch_seconds=epoch_seconds,
        )

    def _sync(self) -> None:
        """Wait for the device's queued work, so that wall times count it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _batch_loss(
        self, model: SpectralLightGCN, penalty: _ExpectedPenalty, users: np.ndarray, pos: np.ndarray, neg: np.ndarray
    ) -> torch.Tensor:
        """BPR over (user, positive, negative) triples plus the L2 term of the layer-0 embeddings.

        The L2 term is the official LightGCN's (half the squared norms of the batch's users',
        positives' and negatives' layer-0 embeddings over the batch size) in expectation over the
        batch (``_ExpectedPenalty``), which costs rank^2 x dim instead of a second gather.
        """
        b, k = neg.shape
        items = np.concatenate([pos[:, None], neg], axis=1).ravel()  # (b * (1 + k)): positive first
        user_map, item_map = model.final_maps()
        user_rows = torch.index_select(model.basis_users, 0, torch.from_numpy(users).to(self.device))
        item_rows = torch.index_select(model.basis_items, 0, torch.from_numpy(items).to(self.device))
        user_emb = user_rows @ user_map
        item_emb = (item_rows @ item_map).view(b, 1 + k, -1)
        scores = (item_emb * user_emb.unsqueeze(1)).sum(-1)
        bpr = torch.nn.functional.softplus(scores[:, 1:] - scores[:, :1]).mean()
        return bpr + self.config.l2 * penalty(model)

    @staticmethod
    @torch.no_grad()
    def _embeddings(model: SpectralLightGCN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Final user and item embeddings and the user fold-in rows, as float32 arrays."""
        arrays = (*model.embeddings(), model.user_projection())
        return tuple(np.ascontiguousarray(a.float().cpu().numpy()) for a in arrays)  # type: ignore[return-value]

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
