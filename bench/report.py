"""The bench report: one Markdown file with PNG plots, from the JSON the benches wrote.

    python bench/report.py                                 # bench/results -> bench/results/report.md
    python bench/report.py --results /tmp/r --out /tmp/r

Reads, under --results:
- quality/<dataset>.json (bench/quality.py): the protocol table per dataset, with a bar chart;
- scale/n<N>/<stage>.json (bench/scale.py): wall time and peak memory per stage and size, their
  growth with size (least-squares slope on log-log axes) and log-log plots;
- als_vs_implicit/<dataset>.json (bench/als_vs_implicit.py): our ALS against implicit's at the same
  settings (quality and wall-time ratios), with issue 3's target;
- tuner/<dataset>.json and .png (bench/tuner.py): GA vs grid vs random best validation NDCG@10 per
  budget, and tuner/synthetic-<N>.json: the time of tuning at N interactions, with its target;
- lightgcn_gpu/*.json (bench/lightgcn_gpu.py): LightGCN at MovieLens-25M size on one device (GPU
  or CPU) per run, beside the scale bench's CPU epoch at 25M;
- serving: the API load bench's and the fault bench's JSON and PNG files (bench/api_load.py,
  bench/faults.py), found by name (api_load*, faults*, or in folders of those names), or given
  with --api-load / --faults. Missing parts are named in the report, never silently left out.
The reference rows of DESIGN.md's table are read from it (--design) and shown beside ours.
Nothing here measures: every figure comes from the JSON files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DESIGN = REPO.parent / "shared" / "DESIGN.md"

QUALITY_COLUMNS = (("ndcg", "NDCG@10"), ("recall", "Recall@10"), ("precision", "Precision@10"), ("map", "MAP@10"),
                   ("hit_rate", "HR@10"), ("coverage", "coverage@10"), ("diversity", "diversity@10"),
                   ("cold_recall", "cold recall@10"), ("cold_share", "cold share@10"))
"""cold recall / share: items without a train interaction (etl/metrics.py ``cold_item_metrics``)."""
#: Our method -> the start of its row in DESIGN.md's reference table (matched case-insensitively).
REFERENCE_ROWS = {"popularity": "popularity", "implicit ALS": "implicit", "LightFM WARP": "LightFM",
                  "EASE": "EASE", "lightgcn": "PyG LightGCN", "content": "TF-IDF"}
SERVING = ("api_load", "faults")


# -- small helpers ----------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,d}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def general(value: Any) -> str:
    """Any JSON scalar, floats with 4 significant digits (serving and fault figures have all kinds)."""
    if isinstance(value, float) and math.isfinite(value) and abs(value) < 1000:
        return f"{value:.4g}"
    return fmt(value)


def secs(value: Any) -> str:
    """Seconds: two decimals below 10 s, one below 1000 s, then whole seconds."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def mib(value: Any) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}"


def table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def reference_table(design: Path) -> dict[str, dict[str, float]]:
    """DESIGN.md's reference rows: method text -> {'ndcg': .., 'recall': ..} (empty when absent)."""
    if not design.exists():
        return {}
    out: dict[str, dict[str, float]] = {}
    text = design.read_text()
    start = text.find("Reference figures")
    if start < 0:
        return {}
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if out:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"[0-9.]+", cells[1]):
            out[cells[0]] = {"ndcg": float(cells[1]), "recall": float(cells[2])}
    return out


def reference_for(method: str, refs: dict[str, dict[str, float]]) -> tuple[str, dict[str, float]] | None:
    prefix = REFERENCE_ROWS.get(method)
    if prefix is None:
        return None
    for name, figures in refs.items():
        if name.lower().startswith(prefix.lower()):
            return name, figures
    return None


