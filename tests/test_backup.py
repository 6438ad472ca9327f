"""A backup as README › Production describes it, restored into an empty database, reads as the archive did."""
import shutil
import subprocess
import uuid

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import TEST_KEY, Client, _app_config
from webapp import create_app
from webapp.archive import ingest, search
from webapp.archive.models import MailAccount
from webapp.archive.services import AccountData, create_account
from webapp.extensions import db as _db
from webapp.oauth.credentials import secret_for
from webapp.spaces.services import create_site_space

MAIL = (b"From: Ann <ann@example.org>\r\nSubject: Quarterly figures\r\nMessage-ID: <q1@example.org>\r\n"
        b"Date: Mon, 5 Jan 2026 10:00:00 +0000\r\n\r\nThe zeppelin budget is approved.\r\n")


def test_flask_backup_restored_into_an_empty_database_reads_the_archive(app, db, make_user, login, tmp_path,
                                                                       redis_server):
    admin = make_user("ann", admin=True)
    space = create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    message_id, _ = ingest.store(space.id, None, MAIL)
    account = create_account(space, AccountData(name="box", protocol="imaps", host="mail.example.org", port=993,
                                                username="team@example.org", password="mailbox pässword",
                                                require_starttls=False, folder="INBOX", trusted_ca_pem=""))
    db.session.commit()
    account_id = account.id
    dump = tmp_path / "backup.dump"
    result = app.test_cli_runner().invoke(args=["backup", str(dump)])
    assert result.exit_code == 0, result.output
    assert "Back up the keys too" in result.output and dump.stat().st_size > 0

    # Read now: inside the restored app the outer session would load them from the restored database (Flask-
    # SQLAlchemy picks the current app's engine).
    person, space_id = type("Person", (), {"username": admin.username}), space.id
    restored_url, cleanup = _restore(app, dump, tmp_path)
    try:
        restored = create_app({**_app_config(restored_url, redis_server, restored_url.startswith("postgresql")),
                               "ENCRYPTION_KEYS": [TEST_KEY]})
        restored.test_client_class = Client
        with restored.app_context():
            assert [h.message_id for h in search.search(space_id, "zeppelin")] == [message_id]
            assert secret_for(_db.session.get(MailAccount, account_id)) == "mailbox pässword"
            client = restored.test_client()
            login(person, client)
            page = client.get(f"/spaces/TEAM/mail/messages/{message_id}").get_data(as_text=True)
            assert "Quarterly figures" in page and "zeppelin budget" in page
        with restored.app_context():  # after the request's own teardown, which may have used a connection
            _db.session.remove()
            _db.engine.dispose()
    finally:
        cleanup()


def _restore(app, dump, tmp_path):
    """Into an empty database: a new SQLite file, or a new PostgreSQL database through pg_restore."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite"):
        target = tmp_path / "restored.db"
        shutil.copy(dump, target)
        return f"sqlite:///{target}", lambda: None
    if shutil.which("pg_restore") is None:
        pytest.fail("pg_restore is not installed (postgresql-client)")
    server, name = url.rsplit("/", 1)[0], f"spacemail_restore_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    plain = (server + "/" + name).replace("postgresql+psycopg://", "postgresql://")
    done = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-d", plain, str(dump)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    def cleanup():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return server + "/" + name, cleanup
