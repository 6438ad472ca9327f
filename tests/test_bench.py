"""bench/run's code cannot rot: the whole benchmark at a tiny size, with every tool it compares against."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

IDS = {"B1", "B1p", "B2", "B3", "B4 newest", "B4 ranked", "B4 rare", "B4 mid", "B5 first", "B5 deep", "B5 thread",
       "B5 message", "B5 first (warm)", "B5 HTTP", "B6", "B6 save", "B7", "B7 big", "B8 fetch", "B8 newest (SQLite)",
       "B8 ranked (SQLite)", "B8 first (SQLite)", "B8 thread (SQLite)"}
POSTGRES_IDS = {"B8 newest", "B8 ranked", "B8 first", "B8 deep", "B8 thread", "B8 message", "B9 fetch", "B9 send"}


@pytest.mark.bench
@pytest.mark.timeout(600)
def test_quick_benchmark_at_a_tiny_size_writes_every_row(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/suite.py", "--quick", "--messages", "40", "--search-messages", "400", "--watchers",
         "40", "--runs", "1", "--reps", "2", "--big-mb", "4", "--wrk-seconds", "1", "--large-messages", "300",
         "--large-small", "10", "--scale", "2,20,40", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    by_id = {r["id"]: r for r in results}
    assert IDS <= set(by_id)
    if "B8 fetch" in by_id and by_id["B8 fetch"]["reference_figure"]:  # PostgreSQL answered: its rows too
        assert POSTGRES_IDS <= set(by_id)
        assert by_id["B8 newest"]["reference"] == "Spacemail on SQLite" and by_id["B8 newest"]["ratio"] > 0
    for r in results:
        assert r["figure"] > 0 and r["unit"] and r["goal"]
        assert set(r) >= {"id", "figure", "unit", "reference_figure", "ratio", "goal", "met"}
    for rid in ("B1", "B1p", "B3", "B6"):  # measured against a reference tool in the same run
        assert by_id[rid]["reference_figure"] > 0 and by_id[rid]["ratio"] > 0
    doc = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "mbsync" in doc and "notmuch" in doc and "fetchmail" in doc
    assert all(f"| {rid} |" in doc for rid in IDS)


@pytest.mark.bench  # it checks PostgreSQL itself, on a database of a fixed name: once, not again in the PG run
@pytest.mark.timeout(300)
def test_bulk_loader_writes_the_archive_the_import_would(tmp_path):
    """B5 and B8 read million-message archives made by bench/bulk.py, not by the import: on the same corpus
    (one large space, nine small ones) both must give the same threads (members, parents, counts, subjects,
    last dates) and the same search results, on SQLite and, where it answers, PostgreSQL."""
    out = subprocess.run([sys.executable, "bench/bulk.py", "--check", "1500", "40"], cwd=ROOT, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                         "SPACEMAIL_BENCH_DIR": str(tmp_path)}, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    summaries = json.loads(out.stdout)
    imported = summaries.pop("import")
    assert {"BENCH", *(f"SMALL{i}" for i in range(1, 10))} <= set(imported) and imported["BENCH"]["messages"] == 1500
    assert sum(len(t[3]) > 1 for t in imported["BENCH"]["threads"]) > 50  # replies threaded, not all alone
    assert imported["BENCH"]["search"]["kalo"] and imported["SMALL1"]["search"]["kal*"]
    for engine, summary in summaries.items():
        for space, expected in imported.items():
            assert summary[space] == expected, (engine, space)
