"""The `hybridrec` command line. Every command has --help and exits non-zero with a one-line reason."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from etl.errors import HybridrecError


def _cmd_download(args: argparse.Namespace) -> None:
    from etl.sources.download import download_movielens

    folder = download_movielens(args.name, args.dest, base_url=args.base_url)
    print(folder)


def _cmd_ingest(args: argparse.Namespace) -> None:
    from cluster.client import get_client
    from cluster.jobs import ingest_job, read_source

    columns = {"user": args.user_col, "item": args.item_col, "value": args.value_col, "timestamp": args.timestamp_col}
    source = read_source(args.source, fmt=args.format, columns=columns, items=args.items)
    ingest_job(source, args.out, strict=args.strict, client=get_client(args.scheduler))


def _cmd_synth(args: argparse.Namespace) -> None:
    from cluster.client import get_client
    from etl.sources.synthetic import SyntheticConfig, write_parquet

    config = SyntheticConfig(n_interactions=args.interactions, seed=args.seed)
    print(write_parquet(config, args.out, client=get_client(args.scheduler)))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from cluster.jobs import evaluate_job, format_table

    rows = evaluate_job(args.dataset, k=args.k, split=args.split)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, k=args.k))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridrec", description="A Dask-distributed hybrid recommender.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent, name: str, help_: str, run: Callable | None = None) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        if run is not None:
            p.set_defaults(run=run)
        return p

    def scheduler(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else a LocalCluster)")

    data = command(sub, "data", "Get, generate and ingest datasets.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = command(data_sub, "download", "Download a MovieLens archive from GroupLens, check its checksum and unpack it.", _cmd_download)
    p.add_argument("name", help="ml-latest-small, ml-100k, ml-1m, ml-10m, ml-20m, ml-25m or ml-latest")
    p.add_argument("--dest", default="data", help="folder to unpack into (default: data)")
    p.add_argument("--base-url", help="server folder holding the zips (default: GroupLens, or $HYBRIDREC_MOVIELENS_URL)")

    p = command(data_sub, "ingest", "Validate, de-duplicate, split and write a dataset folder.", _cmd_ingest)
    p.add_argument("source", help="a MovieLens folder or .zip, or a CSV/Parquet interactions file")
    p.add_argument("--out", required=True, help="dataset folder to write (local path or fsspec URL)")
    p.add_argument("--format", default="auto", choices=["auto", "movielens", "table"])
    p.add_argument("--user-col", default="user_id", help="table format: user id column")
    p.add_argument("--item-col", default="item_id", help="table format: item id column")
    p.add_argument("--value-col", default=None, help="table format: value column (default: every row counts 1)")
    p.add_argument("--timestamp-col", default=None, help="table format: timestamp column (default: row order)")
    p.add_argument("--items", default=None, help="table format: items CSV/Parquet (item_id, title, genres, tags)")
    p.add_argument("--strict", action="store_true", help="fail on any invalid row instead of counting it")
    scheduler(p)

    p = command(data_sub, "synth", "Generate synthetic MovieLens-like interactions as Parquet, partition by partition.", _cmd_synth)
    p.add_argument("--interactions", type=int, default=1_000_000, help="number of interactions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder to write")
    scheduler(p)

    p = command(sub, "evaluate", "Print the evaluation protocol's table for the baselines and models.", _cmd_evaluate)
    p.add_argument("dataset", help="dataset folder written by `hybridrec data ingest`")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--split", default="test", choices=["test", "validation"])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (HybridrecError, ValueError, FileNotFoundError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"hybridrec {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
