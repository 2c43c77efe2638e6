"""The results store: records, provenance, atomic writes under concurrency and SIGKILL, collect, CLI."""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from poseharness import provenance as prov_mod
from poseharness.errors import HarnessError
from poseharness.io import write_json_atomic
from poseharness.provenance import code_version, config_hash, package_versions
from poseharness.store import (RunRecord, collect, comparable_to_paper, iter_record_paths,
                               load_table, metric_columns, read_record, record_path, temp_files,
                               write_record)
from poseharness.store import commands

SHA = "ab" * 32
# Provenance captured once: every record in these tests reuses it, as a long job would.
PROV = {"code": {"commit": "c" * 40, "dirty": False, "describe": "v0-1-gccc"},
        "versions": {"python": "3.11.7", "numpy": "1.26.4"},
        "hardware": {"cpu": "Test CPU", "cores": 2, "gpu": None}}


def make(**overrides) -> RunRecord:
    fields = dict(kind="trained", dataset="synthetic-coco", split="val", method="gog", variant="ours",
                  scale="tiny", seed=0, metrics={"AP": 0.5, "AP (M)": -1.0, "AR": 0.6},
                  config={"lr": 1e-3, "decode": {"upsample": "bicubic"}, "sizes": (3, 4)},
                  dataset_kind="synthetic", timings={"train": 12.5, "eval": 0.25},
                  predictions={"path": "runs/x/preds.json", "sha256": SHA}, prov=PROV)
    fields.update(overrides)
    return RunRecord.new(**fields)


