"""Servers that cannot remove fetched mail the safe way (no UIDPLUS, as GNU Mailutils' imap4d): archiving never
stops, the account says plainly what was not removed, MOVE is used where offered, and a plain EXPUNGE only for a
mailbox marked Spacemail's alone and only when no one else marked mail for deletion. Real Dovecot, told to
advertise those capabilities."""
import imaplib
import ssl


import pytest
from sqlalchemy import func, select

from tests.archive.helpers import message, team_with_account
from tests.archive.test_fetch import fetch_once
from webapp.archive.models import Message
from webapp.extensions import db


def count(space) -> int:
    return db.session.scalar(select(func.count(Message.id)).where(Message.space_id == space.id))


def test_without_uidplus_everything_is_archived_and_the_account_says_it_stays(app, make_user,
                                                                              dovecot_no_uidplus, run_jobs, client,
                                                                              login):
    app.config["FETCH_BATCH_SIZE"] = 2
    admin, space, account, user = team_with_account(make_user, dovecot_no_uidplus, "imaps")
    dovecot_no_uidplus.deliver(user, [message(i) for i in range(5)])
    run = fetch_once(account, run_jobs)
    assert (run.state, run.fetched, run.deleted) == ("done", 5, 0)
    assert run.error_class == "not_removed" and "Archived, but could not be removed" in run.error_message
    assert count(space) == 5 and len(dovecot_no_uidplus.mailbox_files(user)) == 5
    dovecot_no_uidplus.deliver(user, [message(10)])
    again = fetch_once(account, run_jobs)  # the leftovers do not stop the new mail
    assert (again.state, again.fetched) == ("done", 1) and count(space) == 6
    login(admin)
    page = client.get("/spaces/TEAM/mail-accounts").get_data(as_text=True)
    assert "could not be removed from the server" in page and "1 new" in page


def test_a_mailbox_that_is_spacemails_alone_is_emptied_with_a_checked_expunge(app, make_user, dovecot_no_uidplus,
                                                                             run_jobs):
    admin, space, account, user = team_with_account(make_user, dovecot_no_uidplus, "imaps")
    account.exclusive_mailbox = True
    db.session.commit()
    dovecot_no_uidplus.deliver(user, [message(i) for i in range(3)])
    run = fetch_once(account, run_jobs)
    assert (run.state, run.fetched, run.deleted, run.error_class) == ("done", 3, 3, None)
    assert dovecot_no_uidplus.mailbox_files(user) == []

    # Another client marks a message for deletion: a plain EXPUNGE would take it too, so nothing is expunged.
    dovecot_no_uidplus.deliver(user, [message(20), message(21)])
    imap = imaplib.IMAP4_SSL("localhost", dovecot_no_uidplus.ports["imaps"],
                             ssl_context=ssl.create_default_context(cadata=dovecot_no_uidplus.ca.cert_pem))
    imap.login(user, "secret pw")
    imap.select("INBOX")
    imap.store("1", "+FLAGS", r"(\Deleted)")
    imap.logout()
    run = fetch_once(account, run_jobs)
    assert (run.state, run.fetched, run.deleted) == ("done", 1, 0)
    assert run.error_class == "not_removed" and "Another client marked" in run.error_message
    assert len(dovecot_no_uidplus.mailbox_files(user)) == 2


def test_with_move_but_no_uidplus_fetched_mail_goes_to_the_trash(app, make_user, dovecot_move_only, run_jobs):
    admin, space, account, user = team_with_account(make_user, dovecot_move_only, "imaps")
    dovecot_move_only.deliver(user, [message(99)], folder="Trash")  # the folder exists (and holds one message)
    dovecot_move_only.deliver(user, [message(i) for i in range(3)])
    run = fetch_once(account, run_jobs)
    assert (run.state, run.fetched, run.deleted, run.error_class) == ("done", 3, 3, None)
    inbox = [p for sub in ("cur", "new") for p in (dovecot_move_only.maildir(user) / sub).iterdir()]
    trash = [p for sub in ("cur", "new") for p in (dovecot_move_only.maildir(user) / ".Trash" / sub).iterdir()]
    assert inbox == [] and len(trash) == 4


def test_connection_test_shows_every_capability_and_how_mail_leaves(app, make_user, dovecot, dovecot_no_uidplus,
                                                                   run_jobs, client, login):
    from tests.archive.helpers import PORT_OF

    admin, space, account, user = team_with_account(make_user, dovecot, "imaps")
    login(admin)
    for server, words in ((dovecot, "removed from the server (UID EXPUNGE)"),
                          (dovecot_no_uidplus, "stays on the server")):
        name, password = server.add_user()
        form = {"name": "t", "protocol": "imaps", "host": "localhost", "port": str(server.ports[PORT_OF["imaps"]]),
                "username": name, "password": password, "folder": "INBOX", "trusted_ca_pem": server.ca.cert_pem,
                "auth_method": "password"}
        tested = client.htmx_post("/spaces/TEAM/mail-accounts/test", data=form).get_data(as_text=True)
        run_jobs()
        run_id = tested.split("/mail-accounts/tests/")[1].split('"')[0]
        result = client.htmx_get(f"/spaces/TEAM/mail-accounts/tests/{run_id}").get_data(as_text=True)
        assert "Connection works." in result and words in result, result
        if server is dovecot:
            offered = result.split('class="mono">')[1].split("</p>")[0].split()
            assert {"UIDPLUS", "WITHIN", "BINARY"} <= set(offered)  # the last sorted ones too


@pytest.mark.parametrize("protocol", ["pops", "pop"])
def test_gnu_mailutils_pop3_fetches_and_empties_the_mailbox(app, make_user, mailutils, run_jobs, protocol):
    app.config["FETCH_BATCH_SIZE"] = 3
    admin, space, account, user = team_with_account(make_user, mailutils, protocol)
    mailutils.deliver(user, [message(i) for i in range(7)])
    run = fetch_once(account, run_jobs)
    assert (run.state, run.error_message, run.fetched, run.deleted) == ("done", None, 7, 7)
    assert count(space) == 7 and mailutils.mailbox_files(user) == []


@pytest.mark.parametrize("protocol", ["imaps", "imap"])
def test_gnu_mailutils_imap_archives_everything_and_empties_only_an_exclusive_mailbox(app, make_user, mailutils,
                                                                                      run_jobs, protocol):
    """The server where two thirds of a mailbox were never archived (issue 16): now all of it is, every time."""
    app.config["FETCH_BATCH_SIZE"] = 3
    admin, space, account, user = team_with_account(make_user, mailutils, protocol)
    mailutils.deliver(user, [message(i) for i in range(10)])
    run = fetch_once(account, run_jobs)
    assert (run.state, run.fetched, run.deleted, run.error_class) == ("done", 10, 0, "not_removed")
    assert count(space) == 10 and len(mailutils.mailbox_files(user)) == 10
    account.exclusive_mailbox = True
    db.session.commit()
    mailutils.deliver(user, [message(i) for i in range(10, 14)])
    run = fetch_once(account, run_jobs)
    assert (run.state, run.fetched, run.error_class) == ("done", 4, None)
    assert count(space) == 14 and mailutils.mailbox_files(user) == []
