"""The `hybridrec` command line. Every command has --help and exits non-zero with a one-line reason.

Each command's handler returns the text to print (or None), so that `hybridrec submit` can run the
same handler on a cluster worker and print its answer here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from etl.errors import HybridrecError

if TYPE_CHECKING:
    from graphql_api.settings import Settings

BUNDLE_ROOT_HELP = "folder or fsspec URL (e.g. s3://bucket/bundles) of bundle versions, with the `latest` pointer"


def _signals(text: str) -> list[str]:
    from models.base import SIGNAL_MODULES

    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIGNAL_MODULES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown signal(s) {unknown}; choose from {', '.join(SIGNAL_MODULES)}")
    return names


def _client(args: argparse.Namespace):
    """The process's Dask client (cluster.client), which ``main`` closes when the command is done."""
    from cluster.client import get_client

    return get_client(getattr(args, "scheduler", None))


def _close_client() -> None:
    """Close the client a handler opened through ``_client`` (none if cluster.client was never imported)."""
    opened = sys.modules.get("cluster.client")
    if opened is not None:
        opened.close_client()


def _events(args: argparse.Namespace) -> dict[str, str | None]:
    return {
        "events_dir": args.events_dir or os.environ.get("HYBRIDREC_EVENTS_DIR") or None,
        "redis_url": args.redis_url or os.environ.get("HYBRIDREC_REDIS_URL") or None,
    }


# -- handlers ---------------------------------------------------------------------------------------
def _cmd_download(args: argparse.Namespace) -> str:
    from etl.sources.download import download_movielens

    return str(download_movielens(args.name, args.dest, base_url=args.base_url))


def _cmd_ingest(args: argparse.Namespace) -> str:
    from cluster.jobs import ingest_job, read_source

    columns = {"user": args.user_col, "item": args.item_col, "value": args.value_col, "timestamp": args.timestamp_col}
    source = read_source(args.source, fmt=args.format, columns=columns, items=args.items)
    return ingest_job(source, args.out, strict=args.strict, client=_client(args)).summary()


def _cmd_synth(args: argparse.Namespace) -> str:
    from etl.sources.synthetic import SyntheticConfig, write_parquet

    config = SyntheticConfig(n_interactions=args.interactions, seed=args.seed)
    return str(write_parquet(config, args.out, client=_client(args)))


def _cmd_prepare(args: argparse.Namespace) -> str:
    from cluster.jobs import prepare_data

    size = {} if args.synthetic_interactions is None else {"synthetic_interactions": args.synthetic_interactions}
    return str(prepare_data(os.path.join(args.data_root, "raw"), client=_client(args), **size))


def _cmd_train(args: argparse.Namespace) -> str:
    from cluster.jobs import train_job

    saved = train_job(args.dataset, args.out, args.signals, split=args.split, client=_client(args), seed=args.seed)
    return "\n".join(f"{kind}: {path}" for kind, path in saved.items())


def _cmd_tune(args: argparse.Namespace) -> str:
    from cluster.jobs import tune_job

    summary = tune_job(args.dataset, args.run, signals=args.signals, client=_client(args), seed=args.seed,
                       generations=args.generations, refit=args.refit)
    return json.dumps({"weights": summary["weights"], "validation": summary["validation"],
                       "test_ndcg@10": {k: v["ndcg@10"] for k, v in summary["test"].items()}}, indent=2)


def _cmd_index(args: argparse.Namespace) -> str:
    from cluster.jobs import index_job

    return str(index_job(args.run, args.bundle_root, args.dataset))


def _cmd_evaluate(args: argparse.Namespace) -> str:
    from cluster.jobs import evaluate_job, format_table

    rows = evaluate_job(args.dataset, run_dir=args.run, signals_dir=args.signals_dir, k=args.k)
    return json.dumps(rows, indent=2) if args.json else format_table(rows, k=args.k)