def stamp(seconds: float) -> str:
    base = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    return (base + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------------
# provenance

def test_config_hash_is_sha256_of_sorted_compact_json():
    cfg = {"b": 1, "a": [1, 2], "c": {"y": "é", "x": 0.5}}
    text = '{"a":[1,2],"b":1,"c":{"x":0.5,"y":"é"}}'
    assert config_hash(cfg) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    # Key order and tuple-vs-list do not matter; any value or type change does.
    assert config_hash({"c": {"x": 0.5, "y": "é"}, "a": (1, 2), "b": 1}) == config_hash(cfg)
    assert config_hash({**cfg, "b": 2}) != config_hash(cfg)
    assert config_hash({**cfg, "b": 1.0}) != config_hash(cfg)
    # Integer keys hash as their JSON (string) form, so the hash survives a JSON round trip.
    assert config_hash({10: "a", 2: "b"}) == config_hash(json.loads(json.dumps({10: "a", 2: "b"})))
    with pytest.raises(HarnessError, match="not plain JSON"):
        config_hash({"path": Path("/x")})
    with pytest.raises(HarnessError, match="not plain JSON"):
        config_hash({"lr": float("nan")})


def test_code_version_outside_and_inside_git(tmp_path):
    outside = tmp_path / "plain"
    outside.mkdir()
    assert code_version(outside) == {"commit": "unknown", "dirty": None, "describe": "unknown"}

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    assert code_version(repo)["commit"] == "unknown"          # no commit yet
    (repo / "a.py").write_text("x = 1\n")
    assert code_version(repo)["dirty"] is True                 # untracked source counts
    subprocess.run([*git, "add", "a.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    clean = code_version(repo)
    assert clean["commit"] == head and clean["dirty"] is False and clean["describe"] == head[:7]
    (repo / "a.py").write_text("x = 2\n")
    dirty = code_version(repo)
    assert dirty["commit"] == head and dirty["dirty"] is True and dirty["describe"].endswith("-dirty")


def test_package_versions_report_absent_required_and_skip_absent_optional(monkeypatch):
    monkeypatch.setattr(prov_mod, "REQUIRED_PACKAGES", ("numpy", "no-such-dist-xq"))
    monkeypatch.setattr(prov_mod, "OPTIONAL_PACKAGES", ("pandas", "another-missing-dist-xq"))
    versions = package_versions()
    import numpy
    assert versions["numpy"] == numpy.__version__
    assert versions["no-such-dist-xq"] == "absent"
    assert versions["pandas"] == pd.__version__
    assert "another-missing-dist-xq" not in versions
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))


def test_writing_a_record_stays_free_of_torch_and_pandas(tmp_path):
    script = textwrap.dedent("""
        import sys
        from poseharness.provenance import provenance
        from poseharness.store import RunRecord, write_record, read_record
        p = provenance()
        assert p["hardware"]["gpu"] is None, p   # torch not imported -> never asked
        assert p["hardware"]["cores"] >= 1 and p["versions"]["python"]
        r = RunRecord.new(kind="speed", dataset="coco", split="val", method="gog", variant="ours",
                          scale="paper", seed=1, metrics={"ms_per_image": 12.0}, config={},
                          prov=p)
        assert r.labels["comparable_to_paper"] is True   # kind of 'coco' read from its manifest
        assert read_record(write_record(r, sys.argv[1])) == r
        heavy = [m for m in ("torch", "pandas", "pyarrow") if m in sys.modules]
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# record

@pytest.mark.parametrize("kind, scale, expected", [
    ("real", "paper", True), ("real", "tiny", False), ("synthetic", "paper", False),
    ("synthetic", "tiny", False), ("real", "small", False),
])
def test_comparable_to_paper(kind, scale, expected):
    assert comparable_to_paper(kind, scale) is expected


def test_comparable_to_paper_rejects_unknown_dataset_kind():
    with pytest.raises(HarnessError, match="dataset kind"):
        comparable_to_paper("imagined", "paper")


def test_labels_are_derived():
    assert make().labels == {"dataset_kind": "synthetic", "synthetic": True, "tiny": True,
                             "comparable_to_paper": False}
    real = make(dataset="coco", dataset_kind="real", scale="paper", labels={"note": "flip"})
    assert real.labels == {"note": "flip", "dataset_kind": "real", "synthetic": False, "tiny": False,
                           "comparable_to_paper": True}


def test_round_trip_through_dict_and_json():
    record = make()
    assert record.config["sizes"] == [3, 4]          # stored in its JSON form
    again = RunRecord.from_dict(json.loads(json.dumps(record.to_dict())), source="x.json")
    assert again == record
    assert again.to_dict() == record.to_dict()
    assert again.key == ("trained", "synthetic-coco", "val", "gog", "ours", "tiny", 0, "full")


def _bad(mutate):
    raw = make().to_dict()
    mutate(raw)
    return raw


@pytest.mark.parametrize("field, mutate", [
    ("kind", lambda d: d.update(kind="trainee")),
    ("seed", lambda d: d.update(seed="3")),
    ("seed", lambda d: d.update(seed=True)),
    ("method", lambda d: d.update(method="../escape")),
    ("metrics.AP", lambda d: d["metrics"].update(AP=float("nan"))),
    ("metrics.AP", lambda d: d["metrics"].update(AP=float("inf"))),
    ("metrics.AP", lambda d: d["metrics"].update(AP="0.5")),
    ("metrics.seed", lambda d: d["metrics"].update(seed=1.0)),
    ("metrics", lambda d: d.update(metrics={})),
    ("timings.train", lambda d: d["timings"].update(train=-1.0)),
    ("config_hash", lambda d: d["config"].update(lr=0.1)),
    ("config_hash", lambda d: d.update(config_hash="xyz")),
    ("code.dirty", lambda d: d["code"].update(dirty="yes")),
    ("predictions", lambda d: d.update(predictions=None)),
    ("predictions.sha256", lambda d: d["predictions"].update(sha256="123")),
    ("created", lambda d: d.update(created="2024-05-01T12:00:00")),      # no UTC offset
    ("created", lambda d: d.update(created="yesterday")),
    ("labels.comparable_to_paper", lambda d: d["labels"].update(comparable_to_paper=True)),
    ("labels.dataset_kind", lambda d: d["labels"].update(dataset_kind="fake")),
    ("schema_version", lambda d: d.update(schema_version=2)),
    ("run_id", lambda d: d.update(run_id="r1")),
    ("hardware", lambda d: d.pop("hardware")),
    ("extra", lambda d: d.update(extra=1)),
    ("intervals.AP", lambda d: d.update(intervals={"AP": [0.6, 0.4]})),           # lo > hi
    ("intervals.AP", lambda d: d.update(intervals={"AP": [0.4, float("inf")]})),
    ("intervals.AP", lambda d: d.update(intervals={"AP": [0.4]})),
    ("intervals.AP50", lambda d: d.update(intervals={"AP50": [0.4, 0.6]})),        # no such metric
    ("intervals", lambda d: d.update(intervals=[0.4, 0.6])),
    ("matches", lambda d: d.update(matches="")),
    ("metrics.AP_lo", lambda d: d["metrics"].update(AP_lo=0.4)),                 # the name of a column
])
def test_validation_names_file_and_field(field, mutate):
    with pytest.raises(HarnessError) as info:
        RunRecord.from_dict(_bad(mutate), source=Path("store/some-record.json"))
    message = str(info.value)
    assert "some-record.json" in message
    assert f"[field {field}]" in message


def test_intervals_and_matches_round_trip_and_old_records_without_them_load():
    record = make(intervals={"AP": (0.4, 0.6), "AR": [0.5, 0.7]}, matches="runs/x/preds.matches.npz")
    assert record.intervals == {"AP": [0.4, 0.6], "AR": [0.5, 0.7]}
    assert RunRecord.from_dict(json.loads(json.dumps(record.to_dict())), source="x.json") == record
    old = make().to_dict()
    assert old["intervals"] is None and old["matches"] is None
    del old["intervals"], old["matches"]                         # written before these fields existed
    again = RunRecord.from_dict(old, source="old.json")
    assert again.intervals is None and again.matches is None


def test_minus_one_metric_and_speed_without_predictions_are_valid():
    assert make(metrics={"AP (M)": -1, "AP": 0.0}).metrics == {"AP (M)": -1.0, "AP": 0.0}
    speed = make(kind="speed", predictions=None, metrics={"ms_per_image": 3.5})
    assert speed.predictions is None


def test_validation_runs_on_write(tmp_path):
    record = make()
    record.metrics["AP"] = float("nan")
    with pytest.raises(HarnessError, match=r"\[field metrics.AP\]"):
        write_record(record, tmp_path)
    assert list(iter_record_paths(tmp_path)) == []


# ---------------------------------------------------------------------------------------------
# store

def test_record_path_layout_and_write_read(tmp_path):
    record = make(created=stamp(1.5), seed=7)
    path = record_path(tmp_path, record)
    assert path == (tmp_path / "records/trained/synthetic-coco/val/gog/ours/tiny-seed7"
                    / f"20240501T120001.500000Z-{record.run_id}.json")
    assert write_record(record, tmp_path) == path
    assert read_record(path) == record
    assert list(iter_record_paths(tmp_path)) == [path]
    assert [p.name for p in path.parent.iterdir()] == [path.name]   # no temp file left behind


def test_default_root_is_results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "store"))
    path = write_record(make())
    assert path.is_relative_to(tmp_path / "store" / "records")
    assert collect().rows == 1
    assert (tmp_path / "store" / "results.parquet").is_file()


# ---------------------------------------------------------------------------------------------
# reliability with real processes

WRITER = textwrap.dedent("""
    import os, sys, time
    from datetime import datetime, timedelta, timezone
    from poseharness.store import RunRecord, write_record
    root, w, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    prov = {"code": {"commit": "f" * 40, "dirty": False, "describe": "x"},
            "versions": {"python": "3"}, "hardware": {"cpu": "c", "cores": 1}}
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    records = []
    for i in range(50):
        if i < 25:   # a key of its own
            method, seed, created = f"w{w}", i, None
        else:        # a key shared by all 16 writers; its creation time is a permutation of w
            j = i - 25
            method, seed = "shared", j
            created = (base + timedelta(seconds=(7 * w + 3 * j) % 16)).isoformat(timespec="microseconds")
        records.append(RunRecord.new(
            kind="oracle", dataset="synthetic-crowdpose", split="val", method=method, variant="v",
            scale="tiny", seed=seed, metrics={"AP": i / 100, "writer": float(w)},
            config={"w": w, "i": i}, dataset_kind="synthetic", prov=prov, created=created,
            predictions={"path": f"p{w}-{i}.json", "sha256": "0" * 64}))
    while not os.path.exists(go):   # start writing together
        time.sleep(0.002)
    for r in records:
        write_record(r, root)
""")


def test_sixteen_processes_writing_at_once(tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(go)])
             for w in range(16)]
    time.sleep(0.3)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * 16

    report = collect(tmp_path)
    assert (report.found, report.good, len(report.bad)) == (800, 800, 0)
    assert report.temp_files == []                     # nothing torn or half-renamed
    assert len(report.superseded) == 25 * 15           # 16 records per shared key, one wins
    assert report.rows == 16 * 25 + 25
    assert all(p.is_file() for p in report.superseded)  # older records stay on disk

    table = load_table(tmp_path)
    own = table[table["method"] != "shared"]
    assert sorted(zip(own["method"], own["seed"])) == sorted((f"w{w}", i) for w in range(16)
                                                             for i in range(25))
    assert (own["records_for_key"] == 1).all()
    shared = table[table["method"] == "shared"].set_index("seed")
    for j in range(25):
        winner = (7 * (15 - 3 * j)) % 16   # the w with (7w + 3j) % 16 == 15: the latest stamp
        assert shared.loc[j, "writer"] == winner
        assert shared.loc[j, "AP"] == pytest.approx((25 + j) / 100)
        assert shared.loc[j, "records_for_key"] == 16


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from poseharness.store import RunRecord, write_record
    root, mode = sys.argv[1], sys.argv[2]
    prov = {"code": {"commit": "f" * 40, "dirty": True, "describe": "x"},
            "versions": {"python": "3"}, "hardware": {"cpu": "c", "cores": 1}}
    blob = "x" * 2_000_000   # ~2 MB per record, so a kill can land inside a write
    def record(i):
        return RunRecord.new(kind="trained", dataset="synthetic-coco", split="val", method="m",
                             variant="v", scale="tiny", seed=i, metrics={"AP": 0.1},
                             config={"blob": blob, "i": i}, dataset_kind="synthetic", prov=prov,
                             predictions={"path": "p.json", "sha256": "0" * 64})
    if mode == "self":
        # Deterministic: two complete records, then die inside write_record after the bytes of the
        # third are written and fsynced but before the rename that would publish them.
        write_record(record(0), root)
        write_record(record(1), root)
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        write_record(record(2), root)
        sys.exit("write_record returned without ever renaming: it is not atomic")
    i = 0
    while True:
        write_record(record(i), root)
        i += 1
""")


def test_sigkill_mid_write_leaves_only_complete_records(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), "self"], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert len(list(iter_record_paths(tmp_path))) == 2
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".")
    assert json.loads(leftovers[0].read_text())["seed"] == 2   # whole, yet never taken for a record

    rng = random.Random(0)
    for _ in range(3):   # a loop of writes killed from outside at a random moment
        before = len(list(iter_record_paths(tmp_path)))
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), "loop"])
        deadline = time.monotonic() + 60
        while len(list(iter_record_paths(tmp_path))) <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    paths = list(iter_record_paths(tmp_path))
    for path in paths:
        assert read_record(path).config["blob"] == "x" * 2_000_000   # every file is whole
    report = collect(tmp_path)
    assert report.found == len(paths) >= 5 and report.good == report.found and report.bad == []
    assert leftovers[0] in report.temp_files
    assert "temporary files" in report.format()


