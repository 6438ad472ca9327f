"""B3: import the corpus into an empty archive (parse, thread, index), against `notmuch new` on the same mail.

Spacemail imports an mbox of the corpus the way an uploaded mbox is imported (webapp.archive.importing, one
commit per batch, durable); notmuch indexes a Maildir holding the same messages, one file each."""
import shutil
import subprocess
import time
from pathlib import Path

from common import WORKDIR, Result, make_app, median, say, space_id

NOTMUCH_CONFIG = """[database]
path={maildir}
[user]
name=Bench
primary_email=bench@example.org
[new]
tags=unread;inbox;
ignore=
[search]
exclude_tags=
[maildir]
synchronize_flags=false
"""


def write_mbox(raws: list[bytes], path: Path) -> Path:
    with open(path, "wb") as f:
        for raw in raws:
            f.write(b"From bench@example.org Mon Jan  1 00:00:00 2024\n")
            f.write(raw.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From "))
            f.write(b"\n")
    return path


def write_maildir(raws: list[bytes], root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(raws):
        (root / "cur" / f"{i}.bench:2,S").write_bytes(raw)
    return root


def notmuch_new(maildir: Path) -> float:
    """Seconds for `notmuch new` to index `maildir` from scratch."""
    shutil.rmtree(maildir / ".notmuch", ignore_errors=True)
    config = maildir.parent / f"{maildir.name}.notmuch-config"
    config.write_text(NOTMUCH_CONFIG.format(maildir=maildir))
    started = time.perf_counter()
    out = subprocess.run(["notmuch", f"--config={config}", "new", "--quiet"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"notmuch new failed: {out.stderr[-2000:]}")
    return seconds


def notmuch_count(maildir: Path) -> int:
    config = maildir.parent / f"{maildir.name}.notmuch-config"
    out = subprocess.run(["notmuch", f"--config={config}", "count", "--output=messages", "*"], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip())


def spacemail_import(mbox: Path, url: str, expect: int) -> float:
    """Seconds for Spacemail's import of `mbox` into a new archive at `url`."""
    from sqlalchemy import func, select

    from webapp.archive.importing import run_import
    from webapp.archive.models import ArchiveImport, Message
    from webapp.extensions import db
    from webapp.jobs import JobRun

    app = make_app(url)
    upload = WORKDIR / "import.upload"
    shutil.copyfile(mbox, upload)  # the import removes its upload when done
    with app.app_context():
        run = JobRun(kind="import")
        db.session.add(run)
        db.session.flush()
        db.session.add(ArchiveImport(job_run_id=run.id, space_id=space_id(app), filename="corpus.mbox",
                                     path=str(upload)))
        db.session.commit()
        started = time.perf_counter()
        run_import(run)
        db.session.commit()
        seconds = time.perf_counter() - started
        stored = db.session.scalar(select(func.count(Message.id)))
        db.engine.dispose()
    if stored != expect:
        raise RuntimeError(f"the import stored {stored} of {expect} messages")
    return seconds


def run(raws: list[bytes], runs: int, urls) -> list[Result]:
    n = len(raws)
    mbox = write_mbox(raws, WORKDIR / "b3.mbox")
    maildir = write_maildir(raws, WORKDIR / "b3-maildir")
    ours, theirs = [], []
    for i in range(runs):
        say(f"B3 run {i + 1}/{runs}: notmuch new, then Spacemail's import ({n} messages)")
        theirs.append(n / notmuch_new(maildir))
        if notmuch_count(maildir) != n:
            raise RuntimeError("notmuch did not index every message")
        ours.append(n / spacemail_import(mbox, urls.sqlite(f"b3-{i}"), n))
    result = Result("B3", "import an mbox into an empty archive: parse, thread, index (SQLite)", median(ours),
                    "messages/s", ours, "notmuch new on a Maildir of the same messages", median(theirs), theirs)
    result.ratio = result.figure / result.reference_figure
    result.goal, result.met = "ratio ≥ 8", result.ratio >= 8  # issue 20 (5 before it)
    results = [result]
    pg_rates = []
    for i in range(runs):
        url = urls.postgres(f"b3_{i}")
        if url is None:
            break
        say(f"B8 import run {i + 1}/{runs}: Spacemail's import into PostgreSQL ({n} messages)")
        pg_rates.append(n / spacemail_import(mbox, url, n))
    if pg_rates:
        results.append(Result("B8 import", "B3's import into PostgreSQL", median(pg_rates), "messages/s", pg_rates,
                              "Spacemail's B3 on SQLite", result.figure, result.samples,
                              median(pg_rates) / result.figure, "≥ 1,000 messages/s", median(pg_rates) >= 1000))
    return results