def _cmd_pipeline(args: argparse.Namespace) -> str:
    from cluster.jobs import pipeline_job

    return str(pipeline_job(args.data_root, args.bundle_root, source=args.source, client=_client(args), seed=args.seed,
                            signals=args.signals, generations=args.generations, refit=args.refit, **_events(args)))


def _cmd_retrain(args: argparse.Namespace) -> str:
    from cluster.retrain import parse_duration, retrain_loop

    every = parse_duration(args.every)
    decision = retrain_loop(every, once=args.once, data_root=args.data_root, bundle_root=args.bundle_root,
                            min_new_events=args.min_new_events, tolerance=args.tolerance, source=args.source,
                            holdout_share=args.holdout_share, keep=args.keep, signals=args.signals,
                            generations=args.generations, client=_client(args), **_events(args))
    return decision.reason


def _serving_environment(args: argparse.Namespace) -> Settings:
    """The server's settings from the command line into its environment (its workers read them),
    checked now: a server without keys and without --dev stops here, before anything starts.
    """
    from graphql_api.settings import Settings

    os.environ["HYBRIDREC_BUNDLE_ROOT"] = args.bundle_root
    beside = "data" if "://" in args.bundle_root else os.path.dirname(args.bundle_root.rstrip("/")) or "."
    events_dir = getattr(args, "events_dir", None) or os.environ.get("HYBRIDREC_EVENTS_DIR") or os.path.join(
        beside, "events")  # events stay on a local disk: a URL bundle root puts them under data/
    os.environ["HYBRIDREC_EVENTS_DIR"] = events_dir
    if getattr(args, "redis_url", None):
        os.environ["HYBRIDREC_REDIS_URL"] = args.redis_url
    if args.dev:
        os.environ["HYBRIDREC_DEV"] = "true"
    settings = Settings.from_env()
    if settings.dev_mode and not settings.keys_configured:
        print("WARNING: development mode: no API keys, so anyone may record interactions and erase users. "
              "Never expose this server; set HYBRIDREC_API_KEYS for anything else.", file=sys.stderr, flush=True)
    return settings


def _cmd_serve(args: argparse.Namespace) -> None:
    from graphql_api.server import serve

    settings = _serving_environment(args)
    base = f"http://{args.host}:{args.port}"
    print(f"GraphiQL: {base}/graphql  demo page: {base}/  (events in {settings.events_dir})", file=sys.stderr, flush=True)
    serve(args.host, args.port, args.workers, log_level=args.log_level, forwarded_allow_ips=settings.forwarded_allow_ips)


def _cmd_demo(args: argparse.Namespace) -> None:
    from cluster.demo import FIRST_SIGNALS, run_demo

    _serving_environment(args)  # a server that would refuse to start stops the demo before training
    serve_args = ["--bundle-root", args.bundle_root, "--host", args.host, "--port", str(args.port),
                  "--workers", str(args.workers), "--log-level", args.log_level] + (["--dev"] if args.dev else [])
    host = f"[{args.host}]" if ":" in args.host else args.host
    code = run_demo(args.data_root, args.bundle_root, client=_client(args), base_url=f"http://{host}:{args.port}",
                    serve_args=serve_args, first_signals=args.first_signals or FIRST_SIGNALS, signals=args.signals,
                    generations=args.generations, **_events(args))
    if code:
        raise ValueError(f"the server exited with code {code}")


def _cmd_items_add(args: argparse.Namespace) -> str:
    from graphql_api.items import MAX_FILE_ITEMS, read_items_file, upsert_items

    where = _events(args)
    if where["events_dir"] is None and where["redis_url"] is None:
        raise ValueError("items add needs the API's store: --events-dir or --redis-url "
                         "(or $HYBRIDREC_EVENTS_DIR / $HYBRIDREC_REDIS_URL)")
    items = read_items_file(args.file, most=MAX_FILE_ITEMS)
    report = upsert_items(items, where["events_dir"], redis_url=where["redis_url"],
                          prefix=os.environ.get("HYBRIDREC_REDIS_PREFIX") or "hybridrec")
    return (f"{args.file}: {len(items)} items: {report.summary()}; every API replica serves them within about a "
            "second, and the next training run learns them")