# -- quality ----------------------------------------------------------------------------------------
def quality_section(results: Path, out: Path, refs: dict[str, dict[str, float]]) -> tuple[list[str], list[dict[str, Any]]]:
    files = sorted((results / "quality").glob("*.json")) if (results / "quality").is_dir() else []
    datasets = [read(f) for f in files]
    datasets.sort(key=lambda d: (not d["dataset"].startswith("ml-"), d["sizes"]["train"]))
    lines = ["## Quality: the protocol table", ""]
    if not datasets:
        lines += [f"_Missing: no quality results under `{results / 'quality'}` (run `python bench/quality.py`)._", ""]
        return lines, datasets
    lines += [
        "Protocol of DESIGN.md: per-user temporal split, full ranking over the catalogue with train items "
        "excluded, metrics at 10 averaged over users with a test interaction. Baselines: implicit's ALS at the "
        "reference settings, LightFM WARP, EASE with lambda chosen on validation (bench/baselines.py); each "
        "project signal alone with the config of the pipeline's final fit; the hybrid from "
        "training.pipeline.run_pipeline (tuned on validation, refit on train, test once). Fit seconds and peak "
        "memory (RSS of the bench process and its Dask workers together; '+' is what the fit added) are of the "
        "fit alone; for the hybrid, of the whole pipeline (signals fit twice, pool, GA, evaluation).", ""]
    for d in datasets:
        s = d["sizes"]
        env = d.get("environment", {})
        lines += [f"### {d['dataset']}", "",
                  f"{s['users']:,} users, {s['items']:,} items, {s['train']:,} train ({s['fit']:,} fit + "
                  f"{s['validation']:,} validation) and {s['test']:,} test interactions; "
                  f"evaluated users: {d['rows'][-1].get('users', 'n/a')}"
                  + (f" (a sample of {d['eval_users']:,})" if d.get("eval_users") else "")
                  + f"; {env.get('cpus', '?')} CPUs, load average {env.get('load_average', '?')} when it finished."
                  + (f" LightGCN epoch budget: {d['lightgcn_epochs']}." if d.get("lightgcn_epochs") else "")
                  + (" **Quick (smoke) settings.**" if d.get("quick") else ""), ""]
        is_ml = d["dataset"].startswith("ml-latest-small")
        head = ["method", "kind", *[h for _, h in QUALITY_COLUMNS], "fit s", "peak MiB", "+MiB"]
        if is_ml and refs:
            head += ["DESIGN NDCG@10", "DESIGN Recall@10"]
        rows = []
        for r in d["rows"]:
            if r.get("skipped"):
                rows.append([r["method"], r["group"], r["skipped"]] + [""] * (len(head) - 3))
                continue
            row = [r["method"], r["group"], *[r.get(k) for k, _ in QUALITY_COLUMNS], secs(r.get("fit_seconds")),
                   mib(r.get("peak_mib")), mib(r.get("added_mib"))]
            if is_ml and refs:
                ref = reference_for(r["method"], refs)
                row += [ref[1]["ndcg"], ref[1]["recall"]] if ref else ["", ""]
            rows.append(row)
        lines += [table(head, rows), ""]
        lines += hybrid_notes(d, refs if is_ml else {})
    chart = out / "quality_ndcg.png"
    quality_chart(datasets, chart)
    lines += [f"![NDCG@10 and Recall@10 per method]({rel(chart, out)})", ""]
    return lines, datasets


def hybrid_notes(d: dict[str, Any], refs: dict[str, dict[str, float]]) -> list[str]:
    hybrid = next((r for r in d["rows"] if r["group"] == "hybrid"), None)
    if hybrid is None or hybrid.get("ndcg") is None:
        return []
    others = [r for r in d["rows"] if r is not hybrid and r.get("ndcg") is not None]
    beaten = [r["method"] for r in others if hybrid["ndcg"] > r["ndcg"]]
    not_beaten = [f"{r['method']} ({r['ndcg']:.4f})" for r in others if hybrid["ndcg"] <= r["ndcg"]]
    weights = ", ".join(f"{s} {w:.3f}" for s, w in (hybrid.get("weights") or {}).items())
    lines = [f"Tuned hybrid: test NDCG@10 **{hybrid['ndcg']:.4f}**, weights {weights}. "
             + (f"It beats every other row measured here ({len(beaten)})." if not not_beaten
                else f"It does not beat: {', '.join(not_beaten)}.")]
    if refs:
        best = max(refs.items(), key=lambda kv: kv[1]["ndcg"])
        verdict = "above" if hybrid["ndcg"] > best[1]["ndcg"] else "not above"
        lines[-1] += f" Best DESIGN.md reference row: {best[0]} {best[1]['ndcg']:.4f} ({verdict})."
    timings = hybrid.get("timings") or {}
    if timings:
        keys = [k for k in ("fit_signals", "pool", "tune", "refit_signals", "evaluate") if k in timings]
        lines[-1] += " Pipeline stages: " + ", ".join(f"{k} {timings[k]:.1f} s" for k in keys) + "."
    return lines + [""]


