"""Large archives for B5 and B8 (1,000,000 messages by default), built by a bulk loader and kept between runs.

The fetch or import path would take most of bench/run's two hours to store a million messages on both engines
(docs/benchmarks.md, B3 and B8), and what B5 and B8 measure is reading, not writing. So the loader parses the
corpus once, in two processes (webapp.archive.ingest.prepare, the import's own parsing and search vectors),
and writes both archives side by side: SQLite through executemany, PostgreSQL through COPY, their secondary
indexes dropped during the load and built after it. Threads come from In-Reply-To (the corpus's threading is
clean: each reply names a message that came before it), which tests/test_bench.py checks against the import
path on the same messages: the same threads, the same sizes, the same search results.

One space (BENCH) holds `n` messages and nine small ones (SMALL1..SMALL9) `small` messages each, from the same
generator with other seeds. The archives are kept in SPACEMAIL_BENCH_CACHE (default ~/.cache/spacemail-bench):
a SQLite file and a PostgreSQL database named after the corpus, the schema's head revision and LOADER, and
built again only when one of those changes."""
import json
import multiprocessing
import os
import re
import sqlite3
import time
from pathlib import Path

from common import ROOT, make_app, open_app, say

import corpus

LOADER = 2  # bump when what the loader writes changes
CHUNK = 500
SMALL_SPACES = 9
_CODENAME = re.compile(rb"Codename (project\d+)")  # the corpus's rare words (see search_bench.RARE)