def _cmd_bundle_list(args: argparse.Namespace) -> str:
    from hybrid.bundle import list_bundles

    rows = [f"{'version':<28}{'created_at':<28}{'test ndcg@10':>14}  latest"]
    for info in list_bundles(args.bundle_root):
        ndcg = (info.metrics or {}).get("test", {}).get("hybrid", {}).get("ndcg@10", float("nan"))
        rows.append(f"{info.version:<28}{info.created_at:<28}{ndcg:>14.4f}  {'*' if info.is_latest else ''}")
    return "\n".join(rows)


def _cmd_bundle_show(args: argparse.Namespace) -> str:
    from hybrid.bundle import latest_version, load, version_path

    version = args.version or latest_version(args.bundle_root)
    if version is None:
        raise HybridrecError(f"no bundle published under {args.bundle_root}")
    return json.dumps(load(version_path(args.bundle_root, version), mmap=True).manifest.to_dict(), indent=2)


def _cmd_bundle_rollback(args: argparse.Namespace) -> str:
    from hybrid.bundle import rollback

    rollback(args.bundle_root, args.version)
    return f"latest -> {args.version}"


def _pairs(text: str, what: str) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'} (ValueError naming ``what`` when malformed)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what}: expected NAME=VALUE pairs separated by commas, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None


def _arms(args: argparse.Namespace) -> dict:
    from hybrid.experiments import ArmSpec

    arms: dict[str, ArmSpec] = {}
    for spec in args.weights or ():
        name, sep, rest = spec.partition("=")
        if not sep:
            raise ValueError(f"--weights: expected ARM=SIGNAL:WEIGHT,..., got {spec!r}")
        weights = {}
        for part in filter(None, rest.split(",")):
            signal, sep, w = part.partition(":")
            if not sep:
                raise ValueError(f"--weights {name}: expected SIGNAL:WEIGHT, got {part!r}")
            weights[signal.strip()] = _number(w, f"--weights {name}")
        arms[name.strip()] = ArmSpec(weights=weights, description=f"weights {rest}")
    for spec in args.signals or ():
        name, sep, rest = spec.partition("=")
        signals = tuple(s.strip() for s in rest.split("+") if s.strip())
        if not sep or not signals:
            raise ValueError(f"--signals: expected ARM=SIGNAL+SIGNAL..., got {spec!r}")
        if name.strip() in arms:
            raise ValueError(f"arm {name.strip()!r} is given twice")
        arms[name.strip()] = ArmSpec(signals=signals, description=f"tuned weights on {' + '.join(signals)} only")
    return arms


def _latest_variants(root: str):
    """The variants of the root's latest bundle (its manifest only)."""
    import fsspec

    from hybrid.bundle import latest_version, version_path
    from hybrid.manifest import Manifest

    version = latest_version(root)
    if version is None:
        raise HybridrecError(f"no bundle published under {root}: an experiment's arms are checked against the latest")
    with fsspec.open(f"{version_path(root, version)}/manifest.json", "rb") as fh:
        return version, Manifest.from_json(fh.read()).variants


def _cmd_experiment_create(args: argparse.Namespace) -> str:
    from hybrid.experiments import Experiment, create_experiment

    traffic = {k: _number(v, "--traffic") for k, v in _pairs(args.traffic, "--traffic").items()}
    experiment = Experiment(args.name, traffic, _arms(args), control=args.control, salt=args.salt or "",
                            conversion_value=args.conversion_value, description=args.description or "")
    version, variants = _latest_variants(args.bundle_root)

    def check(e: Experiment) -> None:  # every arm is servable by the latest bundle
        try:
            e.compile(variants.signals, variants.get("tuned").weights, variants)
        except ValueError as err:
            raise ValueError(f"{err} (checked against bundle {version}; define other arms with --weights or "
                             "--signals)") from err

    book = create_experiment(args.bundle_root, experiment, check)
    running = book.running
    shares = ", ".join(f"{n} {v:.3f}" for n, v in running.traffic.items())
    return f"experiment {running.name} running (revision {book.revision}): {shares}; control {running.control}"


