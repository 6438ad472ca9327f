"""Migrations: empty -> head with the real `flask db` commands, and no drift from the models."""
import contextlib
import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.conftest import ROOT, TEST_KEY


def postgres_server_url() -> str | None:
    """The PostgreSQL server to test against: SPACEMAIL_TEST_POSTGRES_URL, else one on 127.0.0.1:5432."""
    url = os.environ.get("SPACEMAIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return url
    except Exception:
        return None
    finally:
        engine.dispose()


def flask(args, database_url, tmp_path):
    env = {**os.environ, "FLASK_APP": "wsgi", "SPACEMAIL_DATABASE_URL": database_url,
           "SPACEMAIL_INSTANCE_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "flask", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def check_upgrade_and_drift(database_url, tmp_path):
    upgrade = flask(["db", "upgrade"], database_url, tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    check = flask(["db", "check"], database_url, tmp_path)
    assert check.returncode == 0 and "No new upgrade operations detected" in check.stdout + check.stderr, check.stderr
    engine = create_engine(database_url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert {"users", "spaces", "space_roles", "site_settings", "job_runs", "alembic_version"} <= tables
        assert conn.execute(text("SELECT site_title, mail_archiving_enabled FROM site_settings")).one() == ("Spacemail", True)
    engine.dispose()
    link = flask(["setup-link"], database_url, tmp_path)
    assert link.returncode == 0 and "/setup?token=" in link.stdout


def test_sqlite_upgrade_from_empty_to_head(tmp_path):
    check_upgrade_and_drift(f"sqlite:///{tmp_path / 'migrate.db'}", tmp_path)


@contextlib.contextmanager
def scratch_database():
    """The URL of a new, empty PostgreSQL database, dropped afterwards (skips when none answers)."""
    server = postgres_server_url()
    if server is None:
        pytest.skip("no PostgreSQL answers (set SPACEMAIL_TEST_POSTGRES_URL to test it)")
    name = f"spacemail_migrate_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_postgresql_upgrade_from_empty_to_head(tmp_path):
    with scratch_database() as url:
        check_upgrade_and_drift(url, tmp_path)


def test_0012_rehashes_messages_to_their_canonical_key_without_merging_copies(app, db, make_user, tmp_path):
    """Archived before 0012 (keys = sha256 of the raw bytes): a message without a final newline, and two copies
    of one message differing only in line ends. After: the first has the canonical key (as a POP3 fetch of it
    would); of the two copies one keeps its old key, so neither disappears."""
    import hashlib

    from webapp.archive import ingest
    from webapp.archive.models import Message, MessageRaw
    from webapp.spaces.services import create_site_space

    space = create_site_space(make_user("ann"), "TEAM", "Team")
    raws = [b"Subject: a\r\n\r\nno newline", b"Subject: b\r\n\r\nsame\r\n", b"Subject: b\n\nsame\n"]
    ids = [ingest.store(space.id, None, raw if i != 2 else b"Subject: c\r\n\r\nplaceholder\r\n")[0]
           for i, raw in enumerate(raws)]
    for message_id, raw in zip(ids, raws):  # as the archive held them before 0012
        db.session.get(Message, message_id).sha256 = hashlib.sha256(raw).hexdigest()
        db.session.get(MessageRaw, message_id).raw = raw
    db.session.commit()
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    assert flask(["db", "stamp", "0011"], url, tmp_path).returncode == 0
    upgrade = flask(["db", "upgrade", "0012"], url, tmp_path)  # (the schema is already at head: 0012 only)
    assert upgrade.returncode == 0, upgrade.stderr
    db.session.expire_all()
    keys = [db.session.get(Message, message_id).sha256 for message_id in ids]
    assert keys[0] == ingest.dedupe_key(raws[0]) != hashlib.sha256(raws[0]).hexdigest()
    assert keys[1] == ingest.dedupe_key(raws[1]) and keys[2] == hashlib.sha256(raws[2]).hexdigest()


def test_0016_moves_postgresql_search_onto_the_message_row(tmp_path, redis_server):
    """An archive searched through the old search_messages table before 0016 is searched through the message row
    after it: the old table is gone, a word with diacritics still finds its mail, and new mail is indexed too."""
    from datetime import datetime, timezone

    from webapp import create_app
    from webapp.archive import ingest, search
    from webapp.archive.models import Message
    from types import SimpleNamespace

    from webapp.extensions import db
    from webapp.spaces.services import create_site_space

    with scratch_database() as url:
        assert flask(["db", "upgrade", "0015"], url, tmp_path).returncode == 0
        app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "t",
                          "REDIS_URL": redis_server, "ENCRYPTION_KEYS": [TEST_KEY],
                          "PASSWORD_HASH_METHOD": "scrypt:1024:8:1"})
        with app.app_context():
            # The person as 0015 stored them (the User model of today has columns 0015 does not).
            ann_id = db.session.execute(text(
                "INSERT INTO users (username, email, full_name, password_hash, is_admin, active, can_create_spaces, "
                "time_zone, auth_version, notify_own_actions, mail_format, daily_report, watch_own_edits, created_at) "
                "VALUES ('ann', 'ann@example.org', 'Ann', 'x', false, true, false, '', 1, false, 'html', false, true, "
                "now()) RETURNING id")).scalar()
            space = create_site_space(SimpleNamespace(id=ann_id), "T", "T")
            old = Message(space_id=space.id, sha256="x" * 64, size=10, subject="Réunion du Büro",
                          from_name="Zoë", from_addr="zoe@example.org", date=datetime.now(timezone.utc),
                          body_text="Ordre du jour: le café")
            db.session.add(old)
            db.session.flush()
            db.session.execute(text(  # as 0015 indexed it
                "INSERT INTO search_messages (message_id, space_id, vector) VALUES (:id, :space, "
                "to_tsvector('simple', 'Reunion du Buro Zoe zoe@example.org Ordre du jour: le cafe'))"),
                {"id": old.id, "space": space.id})
            db.session.commit()
            old_id, space_id = old.id, space.id
        upgrade = flask(["db", "upgrade"], url, tmp_path)
        assert upgrade.returncode == 0, upgrade.stderr
        with app.app_context():
            assert db.session.execute(text("SELECT to_regclass('search_messages')")).scalar() is None
            assert [h.message_id for h in search.search(space_id, "buro")] == [old_id]
            assert [h.message_id for h in search.search(space_id, "cafe", order="relevance")] == [old_id]
            assert "<mark>Büro</mark>" in search.search(space_id, "büro")[0].snippet
            new_id, _ = ingest.store(space_id, None, b"Subject: later\r\n\r\nanother cafe\r\n")
            db.session.commit()
            assert [h.message_id for h in search.search(space_id, "cafe")] == [new_id, old_id]
            db.session.remove()
            db.engine.dispose()


def test_0021_rebuilds_sqlite_search_contentless_in_date_order(tmp_path, redis_server):
    """An archive indexed as before 0021 (FTS5 holding its own copy, rowid = message id) is searched newest first
    by date after it, though its ids are not in date order; snippets come from the message row; a purge takes the
    words of a message out of the new index; new mail is indexed in it."""
    from datetime import datetime, timedelta, timezone

    from webapp import create_app
    from webapp.archive import ingest, search, trash
    from webapp.archive.models import Message
    from webapp.auth.services import create_user
    from webapp.extensions import db
    from webapp.spaces.services import create_site_space

    url = f"sqlite:///{tmp_path / 'search.db'}"
    assert flask(["db", "upgrade", "0020"], url, tmp_path).returncode == 0
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "t", "REDIS_URL": redis_server,
                      "ENCRYPTION_KEYS": [TEST_KEY], "PASSWORD_HASH_METHOD": "scrypt:1024:8:1"})
    start = datetime(2025, 3, 1, tzinfo=timezone.utc)
    days = [5, 1, 9, 3, 7]  # arrival order (ids) is not date order
    with app.app_context():
        space = create_site_space(create_user("ann", "ann@example.org", "Ann", "pw-pw-pw-pw"), "T", "T")
        ids = []
        for i, day in enumerate(days):
            message = Message(space_id=space.id, sha256=f"{i}" * 64, size=10, subject=f"Minutes {i}",
                              from_name="Zoë", from_addr="zoe@example.org", date=start + timedelta(days=day),
                              body_text=f"Ordre du jour {i}: le café du Büro")
            db.session.add(message)
            db.session.flush()
            db.session.execute(text(  # as 0020 indexed it: FTS5's own copy, the message id as rowid
                "INSERT INTO search_messages (rowid, subject, sender, body) VALUES (:id, :s, :f, :b)"),
                {"id": message.id, "s": message.subject, "f": "Zoë zoe@example.org", "b": message.body_text})
            ids.append(message.id)
        db.session.commit()
        space_id = space.id
        db.session.remove()
        db.engine.dispose()
    upgrade = flask(["db", "upgrade"], url, tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    by_date = [ids[i] for i in sorted(range(len(days)), key=lambda i: days[i], reverse=True)]
    with app.app_context():
        assert [h.message_id for h in search.search(space_id, "cafe")] == by_date
        assert [h.message_id for h in search.search(space_id, "cafe", limit=2,
                                                    before=(start + timedelta(days=7), ids[4]))] == by_date[2:4]
        assert sorted(h.message_id for h in search.search(space_id, "buro", order="relevance")) == sorted(ids)
        hit = search.search(space_id, "minutes 2 cafe")[0]
        assert hit.message_id == ids[2] and "<mark>café</mark>" in hit.snippet and "<mark>2</mark>" in hit.snippet
        purged = db.session.get(Message, ids[2])
        purged.deleted_at = datetime.now(timezone.utc) - timedelta(days=31)
        db.session.commit()
        assert trash.purge() == 1
        assert db.session.execute(text("SELECT count(*) FROM search_messages WHERE search_messages MATCH 'cafe'")
                                  ).scalar() == len(ids) - 1
        db.session.execute(text("INSERT INTO search_messages (search_messages) VALUES ('integrity-check')"))
        new_id, _ = ingest.store(space_id, None, b"Subject: later\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\n\r\n"
                                                 b"another cafe\r\n")
        db.session.commit()
        assert [h.message_id for h in search.search(space_id, "cafe")] == [new_id] + [i for i in by_date
                                                                                      if i != ids[2]]
        db.session.remove()
        db.engine.dispose()