def test_collect_reports_corrupt_records_and_keeps_every_good_one(tmp_path):
    good = [write_record(make(seed=s, variant=v), tmp_path) for s in range(2) for v in ("a", "b")]

    truncated_record = make(seed=5)
    truncated = record_path(tmp_path, truncated_record)
    full = json.dumps(truncated_record.to_dict())
    truncated.parent.mkdir(parents=True)
    truncated.write_text(full[: len(full) // 3])

    def write_raw(raw: dict) -> Path:
        path = record_path(tmp_path, RunRecord(**raw))
        write_json_atomic(path, raw)
        return path

    wrong_type = make(seed=6).to_dict()
    wrong_type["metrics"]["AP"] = "high"
    wrong_type_path = write_raw(wrong_type)
    bad_hash = make(seed=7).to_dict()
    bad_hash["config"]["lr"] = 0.5
    bad_hash_path = write_raw(bad_hash)
    misfiled = tmp_path / "records/trained/synthetic-coco/val/gog/ours/tiny-seed9" / good[0].name
    misfiled.parent.mkdir(parents=True)
    misfiled.write_bytes(good[0].read_bytes())

    report = collect(tmp_path)
    assert (report.found, report.good, report.rows) == (8, 4, 4)
    reasons = dict(report.bad)
    assert set(reasons) == {truncated, wrong_type_path, bad_hash_path, misfiled}
    assert "not valid JSON" in reasons[truncated]
    assert "[field metrics.AP]" in reasons[wrong_type_path]
    assert "[field config_hash]" in reasons[bad_hash_path]
    assert "wrong place" in reasons[misfiled]
    text = report.format()
    assert "4 BAD RECORD FILE(S)" in text and str(wrong_type_path) in text

    table = load_table(tmp_path)
    assert sorted(zip(table["variant"], table["seed"])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert sorted(table["record"]) == sorted(str(p.relative_to(tmp_path)) for p in good)


def test_newest_wins_and_older_file_remains(tmp_path):
    old = write_record(make(created=stamp(0), metrics={"AP": 0.1}), tmp_path)
    new = write_record(make(created=stamp(60), metrics={"AP": 0.3}), tmp_path)
    older_written_later = write_record(make(created=stamp(30), metrics={"AP": 0.2}), tmp_path)
    tie_a = make(created=stamp(90), metrics={"AP": 0.4}, variant="tie")
    tie_b = make(created=stamp(90), metrics={"AP": 0.5}, variant="tie")
    paths = {r.run_id: write_record(r, tmp_path) for r in (tie_a, tie_b)}
    tie_winner = max((tie_a, tie_b), key=lambda r: paths[r.run_id].name)

    report = collect(tmp_path)
    assert report.rows == 2 and len(report.superseded) == 3
    assert set(report.superseded) == {old, older_written_later, paths[
        (tie_b if tie_winner is tie_a else tie_a).run_id]}
    assert old.is_file() and older_written_later.is_file()
    table = load_table(tmp_path).set_index("variant")
    assert table.loc["ours", "AP"] == pytest.approx(0.3)
    assert table.loc["ours", "record"] == str(new.relative_to(tmp_path))
    assert table.loc["ours", "records_for_key"] == 3
    assert table.loc["tie", "AP"] == pytest.approx(tie_winner.metrics["AP"])


def test_parquet_and_csv_hold_the_same_rows(tmp_path):
    write_record(make(metrics={"AP": 0.25, "AP .5": 0.5}, timings={"eval": 2.0}), tmp_path)
    write_record(make(kind="speed", predictions=None, metrics={"ms_per_image": 7.5}), tmp_path)
    write_record(make(kind="oracle", dataset="coco", dataset_kind="real", scale="paper",
                      prov={**PROV, "code": {"commit": "unknown", "dirty": None}}), tmp_path)
    report = collect(tmp_path)
    parquet = pd.read_parquet(report.parquet)
    csv = pd.read_csv(report.csv)
    assert list(parquet.columns) == list(csv.columns)
    assert list(parquet.columns[:10]) == ["kind", "dataset", "split", "method", "variant", "scale",
                                          "seed", "AP", "AP (M)", "AR"]
    assert "AP .5" in parquet.columns and "time/eval" in parquet.columns
    assert len(parquet) == len(csv) == 3
    for column in ["kind", "dataset", "method", "variant", "scale", "commit", "config_hash", "created"]:
        assert parquet[column].astype(str).tolist() == csv[column].astype(str).tolist()
    for column in ["seed", "AP", "AP .5", "AP (M)", "ms_per_image", "time/eval"]:
        a, b = parquet[column].astype(float).tolist(), csv[column].astype(float).tolist()
        assert all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)), column
    assert parquet["comparable_to_paper"].tolist() == csv["comparable_to_paper"].tolist() \
        == [True, False, False]
    # dirty is a nullable boolean: null where the code state was unknown (outside git).
    assert parquet["dirty"].isna().tolist() == [True, False, False]
    assert parquet["dirty"].dtype == "boolean" and not parquet["dirty"].iloc[1]
    assert parquet.loc[1, "ms_per_image"] == 7.5 and math.isnan(parquet.loc[0, "ms_per_image"])


def test_collect_adds_interval_and_matches_columns(tmp_path):
    write_record(make(intervals={"AP": [0.4, 0.6]}, matches="p/x.matches.npz"), tmp_path)
    write_record(make(method="old"), tmp_path)                    # no intervals
    table = load_table(collect(tmp_path).root).set_index("method")
    assert list(table.columns[6:12]) == ["AP", "AP (M)", "AR", "AP_lo", "AP_hi", "AP (M)_lo"]
    assert (table.loc["gog", "AP_lo"], table.loc["gog", "AP_hi"]) == (0.4, 0.6)
    assert math.isnan(table.loc["gog", "AR_lo"]) and math.isnan(table.loc["old", "AP_lo"])
    assert table.loc["gog", "matches"] == "p/x.matches.npz" and pd.isna(table.loc["old", "matches"])
    assert metric_columns(table) == ["AP", "AP (M)", "AR"]
    csv = pd.read_csv(tmp_path / "results.csv")
    assert list(csv.columns) == list(load_table(tmp_path).columns) and csv["AP_hi"].tolist()[0] == 0.6


def test_collect_of_an_empty_store_writes_an_empty_table(tmp_path):
    report = collect(tmp_path)
    assert (report.found, report.rows) == (0, 0)
    assert list(load_table(tmp_path).columns[:7]) == ["kind", "dataset", "split", "method",
                                                       "variant", "scale", "seed"]


# ---------------------------------------------------------------------------------------------
# command line

def run_cli(argv):
    parser = argparse.ArgumentParser(prog="poseharness")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_collect_and_show(tmp_path, capsys):
    with pytest.raises(HarnessError, match="results collect"):
        run_cli(["results", "show", "--root", str(tmp_path)])
    write_record(make(metrics={"AP": 0.123456, "AR": 0.5}), tmp_path)
    write_record(make(method="kcam", metrics={"AP": 0.75, "AR": 0.8}), tmp_path)
    bad = write_json_atomic(tmp_path / "records" / "stray.json", {"kind": "trained"})

    assert run_cli(["results", "collect", "--root", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "good:               2" in out and str(bad) in out and "BAD RECORD" in out
    assert "1 bad record" in err

    assert run_cli(["results", "show", "--root", str(tmp_path), "--method", "kcam",
                    "--metrics", "AP"]) == 0
    out, _ = capsys.readouterr()
    header, row = out.splitlines()[:2]
    assert header.split()[:9] == ["kind", "dataset", "split", "method", "variant", "scale", "seed",
                                  "AP", "vs_paper"]
    assert "kcam" in row and "0.7500" in row and "gog" not in out and "AR" not in header
    assert "not comparable to published numbers" in out

    assert run_cli(["results", "show", "--root", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert "0.1235" in out and "AR" in out.splitlines()[0]
    with pytest.raises(HarnessError, match="unknown metric"):
        run_cli(["results", "show", "--root", str(tmp_path), "--metrics", "AP,APX"])
