"""hybridrec from Python, start to finish: the walk-through of the README's "Python API" section.

Load a dataset, fit the signals on a Dask LocalCluster (open the dashboard URL it prints: each
fit shows as named tasks, "als-...", "content-...", "svd-gram-block-..."), tune the blend on
validation with the genetic algorithm, evaluate on test, publish a bundle and query it in-process.
The test suite runs it (tests/test_walkthrough.py) on a small synthetic dataset.

    python docs/walkthrough.py                                  # ../shared/data/ml-latest-small
    python docs/walkthrough.py --data DIR --signals als,content,popularity --generations 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridrec import (  # noqa: E402 - the repository root first, for a checkout without an install
    Dataset,
    GAConfig,
    HybridRecommender,
    PipelineConfig,
    close_client,
    cluster_client,
    ingest,
    load_bundle,
    read_source,
    run_pipeline,
    signals,
    training_options,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens folder, synthetic folder or table")
    ap.add_argument("--work", type=Path, default=Path("data/walkthrough"), help="where the dataset and bundles go")
    ap.add_argument("--signals", default="als,content,popularity", help=f"comma-separated, of {', '.join(signals())}")
    ap.add_argument("--generations", type=int, default=25, help="GA generations (fewer: faster, rougher blend)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    args = ap.parse_args(argv)

    # 1. A Dask cluster: every fit, the candidate pool and the GA run on it.
    client = cluster_client(n_workers=args.workers)
    try:
        # 2. The data: read a source, validate it, split it by time per user (train = fit + validation, test).
        report = ingest(read_source(args.data), args.work / "dataset", client=client)
        print(report.summary())
        dataset = Dataset.open(args.work / "dataset")

        # 3. Fit every signal on 'fit', tune the blend on 'validation', refit on 'train', evaluate on
        #    'test' (the protocol of ../shared/DESIGN.md), and publish the bundle the API serves.
        config = PipelineConfig(signals=tuple(args.signals.split(",")),
                                ga=GAConfig(generations=args.generations, seed=0), verbose=True)
        result = run_pipeline(dataset, config, training_options(client), bundle_root=args.work / "bundles")
        print(result.table())
        print("tuned weights:", {s: round(w, 3) for s, w in result.weights.items()})
        print("published:", result.bundle)
    finally:
        close_client()

    # 4. Serving in-process needs no cluster: load the bundle and ask it.
    recommender = HybridRecommender(load_bundle(args.work / "bundles"))
    user = str(recommender.bundle.users.ids[0])
    answer = recommender.recommend(user, 10, explain=True)
    print(f"user {user} ({answer.user_source}, variant {answer.variant}):")
    for item in answer.items[:5]:
        print(f"  {item.score:7.3f}  {item.title}: {item.explanation.sentence if item.explanation else ''}")
    similar = recommender.similar_items(answer.items[0].item_id, 5)
    print(f"similar to {answer.items[0].title}:", [s.title for s in similar])
    return 0


if __name__ == "__main__":
    sys.exit(main())