def quality_chart(datasets: list[dict[str, Any]], path: Path) -> None:
    pyplot = plt()
    fig, axes = pyplot.subplots(len(datasets), 1, figsize=(10, 3.6 * len(datasets)), squeeze=False)
    for ax, d in zip(axes[:, 0], datasets, strict=True):
        rows = [r for r in d["rows"] if r.get("ndcg") is not None]
        x = list(range(len(rows)))
        colors = {"baseline": "#9a9a9a", "signal": "#4c72b0", "hybrid": "#dd8452"}
        ax.bar([i - 0.2 for i in x], [r["ndcg"] for r in rows], width=0.4, label="NDCG@10",
               color=[colors.get(r["group"], "#4c72b0") for r in rows])
        ax.bar([i + 0.2 for i in x], [r["recall"] for r in rows], width=0.4, label="Recall@10",
               color=[colors.get(r["group"], "#4c72b0") for r in rows], alpha=0.45, hatch="//")
        for i, r in zip(x, rows, strict=True):
            ax.text(i - 0.2, r["ndcg"], f"{r['ndcg']:.3f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, [r["method"] for r in rows], rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{d['dataset']} (grey: baselines, blue: signals, orange: tuned hybrid; hatched: Recall@10)",
                     fontsize=9)
        ax.set_ylabel("at 10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot.close(fig)


# -- scale ------------------------------------------------------------------------------------------
def load_scale(results: Path) -> dict[int, dict[str, dict[str, Any]]]:
    out: dict[int, dict[str, dict[str, Any]]] = {}
    root = results / "scale"
    if not root.is_dir():
        return out
    for folder in sorted(root.glob("n*")):
        if not folder.is_dir() or not folder.name[1:].isdigit():
            continue
        stages = {f.stem: read(f) for f in folder.glob("*.json")}
        if stages:
            out[int(folder.name[1:])] = stages
    return dict(sorted(out.items()))


PIPELINE_STAGES = ("generate", "ingest", "tune", "refit", "hybrid", "index")
"""The scale bench's stages in run order; their walls add up to the run's (a signal's own JSON,
signal-<kind>, holds its share of the refit and its test metrics)."""


def stage_wall(stage: dict[str, Any]) -> float | None:
    """A stage's whole wall time: refit's ``seconds`` are its fits only (``stage_seconds`` adds
    saving each model and evaluating it on test)."""
    return stage.get("stage_seconds", stage.get("seconds"))


def stage_order(scale: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    names = {s for stages in scale.values() for s in stages}
    return [s for s in PIPELINE_STAGES if s in names]


def stage_total(stages: dict[str, dict[str, Any]]) -> float | None:
    """The run's wall seconds from generated data to the index at one size; None until every stage
    ran, and when the refit kept signals fit by an earlier run (its time lacks their fits)."""
    if not all(s in stages for s in PIPELINE_STAGES) or stages["refit"].get("kept"):
        return None
    return sum(stage_wall(stages[s]) for s in PIPELINE_STAGES)


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x): y ~ x^slope (None with fewer than two sizes)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den > 0 else None


def scale_section(results: Path, out: Path) -> list[str]:
    scale = load_scale(results)
    lines = ["## Scale: synthetic interactions through every stage", ""]
    if not scale:
        return lines + [f"_Missing: no scale results under `{results / 'scale'}` (run `python bench/scale.py`)._", ""]
    sizes = list(scale)
    order = stage_order(scale)
    any_stage = next(iter(next(iter(scale.values())).values()))
    # LightGCN's epoch budget per size, where one was set (tuning's or its own refit stage)
    budgets = {n: st["lightgcn_epochs"] for n, stages in scale.items() for name, st in stages.items()
               if st.get("lightgcn_epochs") and name in ("tune", "signal-lightgcn")}
    epochs, budget_sizes = sorted(set(budgets.values())), sorted(budgets)
    epoch_sizes = sorted({st.get("settings", {}).get("lightgcn_epoch_size") for stages in scale.values()
                          for st in stages.values() if st.get("settings", {}).get("lightgcn_epoch_size")})
    eval_users = sorted({st.get("eval_users") for stages in scale.values() for st in stages.values()
                         if st.get("eval_users")})
    env = any_stage.get("environment", {})
    lines += [
        f"Sizes: {', '.join(f'{n:,}' for n in sizes)} interactions (etl.sources.synthetic, MovieLens-shaped), "
        f"{any_stage.get('workers', '?')} single-threaded Dask workers on {env.get('cpus', '?')} CPUs. Stages: "
        "generate and ingest (bench/synthetic_scale.py's stages), tune (training.pipeline.tune: every signal fit on "
        "'fit', scales, validation pool, GA), refit (training.pipeline.refit_signals: each signal's final model on "
        "'train', fit again with the pipeline's refit config, side by side, or tuning's model with every user "
        "folded in from 'train', as the pipeline does from REFOLD_MIN_INTERACTIONS 'train' interactions on; the "
        "per-signal table's 'refit' column says which), the hybrid "
        "evaluated on test, and the usearch index over the fused item vectors. Memory is the peak RSS of the bench "
        "process and its workers together; '+' is what the stage added to what they held when it began. "
        "In the per-signal table a signal's seconds are its refit's (fits overlap the other signals' fits), and its "
        "memory is the peak of the refit stage (its evaluation is in 'eval s').",
        "",
        (f"**LightGCN ran with a bounded epoch budget of {', '.join(map(str, epochs))} epoch(s) at "
         f"{', '.join(f'{n:,}' for n in budget_sizes)}** (the full-graph trainer before the spectral one, or a "
         "quick run): its time there is for that budget and its quality is not its tuned quality. " if epochs else "")
        + (f"LightGCN (spectral-domain trainer) is early-stopped on validation at "
           f"{', '.join(f'{n:,}' for n in sizes if n not in budget_sizes)}, epochs of "
           f"{', '.join(f'{e:,}' for e in epoch_sizes) or '?'} positives. " if len(budget_sizes) < len(sizes) else "")
        + f"Test metrics are over a seeded sample of {', '.join(f'{u:,}' for u in eval_users) or 'all'} test users "
        "(all when fewer).",
        ""]
    blended = {n: sorted(stages["tune"].get("weights", {})) for n, stages in scale.items() if "tune" in stages}
    if len({tuple(v) for v in blended.values()}) > 1:
        lines += ["**The sizes blend different signal sets** (tune, hybrid and index ran with these): "
                  + "; ".join(f"{n:,}: {', '.join(v)}" for n, v in blended.items()) + ".", ""]
    if any(st.get("quick") for stages in scale.values() for st in stages.values()):
        lines += ["**Quick (smoke) settings: a small GA; figures show the shape of the run only.**", ""]
    # per size x stage
    head = ["stage", *[f"{n:,} s" for n in sizes], *[f"{n:,} peak MiB" for n in sizes],
            *[f"{n:,} +MiB" for n in sizes], "time ~ n^", "peak ~ n^"]
    rows = []
    for stage in order:
        secs_list = [stage_wall(scale[n].get(stage, {})) for n in sizes]
        peaks = [scale[n].get(stage, {}).get("peak_mib") for n in sizes]
        added = [scale[n].get(stage, {}).get("added_mib") for n in sizes]
        have = [(n, s, p) for n, s, p in zip(sizes, secs_list, peaks, strict=True) if s is not None]
        ts = slope([h[0] for h in have], [h[1] for h in have])
        ms = slope([h[0] for h in have], [h[2] for h in have])
        rows.append([stage, *map(secs, secs_list), *map(mib, peaks), *map(mib, added),
                     f"{ts:.2f}" if ts is not None else "n/a", f"{ms:.2f}" if ms is not None else "n/a"])
    totals = [stage_total(scale[n]) for n in sizes]
    rows.append(["**total**", *map(secs, totals), *[""] * (2 * len(sizes) + 2)])
    lines += ["### Wall time and peak memory per stage", "", table(head, rows), "",
              "'time ~ n^' and 'peak ~ n^': least-squares slope on log-log axes over the sizes run "
              "(1: linear growth). Missing cells: the stage has not run at that size (yet); runs before "
              "signals were refit side by side had a stage per signal instead of 'refit' (their fits are in "
              "the per-signal table), so they have no refit cell and no total. 'refit' includes saving and "
              "evaluating each signal (making the models alone: 'refit: models s' below); no total where the refit "
              "kept signals fit by an earlier run.", ""]
    lines += signal_scale_table(scale, sizes)
    lines += stage_details(scale, sizes)
    time_png, mem_png = out / "scale_time.png", out / "scale_memory.png"
    scale_plot(scale, order, "seconds", "wall seconds", time_png)
    scale_plot(scale, order, "peak_mib", "peak RSS, all processes (MiB)", mem_png)
    lines += [f"![wall time per stage against interactions, log-log]({rel(time_png, out)})", "",
              f"![peak memory per stage against interactions, log-log]({rel(mem_png, out)})", ""]
    return lines


def signal_scale_table(scale: dict[int, dict[str, dict[str, Any]]], sizes: list[int]) -> list[str]:
    rows = []
    for n in sizes:
        for stage, st in scale[n].items():
            if not (stage.startswith("signal-") or stage == "hybrid"):
                continue
            m = st.get("metrics", {})
            rows.append([f"{n:,}", stage.removeprefix("signal-"), m.get("ndcg@10"), m.get("recall@10"),
                         m.get("coverage@10"), st.get("refit", "fit") if stage != "hybrid" else "",
                         secs(st.get("seconds")) if stage != "hybrid" else "",
                         mib(st.get("peak_mib")) if stage != "hybrid" else "",
                         secs(st.get("evaluate_seconds") if stage != "hybrid" else st.get("seconds")),
                         str(st.get("epochs_run") or "")])
    rows.sort(key=lambda r: (int(r[0].replace(",", "")), r[1] == "hybrid", r[1]))
    if not rows:
        return []
    head = ["interactions", "signal", "NDCG@10", "Recall@10", "coverage@10", "refit", "refit s", "peak MiB", "eval s",
            "epochs"]
    return ["### Per signal at each size (test split)", "", table(head, rows), ""]


def stage_details(scale: dict[int, dict[str, dict[str, Any]]], sizes: list[int]) -> list[str]:
    rows = []
    for n in sizes:
        st = scale[n]
        tune, index, ingest = st.get("tune", {}), st.get("index", {}), st.get("ingest", {})
        t = tune.get("timings", {})
        sz = ingest.get("sizes", {})
        qps = index.get("queries_per_second")
        rows.append([f"{n:,}", sz.get("users"), sz.get("items"), sz.get("train"), secs(t.get("fit_signals")),
                     secs(t.get("pool")), secs(t.get("tune")), tune.get("evaluations"),
                     secs(st.get("refit", {}).get("seconds")),
                     (tune.get("validation") or {}).get("hybrid"), secs(index.get("build_seconds")),
                     f"{qps:,.0f}" if qps else "n/a"])
    head = ["interactions", "users", "items", "train", "tune: fit s", "tune: pool s", "tune: GA s", "GA evals", "refit: models s",
            "val NDCG@10 (blend)", "index build s", "searches/s"]
    return ["### Inside tuning and indexing", "", table(head, rows), "",
            "Searches: a batch of exact-filter searches (train items excluded) of sampled users over the HNSW "
            "index, top 10.", ""]


def scale_plot(scale: dict[int, dict[str, dict[str, Any]]], order: list[str], key: str, label: str, path: Path) -> None:
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(8, 5))
    for stage in order:
        pts = [(n, st[stage][key]) for n, st in scale.items() if stage in st and st[stage].get(key)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=stage)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("synthetic interactions")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot.close(fig)


