"""The minute sweep: fetches whose worker died are settled; connection-test passwords do not linger."""
from datetime import timedelta

from sqlalchemy import func, select

from tests.archive.helpers import team_with_account
from webapp.archive import services
from webapp.archive.models import ConnectionTest, FetchRun
from webapp.jobs import JobRun
from webapp.spaces.models import Space
from webapp.timeutil import utcnow
from workers.system import sweep


def test_a_running_fetch_whose_lease_ran_out_is_marked_failed(app, db, make_user, dovecot):
    _, space, account, _ = team_with_account(make_user, dovecot, "imaps")
    run = services.queue_account_fetch(account, "manual")
    run.state = "running"
    account.lease_owner, account.lease_until = "dead-worker", utcnow() + timedelta(minutes=1)
    db.session.commit()
    sweep()
    db.session.refresh(run)
    assert run.state == "running"  # the lease is still held: the worker may be alive
    account.lease_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    sweep()
    db.session.refresh(run)
    assert run.state == "failed" and run.error_class == "abandoned"
    assert services.queue_account_fetch(account, "manual").id != run.id  # a new fetch can start


def test_fetch_new_mail_takes_over_a_run_whose_worker_died_without_waiting_for_the_sweep(app, db, make_user,
                                                                                       dovecot):
    _, space, account, _ = team_with_account(make_user, dovecot, "imaps")
    run = services.queue_account_fetch(account, "manual")
    run.state = "running"
    account.lease_owner, account.lease_until = "worker-on-a-dead-host", utcnow() + timedelta(minutes=1)
    db.session.commit()
    assert services.queue_account_fetch(account, "manual").id == run.id  # alive as far as anyone knows
    account.lease_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    again = services.queue_account_fetch(account, "manual")
    db.session.commit()
    db.session.refresh(run)
    assert again.id != run.id and again.state == "queued"
    assert run.state == "failed" and run.error_class == "abandoned"


def test_connection_test_passwords_are_wiped_and_old_tests_dropped(app, db, make_user):
    from webapp.spaces.services import create_site_space
    from webapp.archive.services import AccountData

    space = create_site_space(make_user("ann"), "TEAM", "Team")
    data = AccountData(name="a", protocol="imaps", host="mail.example.org", port=993, username="u",
                       password="pw", require_starttls=False, folder="INBOX", trusted_ca_pem="")
    run = services.start_connection_test(space, data, None)
    db.session.commit()
    test = db.session.scalar(select(ConnectionTest))
    assert test.password_encrypted
    run.created_at = utcnow() - timedelta(minutes=16)  # its job never ran
    db.session.commit()
    sweep()
    db.session.refresh(test)
    assert test.password_encrypted is None
    run.created_at = utcnow() - timedelta(days=2)
    db.session.commit()
    sweep()
    assert db.session.scalar(select(func.count(ConnectionTest.id))) == 0
    assert db.session.scalar(select(func.count(JobRun.id))) == 0
    assert db.session.get(Space, space.id) is not None
