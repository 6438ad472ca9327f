"""Every benchmark of issue 7 in one run, written to docs/benchmarks.md and bench/results.json.

    bench/run [--quick] [--messages N] [--runs R] [--seed S] [--no-postgres] [--out DIR]

Default: a 20,000-message corpus, 3 runs of each timed step (median and spread), the search and page
benchmarks at ten times the corpus (200,000), 10,000 notifications. --quick: 2,000 messages (20,000 for
search), 2,000 notifications. Absolute figures drift on shared machines; the ratios are measured in the same
run on the same data."""
import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import common
from common import BENCH, ROOT, Urls, say, versions

NOTES = BENCH / "notes.md"
ORDER = ["B1", "B1p", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9"]


def _earlier(args) -> list:
    """The rows of the results file being added to (--merge), as Results."""
    from common import Result

    path = Path(args.out) / "bench" / "results.json"
    if not path.exists():
        return []
    fields = set(Result.__dataclass_fields__)
    return [Result(**{k: v for k, v in row.items() if k in fields}) for row in json.loads(path.read_text())]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 messages: about 10 minutes")
    parser.add_argument("--messages", type=int, help="corpus size (default 20,000; 2,000 with --quick)")
    parser.add_argument("--search-messages", type=int, help="archive size for B4/B5/B8 (default 10 × --messages)")
    parser.add_argument("--watchers", type=int, help="notifications for B6 (default 10,000; 2,000 with --quick)")
    parser.add_argument("--large-messages", type=int,
                        help="B8's large archive, bulk-loaded and kept between runs (default 1,000,000; 50,000 with "
                             "--quick)")
    parser.add_argument("--large-small", type=int, default=1000, help="messages in each of B8's nine small spaces")
    parser.add_argument("--large-postgres-only", action="store_true",
                        help="B8's large archive on PostgreSQL only (both need ~50 GB of disk at a million)")
    parser.add_argument("--scale", help="B9's ACCOUNTS,MESSAGES,MAILS (default 40,1000,20000; 8,200,2000 with --quick)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each timed step (at least 3 for the docs)")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions of each query and page")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--big-mb", type=int, default=50, help="size of B7's single large message")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--no-postgres", action="store_true", help="skip B8 even when PostgreSQL answers")
    parser.add_argument("--only", help="comma-separated parts: fetch,import,search,large,notify,scale")
    parser.add_argument("--out", default=str(ROOT), help="where docs/benchmarks.md and bench/results.json go")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (databases, Maildirs)")
    parser.add_argument("--merge", action="store_true", help="keep the other rows of the results file (with --only)")
    args = parser.parse_args(argv)
    args.command = " ".join(["bench/run", *(sys.argv[1:] if argv is None else argv)])
    args.messages = args.messages or (2_000 if args.quick else 20_000)
    args.search_messages = args.search_messages or 10 * args.messages
    args.watchers = args.watchers or (2_000 if args.quick else 10_000)
    args.large_messages = args.large_messages or (50_000 if args.quick else 1_000_000)
    return args


def _tidy() -> None:
    """A finished part's databases and Maildirs go at once (a full run had kept 23 GB of them beside the two
    million-message archives, and the disk filled in B9); the cached archives live elsewhere."""
    for path in common.WORKDIR.iterdir():
        if path.name.endswith((".db", ".db-wal", ".db-shm")) or "maildir" in path.name \
                or path.name.startswith(("mbsync-user", "fetchmail-user")):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    import corpus
    import fetch_bench
    import import_bench
    import notify_bench
    import scale_bench
    import search_bench

    parts = set((args.only or "fetch,import,search,large,notify,scale").split(","))
    urls = Urls(postgres=not args.no_postgres)
    started = time.monotonic()
    say(f"corpus: {args.messages:,} messages, seed {args.seed} (work directory {common.WORKDIR})")
    raws = list(corpus.generate(args.messages, args.seed)) if parts & {"fetch", "import"} else []
    results = _earlier(args) if args.merge else []

    def done(new):  # written after each part, so a failure later keeps what was measured
        nonlocal results
        ids = {r.id for r in new}
        results = [r for r in results if r.id not in ids] + new
        results.sort(key=lambda r: ORDER.index(r.id.split()[0]) if r.id.split()[0] in ORDER else len(ORDER))
        write(results, args, (time.monotonic() - started) / 60)
        if not args.keep:
            _tidy()

    if "fetch" in parts:
        done(fetch_bench.run(raws, args.runs, urls, big_mb=args.big_mb))
    if "import" in parts:
        done(import_bench.run(raws, args.runs, urls))
    del raws
    if "search" in parts:
        done(search_bench.run(args.search_messages, args.seed, args.reps, urls, args.wrk_seconds, args.runs))
    if "large" in parts:
        done(search_bench.large(args.large_messages, args.seed, args.reps, urls, args.large_small,
                                sqlite=not args.large_postgres_only))
    if "notify" in parts:
        done(notify_bench.run(args.watchers, args.runs))
    if "scale" in parts and not args.no_postgres:
        accounts, per_account, mails = (int(v) for v in (args.scale or ("8,200,2000" if args.quick else
                                                                         "40,1000,20000")).split(","))
        done(scale_bench.run(urls, accounts=accounts, per_account=per_account, mails=mails))
    if not args.keep:
        shutil.rmtree(common.WORKDIR, ignore_errors=True)
    for r in results:
        verdict = "-" if r.met is None else ("met" if r.met else "MISSED")
        ratio = f"ratio {r.ratio:.2f}" if r.ratio is not None else ""
        print(f"{r.id:11} {r.figure:12,.2f} {r.unit:20} {ratio:12} {r.goal:34} {verdict}")
    return 0


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def write(results, args, minutes: float) -> None:
    out = Path(args.out)
    (out / "bench").mkdir(parents=True, exist_ok=True)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    info = versions()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = args.command
    (out / "bench" / "results.json").write_text(json.dumps([r.as_json() for r in results], indent=1,
                                                           ensure_ascii=False) + "\n")
    lines = [
        "# Benchmarks", "",
        f"Written by `{command}` on {when} ({minutes:.0f} minutes). Corpus: {args.messages:,} messages from "
        f"`bench/corpus.py {args.messages} {args.seed}`; search and pages at {args.search_messages:,} messages (B4, "
        f"B5) and {args.large_messages:,} (B8, bulk-loaded, SQLite and PostgreSQL); "
        f"{args.watchers:,} notifications; each timed step run {args.runs} times (figure = median, spread = "
        f"lowest-highest of the runs; for B4 and B5, of the queries' or pages' medians, {args.reps} timed "
        "repetitions each). The same figures, machine-readable: `bench/results.json`.", "",
        "| | |", "|---|---|",
        *[f"| {name} | {value} |" for name, value in info.items()], "",
        "Ratios are oriented so that above 1 means Spacemail is faster (for times: the reference's time over "
        "ours).", "",
        "| id | work | Spacemail | spread | compared with | their figure | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        work = r.work + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.id} | {work} | {_fmt(r.figure)} {r.unit} | {r.spread} | {r.reference or '-'} | "
                     f"{_fmt(r.reference_figure)} | {ratio} | {r.goal} | {met} |")
    notes = NOTES.read_text() if NOTES.exists() else ""
    (out / "docs" / "benchmarks.md").write_text("\n".join(lines) + "\n\n" + notes)
    say(f"wrote {out / 'docs' / 'benchmarks.md'} and {out / 'bench' / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
