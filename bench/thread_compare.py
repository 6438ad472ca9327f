"""Threads as Spacemail makes them, against notmuch's, on the benchmark corpus and on CPython's email test messages.

    .venv/bin/python bench/thread_compare.py [N]   ->   a report on stdout (kept in docs/threading.md)

Both read the same messages; each message is named by its Message-ID. For each corpus the report gives the
number of threads on each side and every message whose thread-mates differ, with the two groups, so a reader can
say who is right."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import make_app, space_id  # noqa: E402
from corpus import generate  # noqa: E402

CPYTHON = Path("/usr/lib/python3.11/test/test_email/data")


def notmuch_partition(raws: list[bytes], workdir: Path) -> list[frozenset]:
    maildir = workdir / "mail"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(raws):
        (maildir / "cur" / f"{i}.msg:2,S").write_bytes(raw)
    config = workdir / "notmuch-config"
    config.write_text(f"[database]\npath={maildir}\n[new]\ntags=\n[maildir]\nsynchronize_flags=false\n")
    env = {**os.environ, "NOTMUCH_CONFIG": str(config)}
    subprocess.run(["notmuch", "new", "--quiet"], env=env, check=True, capture_output=True)
    threads = subprocess.run(["notmuch", "search", "--output=threads", "*"], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
    groups = []
    for thread in threads:
        ids = subprocess.run(["notmuch", "search", "--output=messages", thread], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        groups.append(frozenset(i.removeprefix("id:") for i in ids))
    return groups


def spacemail_partition(raws: list[bytes], workdir: Path) -> list[frozenset]:
    from sqlalchemy import select

    from webapp.archive import ingest
    from webapp.archive.models import Message
    from webapp.extensions import db

    app = make_app(f"sqlite:///{workdir / 'spacemail.db'}")
    sid = space_id(app)
    with app.app_context():
        for start in range(0, len(raws), 200):
            ingest.store_batch(sid, None, raws[start:start + 200])
            db.session.commit()
        groups: dict[int, set] = {}
        for msgid, thread_id in db.session.execute(select(Message.message_id_header, Message.thread_id)):
            if msgid:
                groups.setdefault(thread_id, set()).add(msgid)
    return [frozenset(g) for g in groups.values()]


def compare(name: str, raws: list[bytes]) -> list[str]:
    workdir = Path(tempfile.mkdtemp(prefix="thread-compare-"))
    try:
        ours, theirs = spacemail_partition(raws, workdir), notmuch_partition(raws, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    known = set().union(*ours) & set().union(*theirs)
    # Several messages may share one Message-ID (notmuch keeps one of them): compare the groups of ids.
    ours = list({frozenset(g & known) for g in ours if g & known})
    theirs = list({frozenset(g & known) for g in theirs if g & known})
    of_ours = {m: g for g in ours for m in g}
    of_theirs = {m: g for g in theirs for m in g}
    differ = sorted(m for m in known if of_ours[m] != of_theirs[m])
    lines = [f"## {name}", "", f"{len(raws)} messages, {len(known)} with a Message-ID both read: "
             f"Spacemail {len(ours)} threads, notmuch {len(theirs)} threads; {len(differ)} messages placed "
             "differently.", ""]
    shown = set()
    for m in differ:
        pair = (of_ours[m], of_theirs[m])
        if pair in shown:
            continue
        shown.add(pair)
        lines.append(f"- `{m}`: Spacemail groups it with {len(of_ours[m]) - 1} other(s) "
                     f"{sorted(of_ours[m] - {m})[:5]}; notmuch with {len(of_theirs[m]) - 1} "
                     f"{sorted(of_theirs[m] - {m})[:5]}")
    return lines + [""]


def messy() -> list[bytes]:
    """Broken threads as real mail has them: replies to a parent that never arrived, a reply naming only its
    missing parent, forwards, and a junk reference ("<yes>") shared by unrelated messages."""
    def mail(msgid, subject, refs=(), reply=None):
        lines = ["From: a@example.org", f"Subject: {subject}", f"Message-ID: <{msgid}>",
                 "Date: Mon, 5 Jan 2026 10:00:00 +0000"]
        if refs:
            lines.append("References: " + " ".join(f"<{r}>" for r in refs))
        if reply:
            lines.append(f"In-Reply-To: <{reply}>")
        return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()

    return [mail("r1@x", "Re: Plan", ["root@x"], "root@x"), mail("r2@x", "Re: Plan", ["root@x"], "root@x"),
            mail("mid@x", "Re: Plan", ["root@x"], "root@x"), mail("r3@x", "Re: Plan", ["mid@x"], "mid@x"),
            mail("orig@x", "Budget"), mail("fwd@x", "Fwd: Budget"), mail("aw@x", "AW: Budget"),
            mail("u1@x", "Lunch", ["yes"], "yes"), mail("u2@x", "Printer", ["yes"], "yes")]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    report = ["# Threads: Spacemail against notmuch", "", "Made by `bench/thread_compare.py`.", ""]
    report += compare(f"Benchmark corpus ({n} messages, bench/corpus.py seed 1)", list(generate(n, 1)))
    report += compare("Broken threads (written for issue 16)", messy())
    if CPYTHON.is_dir():
        report += compare("CPython's email test messages", [p.read_bytes() for p in sorted(CPYTHON.glob("msg_*.txt"))])
    print("\n".join(report))


if __name__ == "__main__":
    main()
