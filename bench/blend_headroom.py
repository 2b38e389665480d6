"""How much any blend of the signals could gain: validation and test NDCG@10 of many weight vectors.

    python bench/blend_headroom.py                        # ml-latest-small, 1,000 weight vectors
    python bench/blend_headroom.py --samples 200 --models /tmp/models

The tuner can only choose among blends; this bench asks what the best blend would be worth.
The signals are fit as the pipeline fits them (on 'fit' with its configs, LightGCN early-stopped
on 'validation'; then on 'train' with each model's refit_config()), or loaded from --models
(<models>/fit/<signal> and <models>/train/<signal>, written by a previous run). Each signal's
scores are scaled as the pipeline scales them (Fusion.fit_scales on the validation pairs, the
'fit' models' scales kept for the 'train' models). Then every weight vector (each signal alone,
then seeded Dirichlet(0.5) draws) is scored on validation (fit models) and on test (train
models), with the protocol's metric (etl.metrics.evaluate).

'best on test' is an oracle chosen on the test split: it is reported as an upper bound of what
weights alone can give, never used to choose anything. When it is barely above the best single
signal, no tuner can make the hybrid beat that signal on test; better or more complementary
signals can.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import CACHE, RESULTS, environment, log, ml_small_dataset, start_cluster, write_json  # noqa: E402

K = 10


def signal_models(dataset: Any, split: str, models_dir: Path, client: Any) -> dict[str, Any]:
    """The pipeline's signals fit on ``split`` ('fit' or 'train'), loaded when saved before."""
    from training.pipeline import DEFAULT_SIGNALS, PipelineConfig, signal_class
    from models.base import FactorModel, TrainData, TrainingOptions

    config, options, out = PipelineConfig(), TrainingOptions(client=client), {}
    for kind in DEFAULT_SIGNALS:
        folder = models_dir / split / kind
        if (folder / "model.json").exists():
            out[kind] = FactorModel.load(folder)
            continue
        if split == "fit":
            model_config, data = config.config_for(kind), TrainData(dataset, "fit", "validation")
        else:
            model_config, data = FactorModel.load(models_dir / "fit" / kind).refit_config(), TrainData(dataset, "train")
        log(f"  fitting {kind} on {split!r}")
        out[kind] = signal_class(kind)(model_config).fit(data, options)
        out[kind].save(folder)
    return out


def weight_vectors(signals: tuple[str, ...], samples: int, seed: int) -> np.ndarray:
    """Each signal alone, then ``samples`` seeded Dirichlet(0.5) draws (rows sum to 1)."""
    draws = np.random.default_rng(seed).dirichlet(np.full(len(signals), 0.5), size=samples)
    return np.vstack([np.eye(len(signals)), draws])


def headroom(dataset: Any, fit_models: dict[str, Any], train_models: dict[str, Any], samples: int,
             seed: int) -> dict[str, Any]:
    """Validation and test NDCG@10 of every weight vector, and the summary figures."""
    from etl.metrics import evaluate
    from hybrid.fusion import Fusion

    signals = tuple(fit_models)
    scales = Fusion.fit_scales(fit_models, dataset.matrix("validation")).scales
    users = np.arange(dataset.n_users)
    splits = {"validation": (fit_models, dataset.matrix("fit")), "test": (train_models, dataset.matrix("train"))}
    scores = {name: np.stack([models[s].score(users).astype(np.float32) * np.float32(scales[s]) for s in signals])
              for name, (models, _) in splits.items()}
    weights = weight_vectors(signals, samples, seed)
    ndcg = {name: np.empty(len(weights)) for name in splits}
    for i, w in enumerate(weights):
        for name, (_, seen) in splits.items():
            blended = np.tensordot(w.astype(np.float32), scores[name], axes=1)
            ndcg[name][i] = evaluate(lambda rows, b=blended: b[rows], seen, dataset.matrix(name), k=K)[f"ndcg@{K}"]
        if (i + 1) % 100 == 0:
            log(f"  {i + 1}/{len(weights)} weight vectors")
    n = len(signals)
    best_single = max(range(n), key=lambda j: ndcg["test"][j])
    by_val, by_test = int(np.argmax(ndcg["validation"])), int(np.argmax(ndcg["test"]))

    def row(j: int) -> dict[str, Any]:
        return {"weights": dict(zip(signals, weights[j].round(4).tolist(), strict=True)),
                "validation": float(ndcg["validation"][j]), "test": float(ndcg["test"][j])}

    return {
        "signals": list(signals), "scales": dict(scales), "samples": samples, "seed": seed,
        "single": {s: row(j) for j, s in enumerate(signals)},
        "best_single_on_test": signals[best_single],
        "best_on_validation": row(by_val),
        "best_on_test": row(by_test),
        "test_headroom": float(ndcg["test"][by_test] - ndcg["test"][best_single]),
        "validation_headroom": float(ndcg["validation"][by_val] - max(ndcg["validation"][:n])),
        "correlation": float(np.corrcoef(ndcg["validation"][n:], ndcg["test"][n:])[0, 1]),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000, help="Dirichlet weight vectors drawn")
    parser.add_argument("--models", type=Path, default=CACHE / "ml-latest-small-models",
                        help="saved signals (<models>/fit/<signal>, <models>/train/<signal>); fit when missing")
    parser.add_argument("--out", type=Path, default=RESULTS / "blend_headroom.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    dataset = ml_small_dataset()
    cluster, client = start_cluster(1)
    try:
        fit_models = signal_models(dataset, "fit", args.models, client)
        train_models = signal_models(dataset, "train", args.models, client)
    finally:
        client.close()
        cluster.close()
    result = headroom(dataset, fit_models, train_models, args.samples, args.seed)
    result["dataset"], result["environment"] = "ml-latest-small", environment()
    write_json(args.out, result)
    for name in ("best_on_validation", "best_on_test"):
        r = result[name]
        log(f"{name:<19} validation {r['validation']:.4f} test {r['test']:.4f} weights {r['weights']}")
    for s, r in result["single"].items():
        log(f"{s:<19} validation {r['validation']:.4f} test {r['test']:.4f}")
    log(f"test headroom over the best single signal ({result['best_single_on_test']}): "
        f"{result['test_headroom']:+.4f}; validation/test correlation over the draws {result['correlation']:.2f}")


if __name__ == "__main__":
    main()