def _cmd_experiment_list(args: argparse.Namespace) -> str:
    from datetime import UTC, datetime

    from hybrid.experiments import read_book

    def when(t: float | None) -> str:
        return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")

    rows = [f"{'name':<24}{'status':<10}{'started (UTC)':<22}{'stopped (UTC)':<22}traffic"]
    for e in read_book(args.bundle_root).experiments:
        shares = ", ".join(f"{n} {v:.3f}" for n, v in e.traffic.items())
        rows.append(f"{e.name:<24}{e.status:<10}{when(e.started_at):<22}{when(e.stopped_at):<22}{shares}")
    return "\n".join(rows)


def _cmd_experiment_show(args: argparse.Namespace) -> str:
    from hybrid.experiments import read_book

    return json.dumps(read_book(args.bundle_root).get(args.name).to_dict(), indent=2)


def _cmd_experiment_stop(args: argparse.Namespace) -> str:
    from hybrid.experiments import stop_experiment

    stopped = stop_experiment(args.bundle_root, args.name)
    return f"experiment {stopped.name} stopped: every user is back on the bundle's own variant (tuned)"


def _cmd_experiment_report(args: argparse.Namespace) -> str:
    from hybrid.experiment_report import format_report, plot_report, report_from_logs

    events = _events(args)
    if not events["events_dir"] and not events["redis_url"]:
        raise ValueError("report needs the API's logs: --events-dir or --redis-url (or their HYBRIDREC_ variables)")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be between 0 and 1, got {args.alpha}")
    report = report_from_logs(args.bundle_root, args.name, alpha=args.alpha,
                              prefix=os.environ.get("HYBRIDREC_REDIS_PREFIX", "hybridrec"), **events)
    text = format_report(report)
    if args.plot:
        text += f"\nplot: {plot_report(report, args.plot)}"
    return text


def _cmd_submit(args: argparse.Namespace) -> str | None:
    from cluster.submit import follow_job, submit_job

    scheduler = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not scheduler:
        raise ValueError("submit needs --scheduler or DASK_SCHEDULER_ADDRESS")
    if args.follow:
        return follow_job(args.follow, scheduler)
    if not args.job:
        raise ValueError("submit needs a job, e.g. `hybridrec submit --scheduler tcp://host:8786 pipeline ...`")
    job_args = build_parser().parse_args(args.job)
    if job_args.command in ("submit", "serve", "demo"):
        raise ValueError(f"`{job_args.command}` cannot be submitted as a cluster job")
    job_args.scheduler = scheduler
    key, output = submit_job(job_args, scheduler, detach=args.detach)
    if args.detach:
        return f"submitted {key}; follow it with: hybridrec submit --scheduler {scheduler} --follow {key}"
    return output


