"""B4, B5 and B8's search: one large archive (ten times the corpus size; 200,000 by default), searched and read.

B4 times the archive's search (SQLite FTS5) in-process, newest 50 and top 20 by rank, each with its snippet,
against notmuch listing the newest 50 of the same query on a Maildir of the same messages (in-process too,
through Debian's python3-notmuch2). B5 times the Mail tab's pages in-process through Flask's test client, then
the first page over HTTP: gunicorn with 2 workers, measured by wrk. B8 builds the same archive on PostgreSQL
and times the same searches."""
import http.cookiejar
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from common import (
    PASSWORD, ROOT, WORKDIR, Result, free_port, make_app, median, p95, say, space_id, wait_for_port,
)

import corpus
from import_bench import notmuch_new


TIDY = {"steps": 0, "seconds": 0.0}  # the search index's merge after the build (search.tidy_index)
RARE = {"word": "project0"}  # the rarest codename of the archive built last (see build)
_CODENAME = re.compile(rb"Codename (project\d+)")


def queries() -> dict[str, tuple[str, str]]:
    """name -> (Spacemail's query, notmuch's query) for rare, mid and common words, AND, a phrase, a prefix."""
    vocab = corpus.vocabulary(random.Random(7))  # generate() draws the vocabulary first from its own Random
    common, second, mid, rare = vocab[0], vocab[1], vocab[4000], RARE["word"]
    return {
        "rare word": (rare, rare),
        "mid word": (mid, mid),
        "common word": (common, common),
        "two words (AND)": (f"{mid} {common}", f"{mid} and {common}"),
        "phrase": (f'"{common} {second}"', f'"{common} {second}"'),
        "prefix": (f"{mid[:4]}*", f"{mid[:4]}*"),
    }


def build(url: str, n: int, seed: int, maildir=None):
    """An archive of n corpus messages at `url` (and the same messages as Maildir files); (app, messages/s)."""
    from webapp.archive import ingest, search
    from webapp.extensions import db

    app = make_app(url)
    if maildir is not None:
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
    with app.app_context():
        sid = space_id(app)
        started = time.perf_counter()
        batch, done, codenames = [], 0, {}
        for raw in (corpus.generate(n, seed) if maildir is None or not any((maildir / "cur").iterdir())
                    else (p.read_bytes() for p in sorted((maildir / "cur").iterdir(), key=_number))):
            batch.append(raw)
            for code in _CODENAME.findall(raw):
                codenames[code] = codenames.get(code, 0) + 1
            if maildir is not None and not (maildir / "cur" / f"{done + len(batch)}.bench:2,S").exists():
                (maildir / "cur" / f"{done + len(batch)}.bench:2,S").write_bytes(raw)
            if len(batch) == 1000:
                ingest.store_batch(sid, None, batch)
                db.session.commit()
                done += len(batch)
                batch = []
                if done % 20000 == 0:
                    say(f"  {done:,} of {n:,} stored")
        if batch:
            ingest.store_batch(sid, None, batch)
            db.session.commit()
        rate = n / (time.perf_counter() - started)
        started = time.perf_counter()
        steps = search.tidy_index(budget=3600)  # as the hourly job (workers/cron.py) does within the hour
        TIDY.update(steps=steps, seconds=time.perf_counter() - started)
        if codenames:
            RARE["word"] = min(codenames, key=lambda code: (codenames[code], code)).decode()
        db.session.execute(db.text("ANALYZE"))
        db.session.commit()
    return app, rate


def _number(path) -> int:
    return int(path.name.split(".", 1)[0])


def time_searches(app, reps: int) -> dict[str, dict[str, list[float]]]:
    from webapp.archive import search

    sid = space_id(app)
    samples = {}
    with app.app_context():
        for name, (query, _) in queries().items():
            samples[name] = {}
            for order, limit in (("newest", 50), ("relevance", 20)):
                times = []
                for rep in range(reps + 1):
                    started = time.perf_counter()
                    hits = search.search(sid, query, order=order, limit=limit)
                    if rep:
                        times.append((time.perf_counter() - started) * 1000)
                if not hits:
                    raise RuntimeError(f"the {name} query {query!r} found nothing")
                samples[name][order] = times
    return samples


