"""A worker process for crash tests: fetch one account (SPACEMAIL_* from the environment), then exit.

python -m tests.archive.fetch_runner ACCOUNT_ID   prints "ready" once it starts fetching.
"""
import resource
import sys

from webapp import create_app
from webapp.archive import fetching, services
from webapp.archive.models import MailAccount
from webapp.extensions import db


def own_peak_kb() -> int:
    """This process's peak resident set since it started (VmHWM). Not getrusage's ru_maxrss: Linux carries the
    peak of the process that started this one across the exec (the test suite's, ~400 MB by the time it runs)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def main(account_id: int) -> None:
    app = create_app()
    with app.app_context():
        account = db.session.get(MailAccount, account_id)
        run = services.queue_account_fetch(account, "manual")
        db.session.commit()
        print("ready", flush=True)
        fetching.fetch(run)
        db.session.refresh(run)
        peak_kb = max(own_peak_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # a parser process
        print(run.state, run.error_class or "-", run.fetched, run.deleted, peak_kb, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
