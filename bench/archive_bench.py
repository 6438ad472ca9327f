"""Mail tab speed at scale (issue 4): build a space of N messages, then time the pages readers open.

    python bench/archive_bench.py [--messages 100000] [--runs 30] [--db PATH]

Prints median and p95 server time (in-process, Flask test client, SQLite) for the Mail tab's first page,
a deep page, a thread page, a message page, and a one-word search. Not part of the test run."""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("SPACEMAIL_INSTANCE_DIR", tempfile.mkdtemp(prefix="spacemail-bench-"))

import corpus  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from webapp import create_app  # noqa: E402
from webapp.archive import ingest, search  # noqa: E402
from webapp.archive.models import Message, Thread  # noqa: E402
from webapp.auth.services import create_user  # noqa: E402
from webapp.extensions import db  # noqa: E402
from webapp.spaces.services import create_site_space  # noqa: E402

GOALS_MS = {"mail tab, first page": 50, "thread page": 50, "message page": 50, "search, one word": 100}


def build(app, n: int) -> float:
    """Ingest n corpus messages into space BENCH; returns messages per second."""
    with app.app_context():
        db.create_all()
        with db.engine.begin() as conn:
            search.create_tables(conn)
        from webapp.settings import SiteSettings

        SiteSettings.get()
        user = create_user("bench", "bench@example.org", "Bench", "bench password 1", is_admin=True)
        space = create_site_space(user, "BENCH", "Bench")
        db.session.commit()
        started = time.perf_counter()
        for i, raw in enumerate(corpus.generate(n, 7)):
            ingest.store(space.id, None, raw)
            if i % 1000 == 999:
                db.session.commit()
                print(f"\r  ingested {i + 1}/{n}", end="", file=sys.stderr, flush=True)
        db.session.commit()
        print(file=sys.stderr)
        return n / (time.perf_counter() - started)


def timed(client, url: str, runs: int) -> list[float]:
    client.get(url)  # warm
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--db", default=None, help="reuse an SQLite file built before")
    args = parser.parse_args()
    path = Path(args.db or Path(os.environ["SPACEMAIL_INSTANCE_DIR"]) / f"bench-{args.messages}.db")
    fresh = not path.exists()
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "WTF_CSRF_ENABLED": False,
                      "RATELIMIT_ENABLED": False, "PASSWORD_HASH_METHOD": "scrypt:1024:8:1"})
    rate = build(app, args.messages) if fresh else None
    with app.app_context():
        count = db.session.scalar(select(func.count(Message.id)))
        thread_id = db.session.scalar(select(Thread.id).order_by(Thread.message_count.desc()).limit(1))
        message_id = db.session.scalar(select(Message.id).order_by(Message.id.desc()).limit(1))
        deep = db.session.scalars(select(Message).order_by(Message.date.desc(), Message.id.desc())
                                  .offset(count // 2).limit(1)).first()
        from webapp.archive.reading import encode_cursor

        cursor = encode_cursor(deep.date, deep.id)
        word = corpus.vocabulary(__import__("random").Random(7))[40]  # a mid-frequency word
    client = app.test_client()
    client.post("/login", data={"login": "bench", "password": "bench password 1"})
    pages = {
        "mail tab, first page": "/spaces/BENCH/mail",
        "mail tab, deep page": f"/spaces/BENCH/mail?before={cursor}",
        "thread page": f"/spaces/BENCH/mail/threads/{thread_id}",
        "message page": f"/spaces/BENCH/mail/messages/{message_id}",
        "search, one word": f"/spaces/BENCH/mail?q={word}",
    }
    print(f"\n{count} messages in one space (SQLite){f', ingested at {rate:.0f} messages/s' if rate else ''}")
    print(f"{'page':28} {'median ms':>10} {'p95 ms':>8} {'goal':>8}")
    for name, url in pages.items():
        samples = sorted(timed(client, url, args.runs))
        median, p95 = statistics.median(samples), samples[int(len(samples) * 0.95) - 1]
        goal = GOALS_MS.get(name)
        verdict = "" if goal is None else ("met" if median < goal else "MISSED")
        print(f"{name:28} {median:10.1f} {p95:8.1f} {('< ' + str(goal)) if goal else '':>8} {verdict}")


if __name__ == "__main__":
    main()
