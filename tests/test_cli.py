"""The command line: --help everywhere, one-line errors with a non-zero exit, a real ingest + evaluate."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pytest

from cluster.cli import build_parser, main
from tests.test_bundle import make_fusion, publish_tiny

REPO = Path(__file__).resolve().parents[1]


def _commands(parser, prefix=()):
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield (*prefix, name)
            yield from _commands(sub, (*prefix, name))


@pytest.mark.parametrize("command", list(_commands(build_parser())), ids=" ".join)
def test_every_command_has_help(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: hybridrec" in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "hybridrec"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "data" in out.stdout


def test_bad_input_exits_nonzero_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "ingest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hybridrec data: error: {tmp_path / 'missing.csv'}: no such file or folder"]
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err


def test_download_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "ml-nope"]) == 2
    assert "ml-nope" in capsys.readouterr().err


def test_ingest_csv_with_mapping_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["uid,sku,stars,ts"]
    for u in range(1, 21):
        for t, i in enumerate(range(u % 5, u % 5 + 8)):
            lines.append(f"u{u},p{i},{(i % 5) + 1},{1000 + t}")
    lines.append("u1,p1,,1")  # a row with no value: counted, not fatal
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n")
    code = main([
        "data", "ingest", str(tmp_path / "events.csv"), "--format", "table", "--user-col", "uid",
        "--item-col", "sku", "--value-col", "stars", "--timestamp-col", "ts", "--out", str(tmp_path / "ds"),
    ])
    assert code == 0, capsys.readouterr().err
    assert "rejected 1 rows" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "ds")]) == 0
    table = capsys.readouterr().out
    assert "popularity" in table and "ndcg@10" in table


def test_bundle_commands_on_a_url_root(tiny_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where `bundle show` copies a URL bundle
    root = f"memory://hybridrec-cli-{uuid.uuid4().hex[:8]}/bundles"
    fusion = make_fusion(tiny_dataset)
    try:
        for version in ("v1", "v2"):
            publish_tiny(root, tiny_dataset, fusion, version=version)
        assert main(["bundle", "list", "--bundle-root", root]) == 0
        rows = capsys.readouterr().out.splitlines()[1:]
        assert [(r.split()[0], r.rstrip().endswith("*")) for r in rows] == [("v1", False), ("v2", True)]
        assert main(["bundle", "rollback", "--bundle-root", root, "v1"]) == 0
        assert capsys.readouterr().out.strip() == "latest -> v1"
        assert main(["bundle", "show", "--bundle-root", root]) == 0
        assert json.loads(capsys.readouterr().out)["version"] == "v1"
        assert (tmp_path / "cache" / "hybridrec" / "bundles").is_dir()
    finally:
        fs, path = fsspec.core.url_to_fs(root)
        fs.rm(path.rsplit("/", 1)[0], recursive=True)

    assert main(["bundle", "show", "--bundle-root", root]) == 2
    assert capsys.readouterr().err.strip() == f"hybridrec bundle: error: no bundle published under {root}"
    assert main(["bundle", "list", "--bundle-root", "nope://bundles"]) == 2
    assert "'nope://bundles': Protocol not known" in capsys.readouterr().err


def test_tune_refits_by_fold_in_when_asked(tiny_dataset, client, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`hybridrec tune --refit fold_in`: the run keeps tuning's svd with its users folded in from
    'train' (popularity, a count, is fit again) and says so in run.json; a mode it does not know
    is a usage error."""
    from cluster.jobs import RUN_FILE

    run = tmp_path / "run"
    code = main(["tune", str(tiny_dataset.path), "--run", str(run), "--signals", "lightgcn,popularity,svd",
                 "--generations", "2", "--refit", "fold_in", "--scheduler", client.scheduler.address])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((run / RUN_FILE).read_text())
    assert summary["refit"] == {"lightgcn": "fold_in", "popularity": "fit", "svd": "fold_in"}
    assert json.loads((run / "signals" / "svd" / "model.json").read_text())["data"]["split"] == "train"
    # the refolded LightGCN is tuning's: its params are those a refit would have run (the validated epochs)
    best = json.loads((run / "signals" / "lightgcn" / "model.json").read_text())["state"]["best_epoch"]
    assert best is not None and summary["params"]["lightgcn"]["epochs"] == best
    assert main(["index", str(run), "--bundle-root", str(tmp_path / "bundles")]) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "bundles" / "latest" / "manifest.json").read_text())
    assert manifest["params"]["refit"] == summary["refit"]
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", str(tiny_dataset.path), "--run", str(run), "--refit", "sometimes"])
    assert exit_info.value.code == 2 and "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_evaluate_reads_what_train_saved(tiny_dataset, client, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from cluster.jobs import train_job

    train_job(tiny_dataset.path, tmp_path / "signals", ["popularity", "als"], client=client, progress=False)
    assert main(["evaluate", str(tiny_dataset.path), "--signals-dir", str(tmp_path / "signals"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows) == {"popularity", "popularity (trained)", "als (trained)"}
    assert rows["popularity (trained)"] == rows["popularity"]  # the same fit on the same split, saved and loaded
    assert 0 < rows["als (trained)"]["ndcg@10"] <= 1

    train_job(tiny_dataset.path, tmp_path / "fit", ["popularity"], split="fit", client=client, progress=False)
    assert main(["evaluate", str(tiny_dataset.path), "--signals-dir", str(tmp_path / "fit")]) == 2
    assert "was fit on the 'fit' split" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_dataset.path), "--signals-dir", str(tmp_path)]) == 2
    assert "holds no saved signal" in capsys.readouterr().err
    (tmp_path / "torn" / "als").mkdir(parents=True)
    (tmp_path / "torn" / "als" / "model.json").write_text("{")
    assert main(["evaluate", str(tiny_dataset.path), "--signals-dir", str(tmp_path / "torn")]) == 2
    assert f"{tmp_path / 'torn' / 'als'} is not a signal" in capsys.readouterr().err