# -- the parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridrec", description="A Dask-distributed hybrid recommender.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent, name: str, help_: str, run: Callable | None = None) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        if run is not None:
            p.set_defaults(handler=run)
        return p

    def scheduler(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else a LocalCluster)")

    def refit(p: argparse.ArgumentParser) -> None:
        p.add_argument("--refit", choices=("auto", "fit", "fold_in"), default="auto",
                       help="final models on 'train': fit again, or tuning's with every user folded in "
                            "(default auto: fold_in from 2M 'train' interactions on, training.pipeline.REFOLD_MIN_INTERACTIONS)")

    def events(p: argparse.ArgumentParser) -> None:
        p.add_argument("--events-dir", help="the API's accepted-events folder (default: $HYBRIDREC_EVENTS_DIR)")
        p.add_argument("--redis-url", help="the API's Redis (default: $HYBRIDREC_REDIS_URL)")

    def serving(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--workers", type=int, default=1,
                       help="API worker processes (uvicorn), each with its own SO_REUSEPORT socket")
        p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
        p.add_argument("--dev", action="store_true",
                       help="development only: serve without API keys, every operation open (HYBRIDREC_DEV=true); "
                            "without keys and without this flag the server refuses to start")

    data = command(sub, "data", "Get, generate and ingest datasets.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = command(data_sub, "download", "Download a MovieLens archive from GroupLens, check its checksum and unpack it.", _cmd_download)
    p.add_argument("name", help="ml-latest-small, ml-100k, ml-1m, ml-10m, ml-20m, ml-25m or ml-latest")
    p.add_argument("--dest", default="data", help="folder to unpack into (default: data)")
    p.add_argument("--base-url", help="server folder holding the zips (default: GroupLens, or $HYBRIDREC_MOVIELENS_URL)")

    p = command(data_sub, "ingest", "Validate, de-duplicate, split and write a dataset folder.", _cmd_ingest)
    p.add_argument("source", help="a MovieLens folder or .zip, or a CSV/Parquet interactions file")
    p.add_argument("--out", required=True, help="dataset folder to write (local path or fsspec URL)")
    p.add_argument("--format", default="auto", choices=["auto", "movielens", "synthetic", "table"])
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

    p = command(data_sub, "prepare", "Make the pipeline's raw data ready under DATA_ROOT/raw, once: $HYBRIDREC_DATA "
                "if set, else what an earlier run prepared there, else ml-latest-small downloaded with its "
                "checksum checked, else synthetic data. Prints the folder.", _cmd_prepare)
    p.add_argument("--data-root", required=True, help="the pipeline's working folder (the data goes to its raw/)")
    p.add_argument("--synthetic-interactions", type=int, default=None,
                   help="size of the synthetic data when the download fails (default: as ml-latest-small, 100,836)")
    scheduler(p)

    p = command(sub, "train", "Fit signals on a dataset as one Dask job and save each signal's artifacts "
                "(`hybridrec evaluate DATASET --signals-dir OUT` scores them on the test split).", _cmd_train)
    p.add_argument("dataset", help="dataset folder written by `hybridrec data ingest`")
    p.add_argument("--signals", type=_signals, default=["als", "content", "lightgcn"], help="comma-separated (default: als,content,lightgcn)")
    p.add_argument("--out", required=True, help="folder for the signals (one subfolder each)")
    p.add_argument("--split", default="train", choices=["train", "fit"], help="train (final) or fit (validation kept out)")
    p.add_argument("--seed", type=int, default=0)
    scheduler(p)

    p = command(sub, "tune", "Tune blend weights (GA on validation NDCG@10), refit on train, evaluate on test; save the run.", _cmd_tune)
    p.add_argument("dataset", help="dataset folder")
    p.add_argument("--run", required=True, help="run folder to write (signals, run.json, convergence.png)")
    p.add_argument("--signals", type=_signals, default=None, help="comma-separated (default: all)")
    p.add_argument("--generations", type=int, default=None, help="GA generations (default: the tuner's)")
    refit(p)
    p.add_argument("--seed", type=int, default=0)
    scheduler(p)

    p = command(sub, "index", "Index a tuned run's fused item vectors with usearch and publish a bundle version.", _cmd_index)
    p.add_argument("run", help="run folder written by `hybridrec tune`")
    p.add_argument("--bundle-root", required=True, help=BUNDLE_ROOT_HELP)
    p.add_argument("--dataset", default=None, help="dataset folder (default: the one the run was tuned on)")

    p = command(sub, "evaluate", "Print the evaluation protocol's table for the baselines, each signal and the tuned blend.", _cmd_evaluate)
    p.add_argument("dataset", help="dataset folder written by `hybridrec data ingest`")
    p.add_argument("--run", default=None, help="a tuned run folder: adds each signal and the hybrid")
    p.add_argument("--signals-dir", default=None,
                   help="the --out folder of `hybridrec train` (fit on 'train'): adds each signal it saved")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = command(sub, "pipeline", "Ingest (with the API's accepted events), tune, index and publish a bundle.", _cmd_pipeline)
    p.add_argument("--data-root", required=True, help="working folder (raw/, dataset/, runs/)")
    p.add_argument("--bundle-root", required=True, help=BUNDLE_ROOT_HELP)
    p.add_argument("--source", default=None,
                   help="raw data (default: what `hybridrec data prepare` made ready under DATA_ROOT/raw, "
                        "else the same steps: $HYBRIDREC_DATA, else download, else synthetic)")
    p.add_argument("--signals", type=_signals, default=None, help="comma-separated signals to tune (default: all)")
    p.add_argument("--generations", type=int, default=None, help="GA generations (default: the tuner's)")
    refit(p)
    p.add_argument("--seed", type=int, default=0)
    events(p)
    scheduler(p)

    p = command(sub, "retrain", "Retrain when enough new interactions (or a deletion) arrived; publish only if the "
                "candidate holds up against the live bundle on the newest held-out events.", _cmd_retrain)
    p.add_argument("--every", default="1h", help="how often to check (e.g. 15m, 1h)")
    p.add_argument("--min-new-events", type=int, default=1000,
                   help="new interactions needed to retrain (any deletion retrains regardless)")
    p.add_argument("--tolerance", type=float, default=0.005,
                   help="allowed drop of NDCG@10 on the held-out events, candidate against live")
    p.add_argument("--holdout-share", type=float, default=0.2,
                   help="share of the new events (the newest) held out to compare the two bundles on")
    p.add_argument("--keep", type=int, default=3,
                   help="bundle versions kept after a publish (live + rollback targets); older ones are removed")
    p.add_argument("--signals", type=_signals, default=None, help="comma-separated signals to tune (default: all)")
    p.add_argument("--generations", type=int, default=None, help="GA generations (default: the tuner's)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--bundle-root", required=True, help=BUNDLE_ROOT_HELP)
    p.add_argument("--source", default=None)
    p.add_argument("--once", action="store_true", help="check once and exit")
    events(p)
    scheduler(p)

    p = command(sub, "serve", "Serve the GraphQL API (GraphiQL at /graphql) on the newest bundle.", _cmd_serve)
    p.add_argument("--bundle-root", default=os.environ.get("HYBRIDREC_BUNDLE_ROOT", "data/bundles"),
                   help=f"{BUNDLE_ROOT_HELP} (default: $HYBRIDREC_BUNDLE_ROOT, else data/bundles)")
    events(p)
    serving(p)

    p = command(sub, "demo", "Prepare data, serve a first bundle of the fast signals, then train, tune and "
                "swap in every signal's blend, on a LocalCluster whose dashboard stays up.", _cmd_demo)
    p.add_argument("--data-root", default="data")
    p.add_argument("--bundle-root", default="data/bundles", help=BUNDLE_ROOT_HELP)
    p.add_argument("--first-signals", type=_signals,
                   help="the first bundle's signals, served while the rest trains (default: cluster.demo.FIRST_SIGNALS)")
    p.add_argument("--signals", type=_signals, help="the tuned bundle's signals (default: every signal)")
    p.add_argument("--generations", type=int, help="GA generations for both bundles (default: the GA's)")
    events(p)
    serving(p)
    scheduler(p)

    bundle = command(sub, "bundle", "List, show and roll back published bundles.")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")
    for name, help_, run in (("list", "List bundle versions.", _cmd_bundle_list),
                             ("show", "Print a bundle's manifest.", _cmd_bundle_show),
                             ("rollback", "Point `latest` at an earlier version.", _cmd_bundle_rollback)):
        p = command(bundle_sub, name, help_, run)
        p.add_argument("--bundle-root", default=os.environ.get("HYBRIDREC_BUNDLE_ROOT", "data/bundles"),
                       help=f"{BUNDLE_ROOT_HELP} (default: $HYBRIDREC_BUNDLE_ROOT, else data/bundles)")
        if name != "list":
            p.add_argument("version", nargs=None if name == "rollback" else "?")

    items = command(sub, "items", "Add items to the served catalogue without retraining.")
    items_sub = items.add_subparsers(dest="items_command", required=True, metavar="SUBCOMMAND")
    p = command(items_sub, "add", "Add items (or new metadata for held ones) from a CSV or Parquet file with columns "
                "id,title,genres,tags,year (genres and tags '|'-separated in a CSV), through the API's store: every "
                "replica serves them within about a second. Idempotent; a bad row rejects the whole file.",
                _cmd_items_add)
    p.add_argument("file", help="a .csv or .parquet file (at most 100,000 items)")
    events(p)

    experiment = command(sub, "experiment", "Run online experiments: arms, traffic split, report.")
    exp_sub = experiment.add_subparsers(dest="experiment_command", required=True, metavar="SUBCOMMAND")

    def root(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bundle-root", default=os.environ.get("HYBRIDREC_BUNDLE_ROOT", "data/bundles"),
                       help=f"{BUNDLE_ROOT_HELP}; experiments.json lives there (default: $HYBRIDREC_BUNDLE_ROOT, "
                            "else data/bundles)")

    p = command(exp_sub, "create", "Start an experiment: the API serves its split from its next poll, no retraining.",
                _cmd_experiment_create)
    p.add_argument("name", help="letters, digits, '-' and '_' (also the default assignment salt)")
    p.add_argument("--traffic", required=True,
                   help="shares per arm, e.g. tuned=0.5,als_heavy=0.5 (normalised; arms are bundle variants such as "
                        "tuned, als, content, or ones given by --weights/--signals)")
    p.add_argument("--weights", action="append", metavar="ARM=SIGNAL:W,...",
                   help="an arm with these blend weights, e.g. als_heavy=als:2,content:0.5 (signals left out weigh 0)")
    p.add_argument("--signals", action="append", metavar="ARM=SIGNAL+...",
                   help="an arm with the tuned weights on these signals only, e.g. no_content=als+lightgcn+popularity")
    p.add_argument("--control", default="tuned", help="the arm others are compared with (default: tuned)")
    p.add_argument("--conversion-value", type=float, default=4.0,
                   help="a click converts when its interaction value is at least this (default 4: a 4-of-5 rating)")
    p.add_argument("--salt", default=None, help="assignment salt (default: the name)")
    p.add_argument("--description", default=None)
    root(p)
    p = command(exp_sub, "list", "List experiments, running and stopped.", _cmd_experiment_list)
    root(p)
    p = command(exp_sub, "show", "Print an experiment's definition.", _cmd_experiment_show)
    p.add_argument("name")
    root(p)
    p = command(exp_sub, "stop", "Stop the running experiment: all traffic back on the bundle's tuned blend.",
                _cmd_experiment_stop)
    p.add_argument("name", nargs="?", help="the running experiment's name (checked when given)")
    root(p)
    p = command(exp_sub, "report", "Per-arm rates with intervals, lift over control, sample-ratio check, plot.",
                _cmd_experiment_report)
    p.add_argument("name")
    p.add_argument("--plot", default=None, help="write a PNG of the rates with their intervals here")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level of the intervals (default 0.05)")
    root(p)
    events(p)

    p = command(sub, "submit", "Run a job on a running Dask cluster and return when it is done (or --detach).", _cmd_submit)
    scheduler(p)
    p.add_argument("--detach", action="store_true", help="return at once, printing how to follow the job")
    p.add_argument("--follow", metavar="KEY", help="wait for a detached job and print its output")
    p.add_argument("job", nargs=argparse.REMAINDER, help="the job's command line, e.g. pipeline --data-root ...")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        output = args.handler(args)
    except (HybridrecError, ValueError, FileNotFoundError, argparse.ArgumentTypeError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"hybridrec {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        _close_client()
    if output:
        print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