# -- ALS against implicit ---------------------------------------------------------------------------
def als_section(results: Path) -> list[str]:
    """Our Dask ALS against implicit's per dataset, and whether issue 3's target is met where it is stated."""
    folder = results / "als_vs_implicit"
    records = [read(f) for f in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    lines = ["## ALS: ours against implicit (bench/als_vs_implicit.py)", ""]
    if not records:
        return lines + [f"_Missing: no results under `{folder}` (run `python bench/als_vs_implicit.py`)._", ""]
    records.sort(key=lambda r: (r.get("interactions") is not None, r["train_nnz"]))
    settings = records[-1].get("settings", {})
    target = records[-1].get("target", {})
    lines += [
        "Both fit on the protocol's train split and are scored on its test split (train items excluded): "
        + ", ".join(f"{k} {v}" for k, v in settings.items())
        + ". Ours runs on a LocalCluster of single-threaded worker processes, implicit with as many threads. "
        "Seconds are the wall time of the fit alone; quality ratio = our NDCG@10 / implicit's, time ratio = our "
        "seconds / implicit's (above 1: we are slower). Load average (1 minute) before the fits and when the "
        "dataset's figures were written: the machine is shared, read the seconds with it.", ""]
    head = ["dataset", "train interactions", "our NDCG@10", "implicit NDCG@10", "quality ratio", "our Recall@10",
            "implicit Recall@10", "our s", "implicit s", "time ratio", "load avg before / after", "target met"]
    rows = []
    for r in records:
        ours, imp = r["ours"], r["implicit"]
        rows.append([r["dataset"], r["train_nnz"], ours["ndcg"], imp["ndcg"], ratio(r.get("quality_ratio"), 5),
                     ours["recall"], imp["recall"], secs(ours["seconds"]), secs(imp["seconds"]),
                     ratio(r.get("time_ratio")), f"{general(r.get('load_average_before'))} / "
                     f"{general(r.get('environment', {}).get('load_average'))}",
                     fmt((r.get("target") or {}).get("met"))])
    lines += [table(head, rows), ""]
    stated = [r for r in records if (r.get("interactions") or 0) >= 25_000_000 and r.get("workers") == 2]
    goal = f"time ratio at most {target.get('time_ratio_max', '?')} at 25M interactions with 2 workers"
    small = [r for r in records if r.get("interactions") is None]
    if small:
        r = small[-1]
        lines += [f"Issue 3's quality target, our NDCG@10 at least implicit's at these settings on {r['dataset']}: "
                  f"**{'met' if r['target'].get('quality_met', r['target']['met']) else 'not met'}** "
                  f"({r['ours']['ndcg']:.4f} against {r['implicit']['ndcg']:.4f}). Both minimise the same loss: "
                  "elsewhere the quality ratio is shown for comparison.", ""]
    if stated:
        r = stated[-1]
        lines += [f"Issue 3's target, {goal}: **{'met' if r['target']['met'] else 'not met'}** on {r['dataset']} "
                  f"(quality ratio {ratio(r.get('quality_ratio'), 5)}, time ratio {ratio(r.get('time_ratio'))}, "
                  f"load average {general(r.get('environment', {}).get('load_average'))})"
                  + "".join(f"; {miss}" for miss in als_misses(r)) + ". The 'target met' column holds each "
                  "row's stated target: quality on ml-latest-small, time on the synthetic sizes.", ""]
    else:
        lines += [f"Issue 3's target, {goal}: _no run at 25M with 2 workers yet_.", ""]
    return lines


def als_misses(r: dict[str, Any]) -> list[str]:
    """The parts of the target a record misses, with the figures at full precision (a ratio of 0.99998
    prints as 1.00)."""
    target, misses = r["target"], []
    q, t = r.get("quality_ratio"), r.get("time_ratio")
    if r.get("interactions") is None and (q is None or q < target["quality_ratio_min"]):
        misses.append(f"missed on quality: NDCG@10 {r['ours']['ndcg']:.6f} (ours) against {r['implicit']['ndcg']:.6f} "
                      f"(implicit), ratio {q:.6f} < {target['quality_ratio_min']}" if q is not None
                      else "missed on quality: no ratio")
    if t is None or t > target["time_ratio_max"]:
        misses.append(f"missed on time: {r['ours']['seconds']:.1f} s against {r['implicit']['seconds']:.1f} s, "
                      f"ratio {t:.2f} > {target['time_ratio_max']}" if t is not None else "missed on time: no ratio")
    return misses


def ratio(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and math.isfinite(value) else "n/a"


# -- LightGCN on one device ------------------------------------------------------------------------
LIGHTGCN_DEVICE_RUN = ("python bench/lightgcn_gpu.py --device cuda --batches auto 16384 --time-limit 130 --budget 350 "
                       "--out bench/results/lightgcn_gpu")


def lightgcn_device_section(results: Path) -> list[str]:
    """bench/lightgcn_gpu.py's runs (per device and size), and the CPU epoch of the scale bench at 25M beside them."""
    folder = results / "lightgcn_gpu"
    records = [read(f) for f in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    lines = ["## LightGCN on one device (bench/lightgcn_gpu.py)", ""]
    if not records:
        return lines + [f"_Missing: no results under `{folder}` (on a GPU machine: `{LIGHTGCN_DEVICE_RUN}`)._", ""]
    lines += ["A MovieLens-25M-shaped graph (numpy generator: latent-topic tastes, power-law item popularity, "
              "log-normal user activity, scaled down for smaller sizes), split by the protocol; LightGCN "
              "(models.lightgcn_trainer, 64 dimensions, 3 layers, 4 negatives) fit on 'fit' and early-stopped on a "
              "sample of validation users within a wall-clock limit per run. Batch 'auto' is the default batch; "
              "'basis s' is the spectral basis (one truncated SVD; 'adjacency s' of the full-graph trainer in runs "
              "before it). Epoch seconds are the training steps alone (median over the epochs "
              "run); test NDCG@10 is of the kept (best validation) embeddings, train items excluded. Load average (1 minute): "
              "when the run ended.", ""]
    head = ["device", "interactions", "fit", "batch", "steps/epoch", "basis s", "epoch s", "epochs",
            "validation NDCG@10 by epoch", "best epoch", "popularity val NDCG@10", "test NDCG@10", "peak GPU MiB",
            "load average"]
    rows = []
    for r in sorted(records, key=lambda r: (r["device"], r["graph"]["interactions"])):
        for run in r["runs"]:
            name = f"{r.get('device_name') or r['device']} ({r['device']}, {r.get('threads', '?')} threads)"
            if run.get("skipped"):
                rows.append([name, r["graph"]["interactions"], r["sizes"]["fit"], run["batch"], run["steps_per_epoch"],
                             "skipped: budget", "", "", "", "", "", "", "", ""])
                continue
            curve = ", ".join(f"{e}: {v:.4f}" for e, v in run["history"])
            rows.append([name, r["graph"]["interactions"], r["sizes"]["fit"], run["batch"], run["steps_per_epoch"],
                         secs(run["basis_seconds"]) if "basis_seconds" in run
                         else f"{secs(run.get('adjacency_seconds'))} (full-graph trainer)",
                         secs(run["median_epoch_seconds"]), run["epochs_run"], curve,
                         run["best_epoch"], r["popularity_validation_ndcg"], run["test_ndcg"],
                         mib(run["peak_gpu_mib"]) if run.get("peak_gpu_mib") is not None else "n/a",
                         general(run.get("load_average"))])
    lines += [table(head, rows), ""]
    cpu = load_scale(results).get(25_000_000, {}).get("signal-lightgcn")
    if cpu:
        lines += [f"The scale bench's CPU figure at 25M: LightGCN's fit on 'train' ({fmt(cpu.get('rows'))} interactions, "
                  f"{cpu.get('epochs_run') or '?'} epochs) took {secs(cpu['seconds'])} s "
                  f"on a single-threaded Dask worker ({cpu.get('environment', {}).get('cpus', '?')} CPUs, load average "
                  f"{general(cpu.get('environment', {}).get('load_average'))})"
                  + (", with the other signals' fits beside it" if len(cpu.get("fitted_with", [])) > 1 else "")
                  + ".", ""]
    gpu = [r for r in records if str(r["device"]).startswith("cuda")]
    if not gpu:
        return lines + [f"_No GPU run yet: on a GPU machine, `{LIGHTGCN_DEVICE_RUN}` (about 6 minutes)._", ""]
    cpu_epochs = {(r["graph"]["interactions"], run["batch"], run["steps_per_epoch"]): run["median_epoch_seconds"]
                  for r in records if r["device"] == "cpu" for run in r["runs"]
                  if not run.get("skipped") and "basis_seconds" in run}
    for r in gpu:
        for run in r["runs"]:
            same = cpu_epochs.get((r["graph"]["interactions"], run["batch"], run["steps_per_epoch"]))
            if same and not run.get("skipped"):
                lines += [f"At {fmt(r['graph']['interactions'])} interactions, batch {run['batch']:,}: an epoch took "
                          f"{secs(run['median_epoch_seconds'])} s on {r.get('device_name')} against {secs(same)} s on "
                          f"CPU ({same / run['median_epoch_seconds']:,.1f}x).", ""]
    return lines


# -- tuners -----------------------------------------------------------------------------------------
def tuner_section(results: Path, out: Path) -> list[str]:
    """GA vs grid vs random per budget (table and plot) and the time of tuning at synthetic sizes."""
    folder = results / "tuner"
    records = [read(f) | {"_path": f} for f in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    compares = [r for r in records if r.get("kind") == "compare"]
    timings = sorted((r for r in records if r.get("kind") == "timing"), key=lambda r: r["n_interactions"])
    lines = ["## Blend tuners (bench/tuner.py)", ""]
    if not compares:
        lines += [f"_Missing: no tuner comparison under `{folder}` (run `python bench/tuner.py`)._", ""]
    for d in compares:
        lines += tuner_compare(d, out)
    if not timings:
        lines += [f"_Missing: no tuning time under `{folder}` (run `python bench/tuner.py --synthetic 25000000`)._", ""]
    else:
        lines += tuner_timing(timings)
    return lines


def tuner_compare(d: dict[str, Any], out: Path) -> list[str]:
    st, pool, env = d.get("settings", {}), d.get("pool", {}), d.get("environment", {})
    has_test = any(r.get("test") for r in d["rows"])
    per_signal = ", ".join(f"{s} {v:.4f}" for s, v in (d.get("per_signal_validation_ndcg") or {}).items())
    lines = [f"### {d['dataset']}: GA vs grid vs random at equal budgets", "",
             f"Signals {', '.join(d.get('signals', []))} fit once on 'fit'; one validation pool of "
             f"{pool.get('users', '?')} users x {pool.get('width', '?')} candidates; each method gets each budget of "
             f"fitness evaluations ({st.get('objective', 'validation NDCG@10')}); GA, bagged GA (budgets of "
             f"{st.get('ga_bag5_from_budget', '?')} and more) and random search are averaged over "
             f"{st.get('seeds', '?')} seeds, grid is deterministic. Each signal alone on the pool: {per_signal}. "
             + ("Test NDCG@10: each run's weights on the signals refit on 'train' (nothing is chosen on test). "
                if has_test else "")
             + f"{env.get('cpus', '?')} CPUs, load average {env.get('load_average', '?')} when it finished.", ""]
    head = ["budget", "method", "evaluations", "best val NDCG@10 (mean)", "sd"]
    head += ["test NDCG@10 (mean)"] if has_test else []
    rows = []
    for r in d["rows"]:
        rows.append([r["budget"], r["method"], f"{r['evaluations']:.0f}", r["best_mean"], r["best_sd"],
                     *([r.get("test_mean")] if has_test else [])])
    lines += [table(head, rows), ""]
    for what, key in (("validation", "best_mean"), *([("test", "test_mean")] if has_test else [])):
        lines += [f"Best {what} NDCG@10 per budget (methods tied at the best all named): "
                  + "; ".join(best_per_budget(d["rows"], key)) + ".", ""]
    png = d["_path"].with_suffix(".png")
    lines += [f"![best validation NDCG@10 against evaluations per method]({rel(png, out)})" if png.exists()
              else f"_No plot: `{png}` not found._", ""]
    return lines


def best_per_budget(rows: list[dict[str, Any]], key: str) -> list[str]:
    """'budget: method(s) value' for the highest mean of ``key`` at each budget."""
    out = []
    for budget in sorted({r["budget"] for r in rows}):
        at = [r for r in rows if r["budget"] == budget and r.get(key) is not None]
        top = max(r[key] for r in at)
        out.append(f"{budget}: {', '.join(r['method'] for r in at if r[key] >= top - 1e-12)} {top:.4f}")
    return out


def tuner_timing(timings: list[dict[str, Any]]) -> list[str]:
    head = ["interactions", "users", "items", "fit + validation", "pool", "evaluations", "pool s", "GA s", "tuning s",
            "CPU s / cores", "load avg before / after", "target met"]
    rows = []
    for t in timings:
        stages, pool = t["stages"], t["pool"]
        rows.append([t["n_interactions"], t["users"], t["items"], f"{t['fit_nnz']:,} + {t['validation_nnz']:,}",
                     f"{pool['users']:,} x {pool['width']}", t["evaluations"], secs(stages["pool"]["wall_seconds"]),
                     secs(stages["ga"]["wall_seconds"]), secs(t["tuning_seconds"]),
                     secs(t.get("tuning_cpu_seconds_per_core")),
                     f"{general(t.get('load_average_before'))} / {general(t.get('environment', {}).get('load_average'))}",
                     fmt(t["target"]["met"])])
    lines = ["### Tuning time at synthetic sizes", "",
             "Pool precompute and the pipeline's GA (its default config, full budget, no early stopping) given "
             "fitted signals: MovieLens-shaped interaction matrices drawn directly and stand-in signals with the "
             "default configs' dimensions (the cost depends on shapes, not on what was learned); 'interactions' is "
             "the number drawn, 'fit + validation' the distinct pairs left (repeated draws collapse). 'tuning s' is "
             "the wall time of pool + GA; 'CPU s / cores' is what it would be on an idle machine.", "",
             table(head, rows), ""]
    stated = [t for t in timings if t["n_interactions"] >= 25_000_000]
    if stated:
        t = stated[-1]
        lines += [f"Issue 3's target, tuning within {t['target']['seconds_max']:.0f} s at 25M (judged on wall "
                  f"seconds): **{'met' if t['target']['met'] else 'not met'}** at {t['n_interactions']:,} "
                  f"interactions: {secs(t['tuning_seconds'])} s at load average "
                  f"{general(t.get('environment', {}).get('load_average'))}.", ""]
    else:
        lines += ["Issue 3's target, tuning within 10 minutes at 25M: _no run at 25M yet_.", ""]
    return lines


# -- serving ----------------------------------------------------------------------------------------
def find_serving(results: Path, name: str, given: list[Path]) -> list[Path]:
    """JSON/PNG files of bench ``name``: those given (files or folders), else found by name under results."""
    found: list[Path] = []
    for p in given:
        found += sorted(f for f in p.rglob("*") if f.suffix in (".json", ".png")) if p.is_dir() else [p]
    if given:
        return [f for f in found if f.exists()]
    if not results.is_dir():
        return []
    skip = {"quality", "scale", "tmp", "als_vs_implicit", "tuner"}
    for f in sorted(results.rglob("*")):
        parts = f.relative_to(results).parts
        if parts[0] in skip or f.suffix not in (".json", ".png"):
            continue
        if f.name.startswith(name) or any(part.startswith(name) for part in parts[:-1]):
            found.append(f)
    return found


def render_json(data: Any) -> list[str]:
    """A readable table of a bench's JSON whatever its shape: phase tables, lists of records, key/values."""
    lines: list[str] = []
    if isinstance(data, dict):
        nested = {k: v for k, v in data.items() if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values())}
        records = {k: v for k, v in data.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
        scalars = flatten({k: v for k, v in data.items() if k not in nested and k not in records})
        if scalars:
            lines += [table(["key", "value"], [[k, general(v)] for k, v in scalars[:60]]), ""]
        for k, v in nested.items():
            lines += [f"**{k}**", "", records_table([{"name": name, **flat_dict(rec)} for name, rec in v.items()]), ""]
        for k, v in records.items():
            lines += [f"**{k}**", "", records_table([flat_dict(rec) for rec in v]), ""]
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        lines += [records_table([flat_dict(rec) for rec in data]), ""]
    else:
        lines += ["```", json.dumps(data, indent=2)[:4000], "```", ""]
    return lines


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flatten(v, key + ".")
        elif isinstance(v, list):
            out.append((key, ", ".join(general(x) for x in v[:12]) + (" ..." if len(v) > 12 else "")))
        else:
            out.append((key, v))
    return out


def flat_dict(rec: dict[str, Any]) -> dict[str, Any]:
    return dict(flatten(rec))


PREFERRED = ("name", "phase", "scenario", "fault", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors", "met", "ok",
             "passed", "target", "search_batch_mean", "server_cpu_ms_per_req")


def records_table(records: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for rec in records:
        keys += [k for k in rec if k not in keys]
    keys = [k for k in PREFERRED if k in keys] + [k for k in keys if k not in PREFERRED]
    keys = keys[:14]
    return table(keys, [[general(rec.get(k, "")) for k in keys] for rec in records[:80]])


def serving_section(results: Path, out: Path, given: dict[str, list[Path]]) -> list[str]:
    titles = {"api_load": ("API load (bench/api_load.py)", "python bench/api_load.py"),
              "faults": ("Faults (bench/faults.py)", "python bench/faults.py")}
    lines = ["## Serving", ""]
    for name in SERVING:
        title, command = titles[name]
        lines += [f"### {title}", ""]
        files = find_serving(results, name, given.get(name, []))
        jsons = [f for f in files if f.suffix == ".json"]
        pngs = [f for f in files if f.suffix == ".png"]
        if not jsons:
            lines += [f"_Missing: no {name} JSON under `{results}` (run `{command}` with its results option)._", ""]
        for f in jsons:
            lines += [f"From `{rel(f, out)}`:", ""]
            try:
                lines += render_json(read(f))
            except (OSError, ValueError) as exc:
                lines += [f"_Unreadable: {exc}_", ""]
        if jsons and not pngs:
            lines += [f"_No {name} plot (PNG) found._", ""]
        lines += [f"![{name}: {f.stem}]({rel(f, out)})\n" for f in pngs]
    return lines


# -- the report -------------------------------------------------------------------------------------
def per_signal_section(datasets: list[dict[str, Any]], results: Path) -> list[str]:
    """Issue 3's figures: per signal NDCG, Recall, coverage, fit seconds, peak memory per dataset."""
    rows = []
    for d in datasets:
        for r in d["rows"]:
            if r["group"] == "signal":
                rows.append([d["dataset"], r["method"], r.get("ndcg"), r.get("recall"), r.get("coverage"),
                             secs(r.get("fit_seconds")), mib(r.get("peak_mib"))])
    scale = load_scale(results)
    with_signals = [n for n, stages in scale.items() if any(s.startswith("signal-") for s in stages)]
    if with_signals:
        n = max(with_signals)
        for stage, st in sorted(scale[n].items()):
            if stage.startswith("signal-"):
                m = st.get("metrics", {})
                rows.append([f"synthetic {n:,} (scale, {st.get('refit', 'fit')})", stage.removeprefix("signal-"), m.get("ndcg@10"),
                             m.get("recall@10"), m.get("coverage@10"), secs(st.get("seconds")), mib(st.get("peak_mib"))])
    if not rows:
        return []
    head = ["data", "signal", "NDCG@10", "Recall@10", "coverage@10", "fit s", "peak MiB"]
    return ["## Per signal", "", "Each signal alone, fit on 'train' (quality bench; and the scale bench at the largest "
            "size whose signal stages have run, with its LightGCN epoch budget, where signals are fit side by side, "
            "a fit's seconds overlapping the others', or tuning's model refolded on 'train' ('fold_in'); the peak is "
            "the refit stage's).", "", table(head, rows), ""]


def build(results: Path, out: Path, design: Path, given: dict[str, list[Path]]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    refs = reference_table(design)
    quality, datasets = quality_section(results, out, refs)
    lines = ["# hybridrec bench report", "",
             "Generated by `bench/report.py` from the JSON under "
             f"`{rel(results, out) if results != out else '.'}`; each section names the bench that wrote it. "
             "Wall times were taken on a shared machine: read them with the load average they state.", ""]
    lines += quality + per_signal_section(datasets, results) + scale_section(results, out)
    lines += lightgcn_device_section(results) + als_section(results) + tuner_section(results, out)
    lines += serving_section(results, out, given)
    if not refs:
        lines += [f"_DESIGN.md's reference table was not found at `{design}`._", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the benches wrote their JSON")
    parser.add_argument("--out", type=Path, help="where report.md and its PNGs go (default: --results)")
    parser.add_argument("--design", type=Path, default=DESIGN, help="DESIGN.md, for its reference table")
    parser.add_argument("--api-load", type=Path, nargs="*", default=[], help="api_load JSON/PNG files or folders")
    parser.add_argument("--faults", type=Path, nargs="*", default=[], help="faults JSON/PNG files or folders")
    args = parser.parse_args(argv)
    path = build(args.results, args.out or args.results, args.design, {"api_load": args.api_load, "faults": args.faults})
    print(f"wrote {path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    main()