def time_notmuch(maildir, reps: int) -> dict[str, list[float]]:
    spec = WORKDIR / "notmuch-queries.json"
    spec.write_text(json.dumps({name: q for name, (_, q) in queries().items()}))
    out = subprocess.run(["/usr/bin/python3", str(ROOT / "bench" / "notmuch_query.py"), str(maildir), str(reps),
                          str(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"notmuch queries failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def search_results(ours, theirs, n: int, prefix: str = "B4") -> list[Result]:
    newest = [t for q in ours.values() for t in q["newest"]]
    ranked = [t for q in ours.values() for t in q["relevance"]]
    where = f"at {n:,} messages"
    results = [
        Result(f"{prefix} newest", f"search {where}, newest 50 with snippets, p95 over all six queries",
               p95(newest), "ms", [median(q["newest"]) for q in ours.values()], goal="p95 ≤ 30 ms",
               met=p95(newest) <= 30),
        Result(f"{prefix} ranked", f"search {where}, top 20 by rank with snippets, p95 over all six queries",
               p95(ranked), "ms", [median(q["relevance"]) for q in ours.values()], goal="p95 ≤ 100 ms",
               met=p95(ranked) <= 100),
    ]
    if theirs is None:
        return results
    for name in ("rare word", "mid word"):
        ms, their_ms = median(ours[name]["newest"]), median(theirs[name])
        results.append(Result(
            f"{prefix} {name.split()[0]}", f"search {where}, {name}, newest 50: median", ms, "ms",
            ours[name]["newest"], "notmuch, newest 50 of the same query (in-process)", their_ms, theirs[name],
            their_ms / ms, "no slower than notmuch (ratio ≥ 1)", their_ms / ms >= 1))
    return results


def time_pages(app, reps: int) -> dict[str, list[float]]:
    """The Mail tab's pages in-process, signed in as the space's admin. The Mail tab's lists are timed cold (the
    process's rendered lists dropped before each request, as after new mail) and warm (the same list asked again)."""
    from sqlalchemy import func, select

    from webapp.archive import read_routes
    from webapp.archive.models import Message, Thread
    from webapp.archive.reading import encode_cursor
    from webapp.extensions import db

    sid = space_id(app)
    with app.app_context():
        count = db.session.scalar(select(func.count(Message.id)).where(Message.space_id == sid))
        thread_id = db.session.scalar(select(Thread.id).where(Thread.space_id == sid)
                                      .order_by(Thread.message_count.desc()).limit(1))
        message_id = db.session.scalar(select(Message.id).where(Message.space_id == sid)
                                       .order_by(Message.date.desc()).limit(1))
        deep = db.session.execute(select(Message.date, Message.id).where(Message.space_id == sid)
                                  .order_by(Message.date.desc(), Message.id.desc()).offset(count // 2).limit(1)).first()
    pages = {"Mail tab, first page": ("/spaces/BENCH/mail", True),
             "Mail tab, deep page": (f"/spaces/BENCH/mail?before={encode_cursor(deep.date, deep.id)}", True),
             "Mail tab, first page (warm)": ("/spaces/BENCH/mail", False),
             "thread page (largest thread)": (f"/spaces/BENCH/mail/threads/{thread_id}", False),
             "message page": (f"/spaces/BENCH/mail/messages/{message_id}", False)}
    client = app.test_client()
    assert client.post("/login", data={"login": "bench", "password": PASSWORD}).status_code == 302
    samples = {}
    for name, (url, cold) in pages.items():
        times = []
        for rep in range(reps + 1):
            if cold:
                read_routes._RENDERED.clear()
            started = time.perf_counter()
            response = client.get(url)
            if rep:
                times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}")
        samples[name] = times
    return samples


def wrk_mail_tab(url: str, seconds: int) -> tuple[float, str]:
    """Requests/s for the Mail tab's first page over HTTP: gunicorn (2 workers) on the archive, wrk."""
    port = free_port()
    env = {**os.environ, "SPACEMAIL_DATABASE_URL": url}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "wsgi:app"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(WORKDIR / "gunicorn.log", "wb"))
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = opener.open(f"{base}/login").read().decode()
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
        opener.open(f"{base}/login", urllib.parse.urlencode(
            {"login": "bench", "password": PASSWORD, "csrf_token": token}).encode())
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        check = urllib.request.Request(f"{base}/spaces/BENCH/mail", headers={"Cookie": cookie})
        with urllib.request.urlopen(check) as response:
            if response.status != 200 or response.url != f"{base}/spaces/BENCH/mail":
                raise RuntimeError("the signed-in Mail tab did not answer 200")
        out = subprocess.run(["wrk", "-t", "2", "-c", "8", "-d", f"{seconds}s", "-H", f"Cookie: {cookie}",
                              f"{base}/spaces/BENCH/mail"], capture_output=True, text=True, check=True).stdout
        if "Non-2xx" in out:
            raise RuntimeError(f"wrk saw errors: {out}")
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), out
    finally:
        server.terminate()
        server.wait()


def page_results(samples, n: int) -> list[Result]:
    results = []
    for name, times in samples.items():
        figure = median(times)
        short = name.split(",")[-1].split()[0] if "Mail tab" in name else name.split()[0]
        results.append(Result(f"B5 {short}{' (warm)' if 'warm' in name else ''}",
                              f"{name} at {n:,} messages, in-process: median", figure, "ms", times,
                              goal="p50 ≤ 10 ms", met=figure <= 10))
    return results


def large(n: int, seed: int, reps: int, urls, small: int = 1000, sqlite: bool = True) -> list[Result]:
    """B8 at `n` messages (one space of n, nine of `small`), SQLite and PostgreSQL side by side: searches and the
    Mail tab's pages, on archives made by bench/bulk.py (kept between runs)."""
    import bulk
    from common import open_app

    pg = urls.postgres("b8_probe")
    server = pg.rsplit("/", 1)[0] if pg else None
    say(f"B8: archives of {n:,} messages (+{9 * small:,} in nine small spaces), SQLite and PostgreSQL")
    sqlite_url, pg_url, info = bulk.archives(n, seed, server, small, sqlite=sqlite)
    RARE["word"] = info["rare"]
    built = ("kept from an earlier run, " if info.get("kept") else "") + (
        f"bulk-loaded in {info['seconds'] / 60:.0f} minutes")
    results = []
    engines = ([("SQLite", sqlite_url)] if sqlite_url else []) + ([("PostgreSQL", pg_url)] if pg_url else [])
    measured = {}
    for engine, url in engines:
        say(f"B8: searches and pages at {n:,} ({engine})")
        app = open_app(url)
        measured[engine] = (time_searches(app, reps), time_pages(app, reps))
        with app.app_context():
            from webapp.extensions import db

            db.engine.dispose()
    for engine, (searches, pages) in measured.items():
        tag = "" if engine == "PostgreSQL" else " (SQLite)"
        for result in search_results(searches, None, n, "B8"):
            result.id += tag
            result.work += f" ({engine}, {built})"
            results.append(result)
        for result in page_results(pages, n):
            result.id = "B8 " + result.id.removeprefix("B5 ") + tag
            result.work += f" ({engine})"
            results.append(result)
    if "PostgreSQL" in measured:  # side by side: PostgreSQL's figure against SQLite's, same archive and queries
        by_id = {r.id: r for r in results}
        for r in results:
            twin = by_id.get(r.id + " (SQLite)")
            if twin is not None:
                r.reference, r.reference_figure, r.reference_samples = "Spacemail on SQLite", twin.figure, twin.samples
                r.ratio = twin.figure / r.figure
    return results


def run(n: int, seed: int, reps: int, urls, wrk_seconds: int = 10, runs: int = 3) -> list[Result]:
    maildir = WORKDIR / "b4-maildir"
    say(f"B4/B5: building an archive of {n:,} messages (SQLite) and a Maildir of the same")
    app, rate = build(urls.sqlite("b4"), n, seed, maildir)
    say(f"B4: notmuch new on the {n:,} messages")
    notmuch_seconds = notmuch_new(maildir)
    say("B4: searches")
    ours, theirs = time_searches(app, reps), time_notmuch(maildir, reps)
    results = search_results(ours, theirs, n)
    results[0].note = (f"the archive was built at {rate:,.0f} messages/s, and its search index merged by the hourly "
                       f"job in {TIDY['seconds']:.0f} s; notmuch new indexed the same at "
                       f"{n / notmuch_seconds:,.0f} messages/s")
    say("B5: pages in-process")
    results += page_results(time_pages(app, reps), n)
    rates = []
    for i in range(runs):
        say(f"B5 run {i + 1}/{runs}: the Mail tab over HTTP (gunicorn -w 2, wrk {wrk_seconds} s)")
        rates.append(wrk_mail_tab(app.config["SQLALCHEMY_DATABASE_URI"], wrk_seconds)[0])
    results.append(Result("B5 HTTP", f"Mail tab first page over HTTP at {n:,} messages: gunicorn 2 workers, wrk "
                                     "2 threads, 8 connections", median(rates), "requests/s", rates,
                          goal="≥ 500 requests/s", met=median(rates) >= 500,
                          note="the same list asked for again and again: each worker renders it once and then "
                               "serves it from its rendered-list cache until the archive changes (see B5 first, "
                               "cold and warm)"))
    return results


if __name__ == "__main__":
    from common import Urls

    for r in run(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, 7, 5, Urls(), wrk_seconds=3, runs=1):
        print(r.id, round(r.figure, 2), r.unit, r.ratio, r.met, r.samples[:6], r.note)
