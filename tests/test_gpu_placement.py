"""Torch fits go to the Dask workers that advertise a GPU (cluster.placement), on a real cluster.

A scheduler with two plain in-process workers, joined by a `dask worker ... --resources GPU=1`
process. That process has no GPU here, so the trainer falls back to CPU on it (and says so); what
is checked is where the scheduler ran the fit, read from its task stream. Without a GPU worker
the same fit runs as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from distributed import Client, LocalCluster, get_task_stream

from cluster.placement import GPU, gpu_workers, torch_resources, training_options
from etl.dataset import Dataset
from etl.errors import DeviceUnavailableError
from models.base import TrainData
from models.lightgcn import LightGCN, LightGCNConfig

REPO = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).parent / "dask")
TINY = LightGCNConfig(embedding_dim=8, num_layers=2, epochs=3, eval_every=1, patience=3)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of a GPU worker without CUDA")


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, str]]:
    """A client of a cluster with two plain workers and one that advertises GPU=1, and that one's address."""
    tmp = tmp_path_factory.mktemp("gpu-worker")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(tmp / "worker.log", "wb") as log:
            proc = subprocess.Popen(
                [DASK, "worker", cluster.scheduler_address, "--resources", f"{GPU}=1", "--nthreads", "1",
                 "--name", "gpu", "--no-nanny", "--no-dashboard", "--local-directory", str(tmp)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            client.wait_for_workers(3, timeout=60)
            workers = client.scheduler_info(n_workers=-1)["workers"]
            address = next(addr for addr, info in workers.items() if info["name"] == "gpu")
            yield client, address
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def fit_where(client: Client, dataset: Dataset, device: str, seed: int = 0) -> tuple[LightGCN, str]:
    """Fit LightGCN and return it with the worker the scheduler ran its training task on."""
    data = TrainData(dataset, split="fit", validation="validation")
    with get_task_stream(client) as stream:
        model = LightGCN(TINY).fit(data, training_options(client, device=device, seed=seed))
    ran = [rec["worker"] for rec in stream.data if str(rec["key"]).startswith("lightgcn-train-")]
    assert len(ran) == 1, stream.data
    return model, ran[0]


def test_gpu_workers_are_those_advertising_the_resource(gpu_cluster: tuple[Client, str], client: Client) -> None:
    gpu_client, gpu = gpu_cluster
    assert gpu_workers(gpu_client) == [gpu]
    assert torch_resources(gpu_client, "auto") == torch_resources(gpu_client, "cuda") == {GPU: 1}
    assert torch_resources(gpu_client, "cpu") is None  # a CPU fit does not hold the GPU
    assert gpu_workers(client) == [] and torch_resources(client, "auto") is None  # the shared cluster has no GPU
    with pytest.raises(ValueError, match="'gpu'"):
        torch_resources(gpu_client, "gpu")


@no_cuda
@pytest.mark.timeout(300)
def test_fit_runs_on_the_gpu_worker(gpu_cluster: tuple[Client, str], tiny_dataset: Dataset) -> None:
    """Two plain workers beside it, and the fit lands on the GPU worker every time."""
    client, gpu = gpu_cluster
    for seed in (0, 1, 2):
        with pytest.warns(RuntimeWarning, match=f"worker {gpu} advertises a GPU, but its torch sees no CUDA"):
            model, worker = fit_where(client, tiny_dataset, "auto", seed=seed)
        assert worker == gpu
        assert model.device_ == "cpu" and model.epochs_run_ == TINY.epochs


@pytest.mark.timeout(300)
def test_cpu_fits_and_clusters_without_gpu_workers_run_as_before(
    gpu_cluster: tuple[Client, str], client: Client, tiny_dataset: Dataset
) -> None:
    model, worker = fit_where(client, tiny_dataset, "auto")
    assert worker in client.scheduler_info(n_workers=-1)["workers"]
    assert model.device_ == ("cuda:0" if torch.cuda.is_available() else "cpu")
    gpu_client, gpu = gpu_cluster
    model, worker = fit_where(gpu_client, tiny_dataset, "cpu")
    assert model.device_ == "cpu" and model.best_epoch_ is not None


@no_cuda
@pytest.mark.timeout(300)
def test_cuda_on_a_worker_without_one_is_a_typed_error(gpu_cluster: tuple[Client, str], tiny_dataset: Dataset) -> None:
    """'cuda' is routed to the GPU worker too; that one's torch sees no device: the error names it."""
    client, gpu = gpu_cluster
    with pytest.raises(DeviceUnavailableError, match=f"'cuda'.* on Dask worker {gpu}"):
        LightGCN(TINY).fit(TrainData(tiny_dataset), training_options(client, device="cuda"))