def cache_dir() -> Path:
    path = Path(os.environ.get("SPACEMAIL_BENCH_CACHE") or Path.home() / ".cache" / "spacemail-bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def schema_head() -> str:
    return max(p.name.split("_", 1)[0] for p in (ROOT / "migrations" / "versions").glob("0*.py"))


def key(n: int, seed: int, small: int) -> str:
    return f"n{n}_s{seed}_k{small}_r{schema_head()}_l{LOADER}"


def _server(postgres_url: str) -> str:
    return postgres_url.rsplit("/", 1)[0]


def archives(n: int, seed: int, postgres_server: str | None, small: int = 1000,
             sqlite: bool = True) -> tuple[str | None, str | None, dict]:
    """(SQLite URL or None, PostgreSQL URL or None, how it was built): built now unless kept from an earlier run.
    A million messages take about 32 GB on SQLite and 18 GB on PostgreSQL (raw bytes, text, index)."""
    name = key(n, seed, small)
    path = cache_dir() / f"archive_{name}.db"
    manifest = cache_dir() / f"archive_{name}.json"
    # Named after the cache folder too: another cache (a test's, a second checkout) on the same server neither
    # reuses nor drops this one's database.
    pg_name = f"bench_cache_{_folder_tag()}_{name}"[:63]
    pg_url = f"{postgres_server}/{pg_name}" if postgres_server else None
    sqlite_url = f"sqlite:///{path}" if sqlite else None
    if manifest.exists() and (not sqlite or path.exists()) and (pg_url is None or _pg_exists(postgres_server, pg_name)):
        info = json.loads(manifest.read_text())
        if (pg_url is None or info.get("postgres")) and (not sqlite or info.get("sqlite", True)):
            say(f"  kept from an earlier run: {name}")
            return sqlite_url, pg_url, {**info, "kept": True}
    for old in cache_dir().glob("archive_*"):  # one size at a time: they are large
        old.unlink()
    if pg_url:
        _pg_recreate(postgres_server, pg_name, f"bench_cache_{_folder_tag()}_")
    info = build(sqlite_url, pg_url, n, seed, small)
    manifest.write_text(json.dumps(info))
    return sqlite_url, pg_url, {**info, "kept": False}


def _pg_exists(server: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def _folder_tag() -> str:
    import hashlib

    return hashlib.sha256(str(cache_dir().resolve()).encode()).hexdigest()[:6]


def _pg_recreate(server: str, name: str, prefix: str) -> None:
    """A new database `name`, after dropping this cache's older ones (those starting with `prefix`)."""
    import psycopg

    with psycopg.connect(server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        for (old,) in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                   [prefix]).fetchall():
            conn.execute(f'DROP DATABASE "{old}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _prepare(raws: list[bytes]):
    from webapp.archive import ingest

    prepared = ingest.prepare(raws, 50 * 1024 * 1024, vectors=True)
    return [prepared.parsed[sha] for sha in prepared.shas]


def _spaces(n: int, seed: int, small: int):
    """(space key, number of messages, seed) for the big space and the small ones."""
    yield "BENCH", n, seed
    for i in range(1, SMALL_SPACES + 1):
        yield f"SMALL{i}", small, seed + 100 + i


def _chunks(n: int, seed: int, small: int):
    for space, count, space_seed in _spaces(n, seed, small):
        batch = []
        for raw in corpus.generate(count, space_seed):
            batch.append(raw)
            if len(batch) == CHUNK:
                yield space, batch
                batch = []
        if batch:
            yield space, batch


class _Writer:
    """Rows into one engine's tables, by its own driver."""

    def __init__(self, app, url: str) -> None:
        from webapp.archive.models import Message, MessageRaw, MessageRef, Thread
        from webapp.extensions import db

        self.url, self.tables = url, {t.name: t for t in (Message.__table__, MessageRaw.__table__,
                                                        MessageRef.__table__, Thread.__table__)}
        with app.app_context():
            self.dialect = db.engine.dialect
            db.engine.dispose()  # leaving WAL mode (below) needs the file to itself
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            # No journal while loading a throwaway archive: in WAL mode the one big transaction kept every page in
            # the WAL (34 GB at a million) and its checkpoint needed as much again.
            self.conn.execute("PRAGMA journal_mode=OFF")
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute("PRAGMA foreign_keys=OFF")
            self.conn.execute("BEGIN")
            self.indexes = [sql for (sql,) in self.conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
                "('archive_messages', 'archive_raw', 'archive_refs', 'archive_threads')")]
            for (name,) in self.conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
                    "('archive_messages', 'archive_raw', 'archive_refs', 'archive_threads')").fetchall():
                self.conn.execute(f'DROP INDEX "{name}"')
        else:
            import psycopg

            self.conn = psycopg.connect(url.replace("+psycopg", ""))
            self.conn.execute("SET session_replication_role = replica")  # foreign keys: the threads come last
            self.conn.execute("SET synchronous_commit = off")
            found = self.conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename IN "
                "('archive_messages', 'archive_raw', 'archive_refs', 'archive_threads') AND indexdef NOT LIKE "
                "'CREATE UNIQUE%'").fetchall()
            self.indexes = [definition for _, definition in found]
            for name, _ in found:
                self.conn.execute(f'DROP INDEX "{name}"')

    def _values(self, table: str, rows: list[dict]) -> tuple[list[str], list[tuple]]:
        columns = [c for c in self.tables[table].c if c.name in rows[0]]
        procs = [c.type.dialect_impl(self.dialect).bind_processor(self.dialect) for c in columns]
        out = []
        for row in rows:
            values = []
            for column, proc in zip(columns, procs):
                value = row[column.name]
                if proc is not None and value is not None:
                    value = proc(value)
                if not self.sqlite and column.name == "attachments":
                    value = json.dumps(row[column.name])  # COPY takes its text form
                values.append(value)
            out.append(tuple(values))
        return [c.name for c in columns], out

    def write(self, table: str, rows: list[dict], extra: dict | None = None) -> None:
        if not rows:
            return
        names, values = self._values(table, rows)
        if extra:  # columns outside the model (search_vector)
            names = names + list(extra)
            values = [v + tuple(e) for v, e in zip(values, zip(*extra.values()))]
        if self.sqlite:
            self.conn.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                                  f"({', '.join('?' for _ in names)})", values)
        else:
            with self.conn.cursor().copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
                for row in values:
                    copy.write_row(row)

    def fts(self, rows: list[tuple]) -> None:
        if self.sqlite:
            self.conn.executemany("INSERT INTO search_messages (rowid, subject, sender, body) VALUES (?, ?, ?, ?)",
                                  rows)

    def finish(self) -> None:
        say(f"  indexes ({'SQLite' if self.sqlite else 'PostgreSQL'})")
        if self.sqlite:
            for sql in self.indexes:
                self.conn.execute(sql)
            self.conn.execute("COMMIT")
            self.conn.execute("ANALYZE")
        else:
            self.conn.execute("SET maintenance_work_mem = '1GB'")
            for sql in self.indexes:
                self.conn.execute(sql)
            for table in ("archive_messages", "archive_threads", "archive_refs"):
                self.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT coalesce(max(id), 1) FROM {table}))")
            self.conn.commit()
            self.conn.autocommit = True
            self.conn.execute("VACUUM ANALYZE")
        self.conn.close()


