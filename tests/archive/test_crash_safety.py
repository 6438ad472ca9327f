"""Kill the fetching worker with SIGKILL at random points: nothing lost, nothing twice, the server emptied."""
import hashlib
import os
import random
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select, update

from tests.archive.helpers import message, team_with_account
from tests.conftest import ROOT, TEST_KEY
from webapp.archive.models import FetchRun, MailAccount, Message, MessageRaw

MESSAGES = 2000
KILLS = 10


def runner_env(app, tmp_path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "SPACEMAIL_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "SPACEMAIL_REDIS_URL": app.config["REDIS_URL"], "SPACEMAIL_ENCRYPTION_KEYS": TEST_KEY,
            "SPACEMAIL_SECRET_KEY": "test", "SPACEMAIL_INSTANCE_DIR": str(tmp_path), "SPACEMAIL_FETCH_BATCH_SIZE": "50"}


def start_runner(account_id, env):
    return subprocess.Popen([sys.executable, "-m", "tests.archive.fetch_runner", str(account_id)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("protocol", ["imaps", "pops"])
def test_sigkill_at_random_points_loses_and_doubles_nothing(app, db, make_user, dovecot, tmp_path, protocol):
    _, space, account, user = team_with_account(make_user, dovecot, protocol)
    originals = [message(i) for i in range(MESSAGES)]
    dovecot.deliver(user, originals)
    env = runner_env(app, tmp_path)
    rnd = random.Random(protocol)
    kills = 0
    for _ in range(KILLS * 3):
        if kills == KILLS:
            break
        proc = start_runner(account.id, env)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(rnd.uniform(0.0, 0.25))
        proc.kill()
        out, err = proc.communicate(timeout=30)
        if proc.returncode == -9:
            kills += 1
        # A killed worker's lease runs out; here time passes at once.
        db.session.execute(update(MailAccount).values(lease_owner=None, lease_until=None))
        db.session.execute(update(FetchRun).where(FetchRun.state.in_(["queued", "running"])).values(state="failed"))
        db.session.commit()
    assert kills == KILLS, "the fetch finished before it could be killed often enough"
    assert len(dovecot.mailbox_files(user)) > 0, "some mail should still wait on the server"

    for _ in range(3):  # as the next scheduled fetch would: a killed POP3 session's lock can outlast Dovecot's wait
        finish = start_runner(account.id, env)
        out, err = finish.communicate(timeout=300)
        if not (out.splitlines() or [""])[-1].startswith("failed mailbox_in_use"):
            break
    assert finish.returncode == 0 and out.splitlines()[-1].startswith("done"), err[-2000:]

    db.session.expire_all()
    stored = sorted(hashlib.sha256(raw).hexdigest()
                    for raw in db.session.scalars(select(MessageRaw.raw).join(Message).where(Message.space_id == space.id)))
    assert stored == sorted(hashlib.sha256(m).hexdigest() for m in originals)  # every message, exactly once
    assert db.session.scalar(select(func.count(Message.id))) == MESSAGES
    assert dovecot.mailbox_files(user) == []


def test_another_clients_deleted_flag_survives_our_expunge(app, db, make_user, dovecot, run_jobs):
    import imaplib
    import ssl

    from tests.archive.test_fetch import fetch_once

    _, space, account, user = team_with_account(make_user, dovecot, "imaps")
    dovecot.deliver(user, [message(i) for i in range(3)])
    other = imaplib.IMAP4_SSL("localhost", dovecot.ports["imaps"],
                              ssl_context=ssl.create_default_context(cadata=dovecot.ca.cert_pem))
    other.login(user, "secret pw")
    other.select("INBOX")
    other.store("1", "+FLAGS", r"(\Deleted)")  # marked by another client, not expunged
    run = fetch_once(account, run_jobs)
    assert (run.fetched, run.deleted) == (2, 2)
    other.noop()  # the other session learns of our expunges at a command boundary
    typ, data = other.search(None, "ALL")
    assert len(data[0].split()) == 1  # the other client's message is still there
    typ, flags = other.fetch("1", "(FLAGS)")
    assert b"\\Deleted" in flags[0]
    other.logout()


def test_uidvalidity_change_refetches_without_doubling(app, db, make_user, dovecot, run_jobs):
    from tests.archive.test_fetch import fetch_once

    _, space, account, user = team_with_account(make_user, dovecot, "imaps", keep_on_server=True)
    dovecot.deliver(user, [message(i) for i in range(3)])
    fetch_once(account, run_jobs)
    # The server's folder is rebuilt: Dovecot hands out a new UIDVALIDITY and new UIDs.
    for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.cache", "dovecot.index.log"):
        path = dovecot.maildir(user) / name
        if path.exists():
            path.unlink()
    old = account.imap_uidvalidity
    time.sleep(1.1)  # UIDVALIDITY is a timestamp
    run = fetch_once(account, run_jobs)
    db.session.refresh(account)
    assert account.imap_uidvalidity != old
    assert (run.fetched, run.duplicates) == (0, 3)
    assert db.session.scalar(select(func.count(Message.id))) == 3


def test_our_deletion_cut_short_between_store_and_expunge_is_finished(app, db, make_user, dovecot, run_jobs):
    """A worker killed after UID STORE \\Deleted but before UID EXPUNGE: the next fetch expunges those, once."""
    import imaplib
    import ssl

    from tests.archive.test_fetch import archived_hashes, fetch_once
    from webapp.archive.models import SeenMessage

    _, space, account, user = team_with_account(make_user, dovecot, "imaps", keep_on_server=True)
    originals = [message(i) for i in range(4)]
    dovecot.deliver(user, originals)
    fetch_once(account, run_jobs)  # archived, kept on the server
    other = imaplib.IMAP4_SSL("localhost", dovecot.ports["imaps"],
                              ssl_context=ssl.create_default_context(cadata=dovecot.ca.cert_pem))
    other.login(user, "secret pw")
    other.select("INBOX")
    other.store("1:4", "+FLAGS", r"(\Deleted)")  # what our STORE did before the worker died
    other.logout()
    account.keep_on_server = False
    db.session.commit()
    run = fetch_once(account, run_jobs)
    assert (run.fetched, run.deleted) == (0, 4)
    assert dovecot.mailbox_files(user) == []
    assert archived_hashes(space) == sorted(hashlib.sha256(m).hexdigest() for m in originals)
    assert all(s.deleted_on_server for s in db.session.scalars(select(SeenMessage)))
