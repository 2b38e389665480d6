"""Where a fit runs: torch fits go to the workers that advertise a GPU.

A worker advertises a GPU to the scheduler with Dask's worker resources:
``dask worker SCHEDULER --resources GPU=1`` (one worker per GPU, each seeing its own device,
e.g. through CUDA_VISIBLE_DEVICES). A fit that can use a GPU is then submitted with
``resources={"GPU": 1}``: the scheduler runs it only on such a worker, one at a time per GPU it
advertises, and the trainer's 'auto' device resolves to CUDA there.

The restriction is asked for only when a worker advertises the resource: a task restricted to a
resource that no worker has waits in the scheduler's no-worker state until one joins. Without
such workers a fit is submitted as before and runs where the scheduler puts it, on that worker's
CPU unless its process sees a GPU ('auto').
"""

from __future__ import annotations

from typing import Any

from models.base import TrainingOptions

#: The worker resource that stands for one GPU.
GPU = "GPU"


def gpu_workers(client: Any) -> list[str]:
    """Addresses of the workers that advertise at least one GPU, sorted."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(addr for addr, info in workers.items() if (info.get("resources") or {}).get(GPU, 0) >= 1)


def torch_resources(client: Any, device: str) -> dict[str, float] | None:
    """The worker resources (``Client.submit(..., resources=...)``) of a torch fit asking for ``device``.

    'cpu' runs anywhere, without holding a GPU. 'auto' and 'cuda[:N]' need one GPU when some worker
    of ``client``'s cluster advertises one; otherwise they run anywhere (None), where 'auto'
    resolves to the worker's CPU unless its process sees a GPU, and 'cuda' fails with
    DeviceUnavailableError on a worker that sees none.
    """
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "cpu" or not gpu_workers(client):
        return None
    return {GPU: 1}


def training_options(client: Any, *, device: str = "auto", seed: int = 0, progress: bool = False) -> TrainingOptions:
    """The runtime options of fits on ``client``'s cluster: torch fits asking for ``device`` get the
    worker resources ``torch_resources`` picks (a GPU worker when one advertises it)."""
    return TrainingOptions(client=client, device=device, seed=seed, progress=progress,
                           resources=torch_resources(client, device))