def _small_spaces(app) -> dict[str, int]:
    """The nine small spaces beside BENCH (made by make_app): space key -> id."""
    from webapp.auth.models import User
    from webapp.extensions import db
    from webapp.spaces.services import create_site_space

    with app.app_context():
        admin = db.session.scalar(db.select(User).where(User.username == "bench"))
        ids = {"BENCH": db.session.scalar(db.text("SELECT id FROM spaces WHERE key = 'BENCH'"))}
        for i in range(1, SMALL_SPACES + 1):
            ids[f"SMALL{i}"] = create_site_space(admin, f"SMALL{i}", f"Small {i}").id
        db.session.commit()
        return ids


def build(sqlite_url: str | None, postgres_url: str | None, n: int, seed: int, small: int) -> dict:
    """Both archives (or either), from one parse of the corpus. Returns how long it took."""
    from webapp.archive import ingest, search

    started = time.perf_counter()
    if sqlite_url:
        path = Path(sqlite_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    apps = ([make_app(sqlite_url)] if sqlite_url else []) + ([make_app(postgres_url)] if postgres_url else [])
    space_ids = [_small_spaces(app) for app in apps]
    assert all(ids == space_ids[0] for ids in space_ids)
    space_ids = space_ids[0]
    writers = [_Writer(app, app.config["SQLALCHEMY_DATABASE_URI"]) for app in apps]
    total = n + SMALL_SPACES * small
    message_id = thread_id = ref_id = 0
    by_msgid: dict[tuple[int, str], tuple[int, int]] = {}  # (space, Message-ID) -> (message id, thread id)
    threads: dict[int, dict] = {}
    codenames: dict[bytes, int] = {}
    done = 0
    with multiprocessing.get_context("fork").Pool(2) as pool, apps[0].app_context():
        chunks = _chunks(n, seed, small)
        spaces_of = []

        def raws_only():
            for space, batch in chunks:
                spaces_of.append((space, batch))
                yield batch

        for parsed in pool.imap(_prepare, raws_only(), chunksize=1):
            space, raws = spaces_of.pop(0)
            sid = space_ids[space]
            messages, raw_rows, refs, vectors, fts = [], [], [], [], []
            for raw, p in zip(raws, parsed):
                message_id += 1
                row = ingest._message_row(sid, None, p)
                row.pop("search_vector", None)
                parent = by_msgid.get((sid, p.in_reply_to)) if p.in_reply_to else None
                if parent is None:
                    for ref in reversed(p.references):
                        if (sid, ref) in by_msgid:
                            parent = by_msgid[(sid, ref)]
                            break
                if parent is None:
                    thread_id += 1
                    threads[thread_id] = {"id": thread_id, "space_id": sid, "subject": p.subject,
                                          "subject_key": ingest.subject_key(p.subject), "message_count": 0,
                                          "last_date": row["date"]}
                    row["thread_id"], row["parent_id"] = thread_id, None
                else:
                    row["parent_id"], row["thread_id"] = parent
                thread = threads[row["thread_id"]]
                thread["message_count"] += 1
                thread["last_date"] = max(thread["last_date"], row["date"])
                row["id"] = message_id
                if p.message_id:
                    by_msgid.setdefault((sid, row["message_id_header"]), (message_id, row["thread_id"]))
                messages.append(row)
                vectors.append(p.search_vector)
                raw_rows.append({"message_id": message_id, "raw": raw})
                for ref in p.references:
                    ref_id += 1
                    refs.append({"id": ref_id, "space_id": sid, "message_id": message_id, "ref": ref[:300]})
                fts.append((search.search_key(row["date"], message_id), *search.indexed_text(row)))
            for writer in writers:
                writer.write("archive_messages", messages, None if writer.sqlite else {"search_vector": vectors})
                writer.write("archive_raw", raw_rows)
                writer.write("archive_refs", refs)
                writer.fts(fts)
            if space == "BENCH":
                for raw in raws:
                    for code in _CODENAME.findall(raw):
                        codenames[code] = codenames.get(code, 0) + 1
            done += len(raws)
            if done % 50_000 < CHUNK:
                rate = done / (time.perf_counter() - started)
                say(f"  {done:,} of {total:,} loaded ({rate:,.0f} messages/s)")
    for writer in writers:
        writer.write("archive_threads", list(threads.values()))
        writer.finish()
    seconds = time.perf_counter() - started
    say(f"  loaded {total:,} messages in {seconds / 60:.1f} minutes")
    rare = min(codenames, key=lambda code: (codenames[code], code)).decode() if codenames else None
    return {"messages": total, "big_space": n, "seconds": round(seconds), "postgres": bool(postgres_url),
            "sqlite": bool(sqlite_url),
            "threads": thread_id, "rare": rare}


def summary(url: str) -> dict:
    """What the bulk loader must write as the import would: per space, its threads (each as its messages'
    Message-IDs, their parents, the thread's count and subject) and what a few searches find."""
    from sqlalchemy import select

    from webapp.archive import search
    from webapp.archive.models import Message, Thread
    from webapp.extensions import db
    from webapp.spaces.models import Space

    app = open_app(url)
    out = {}
    with app.app_context():
        for space in db.session.scalars(select(Space).order_by(Space.key)):
            by_id = {m.id: m for m in db.session.scalars(select(Message).where(Message.space_id == space.id))}
            threads = {}
            for m in by_id.values():
                thread = db.session.get(Thread, m.thread_id)
                threads.setdefault(thread.id, {"subject": thread.subject, "count": thread.message_count,
                                               "last": thread.last_date.isoformat(), "messages": []})
                parent = by_id[m.parent_id].message_id_header if m.parent_id else None
                threads[thread.id]["messages"].append((m.message_id_header, parent))
            shape = sorted((t["subject"], t["count"], t["last"], sorted(t["messages"])) for t in threads.values())
            words = ["project0", "project1", "kalo", "kalo*", "kal*", '"ka lo"']
            found = {w: sorted(by_id[h.message_id].message_id_header for h in search.search(space.id, w, limit=500))
                     for w in words}
            out[space.key] = {"threads": shape, "search": found, "messages": len(by_id)}
    return out


def check(n: int, small: int) -> dict:
    """The same corpus through the bulk loader and through the import path (ingest.store_batch): summaries."""
    from common import Urls, sqlite_url

    from webapp.archive import ingest
    from webapp.extensions import db

    urls = Urls()
    pg = urls.postgres("bulk_check")
    bulk_sqlite = sqlite_url("bulk_check")
    build(bulk_sqlite, pg, n, 7, small)
    imported = sqlite_url("import_check")
    app = make_app(imported)
    ids = _small_spaces(app)
    with app.app_context():
        for space, batch in _chunks(n, 7, small):
            ingest.store_batch(ids[space], None, batch)
            db.session.commit()
    result = {"import": summary(imported), "bulk_sqlite": summary(bulk_sqlite)}
    if pg:
        result["bulk_postgres"] = summary(pg)
    return result


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--check"]:
        print(json.dumps(check(int(sys.argv[2]), int(sys.argv[3]))))
        sys.exit(0)
    from common import Urls

    pg = Urls().postgres("bulk_probe")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(archives(n, 7, _server(pg) if pg else None, small=int(sys.argv[2]) if len(sys.argv) > 2 else 100,
                   sqlite="--postgres-only" not in sys.argv))
