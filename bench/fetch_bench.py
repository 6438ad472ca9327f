"""B1, B1p, B2, B7 and B8's fetch: Spacemail's fetch against mbsync and fetchmail, on one Dovecot, same mail.

Each run puts the corpus into a new mailbox, lets Dovecot index it (one listing, so neither side pays for
that), then times the whole fetch: Spacemail's worker process (download, archive, commit, delete on the
server), mbsync (FSync on, to a Maildir) and fetchmail (POP3, an MDA that fsyncs each message
into a Maildir). TLS (IMAPS, POP3S) with verified certificates on every side."""
import base64
import imaplib
import json
import os
import poplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

from common import BENCH, WORKDIR, Result, free_port, make_app, median, say, space_id, wait_for_port
from tests.archive.helpers import account_data
from tests.mailservers import PASSWORD as MAILBOX_PASSWORD
from tests.mailservers import start_dovecot


class FetchBench:
    def __init__(self, raws: list[bytes]) -> None:
        self.raws = raws
        self.dovecot = start_dovecot()
        self.ca_file = WORKDIR / "dovecot-ca.pem"
        self.ca_file.write_text(self.dovecot.ca.cert_pem)
        self.context = ssl.create_default_context(cadata=self.dovecot.ca.cert_pem)

    def close(self) -> None:
        self.dovecot.stop()

    def mailbox(self, raws: list[bytes] | None = None) -> str:
        """A new mailbox user holding `raws` (the corpus by default), indexed by Dovecot."""
        user, _ = self.dovecot.add_user()
        self.dovecot.deliver(user, self.raws if raws is None else raws)
        imap = imaplib.IMAP4_SSL("localhost", self.dovecot.ports["imaps"], ssl_context=self.context)
        imap.login(user, MAILBOX_PASSWORD)
        imap.select("INBOX")
        imap.uid("FETCH", "1:*", "(UID RFC822.SIZE FLAGS)")
        imap.logout()
        pop = poplib.POP3_SSL("localhost", self.dovecot.ports["pop3s"], context=self.context)
        pop.user(user)
        pop.pass_(MAILBOX_PASSWORD)
        pop.uidl()
        pop.quit()
        return user

    def left_on_server(self, user: str) -> int:
        return len(self.dovecot.mailbox_files(user))

    def spacemail(self, protocol: str, user: str, url: str, port: int | None = None,
                  expect: int | None = None) -> dict:
        """Spacemail's fetch of `user`'s mailbox into a new archive at `url`, in a worker process of its own."""
        from webapp.archive.services import create_account
        from webapp.extensions import db
        from webapp.spaces.models import Space

        app = make_app(url)
        with app.app_context():
            overrides = {"port": port} if port else {}
            account = create_account(db.session.get(Space, space_id(app)),
                                     account_data(self.dovecot, protocol, user, MAILBOX_PASSWORD, **overrides))
            db.session.commit()
            account_id = account.id
            db.engine.dispose()
        out = subprocess.run([sys.executable, str(BENCH / "fetch_worker.py"), str(account_id)], capture_output=True,
                             text=True, env={**os.environ, "SPACEMAIL_DATABASE_URL": url})
        if out.returncode != 0:
            raise RuntimeError(f"the fetch worker failed: {out.stderr[-3000:]}")
        data = json.loads(out.stdout.strip().splitlines()[-1])
        expect = len(self.raws) if expect is None else expect
        if data["state"] != "done" or data["fetched"] != expect or self.left_on_server(user):
            raise RuntimeError(f"Spacemail's fetch did not archive and remove all {expect} messages: {data}")
        return data

    def mbsync(self, user: str) -> float:
        """Seconds for mbsync to copy the mailbox to a Maildir (FSync on)."""
        home = WORKDIR / f"mbsync-{user}"
        (home / "mail").mkdir(parents=True)
        config = home / "mbsyncrc"
        config.write_text(f"""FSync yes

IMAPAccount bench
Host localhost
Port {self.dovecot.ports["imaps"]}
User {user}
Pass "{MAILBOX_PASSWORD}"
SSLType IMAPS
CertificateFile {self.ca_file}

IMAPStore remote
Account bench

MaildirStore local
Path {home}/mail/
Inbox {home}/mail/INBOX

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
""")
        started = time.perf_counter()
        out = subprocess.run(["mbsync", "-c", str(config), "-a", "-q"], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        copied = sum(1 for sub in ("cur", "new") for _ in (home / "mail" / "INBOX" / sub).iterdir())
        if out.returncode != 0 or copied != len(self.raws):
            raise RuntimeError(f"mbsync copied {copied} of {len(self.raws)}: {out.stderr[-2000:]}")
        return seconds

    def fetchmail(self, user: str) -> float:
        """Seconds for fetchmail to fetch, deliver and delete the mailbox over POP3S.

        It delivers through an MDA that fsyncs each message into a Maildir. (Delivering by SMTP to an aiosmtpd
        sink ran at ~22 messages/s, each message held ~40 ms by delayed ACKs: a flattering reference.)"""
        home = WORKDIR / f"fetchmail-{user}"
        for sub in ("tmp", "new", "cur"):
            (home / "Maildir" / sub).mkdir(parents=True)
        mda = home / "deliver.sh"
        mda.write_text('#!/bin/sh\nf=$(mktemp "$1/tmp/XXXXXXXXXXXX") && cat > "$f" && sync "$f" && mv "$f" "$1/new/"\n')
        mda.chmod(0o755)
        rc = home / "fetchmailrc"
        rc.write_text(f'set no bouncemail\npoll localhost protocol POP3 port {self.dovecot.ports["pop3s"]}:\n'
                      f'  user "{user}" there with password "{MAILBOX_PASSWORD}" is "bench" here\n'
                      f'  options ssl sslcertck sslcertfile "{self.ca_file}" fetchall nokeep\n'
                      f'  mda "{mda} {home}/Maildir"\n')
        rc.chmod(0o600)
        started = time.perf_counter()
        out = subprocess.run(["fetchmail", "-f", str(rc), "--nosyslog", "--silent"], capture_output=True,
                             text=True, env={**os.environ, "FETCHMAILHOME": str(home)})
        seconds = time.perf_counter() - started
        delivered = sum(1 for _ in (home / "Maildir" / "new").iterdir())
        if out.returncode != 0 or delivered != len(self.raws) or self.left_on_server(user):
            raise RuntimeError(f"fetchmail delivered {delivered} of {len(self.raws)} (exit {out.returncode}): "
                               f"{out.stderr[-2000:]}")
        return seconds


def rate_result(rid, work, ours: list[float], n, reference=None, theirs: list[float] | None = None,
                goal_ratio=None, goal=None) -> Result:
    """Messages per second (median over runs) and, with a reference, our rate over theirs."""
    rates = [n / s for s in ours]
    result = Result(rid, work, median(rates), "messages/s", rates)
    if reference:
        their_rates = [n / s for s in theirs]
        result.reference, result.reference_figure, result.reference_samples = reference, median(their_rates), their_rates
        result.ratio = result.figure / result.reference_figure
    if goal_ratio is not None:
        result.goal, result.met = goal or f"ratio ≥ {goal_ratio}", result.ratio >= goal_ratio
    return result


def run(raws: list[bytes], runs: int, urls, big_mb: int = 50) -> list[Result]:
    """urls(name) -> a new database URL; urls.postgres(name) -> one on PostgreSQL or None."""
    n = len(raws)
    bench = FetchBench(raws)
    results = []
    try:
        ours, theirs, peaks = [], [], []
        for i in range(runs):
            say(f"B1 run {i + 1}/{runs}: mbsync, then Spacemail over IMAPS ({n} messages)")
            theirs.append(bench.mbsync(bench.mailbox()))
            data = bench.spacemail("imaps", bench.mailbox(), urls.sqlite(f"b1-{i}"))
            ours.append(data["seconds"])
            peaks.append(max(data["peak_rss_kb"], data["parser_peak_rss_kb"]) / 1024)
        b1 = rate_result("B1", "fetch over IMAPS into an empty archive, commit, delete on the server (SQLite)",
                         ours, n, "mbsync 1.4, FSync on, to a Maildir", theirs, 1.0)
        results.append(b1)

        ours, theirs = [], []
        for i in range(runs):
            say(f"B1p run {i + 1}/{runs}: fetchmail, then Spacemail over POP3S")
            theirs.append(bench.fetchmail(bench.mailbox()))
            ours.append(bench.spacemail("pops", bench.mailbox(), urls.sqlite(f"b1p-{i}"))["seconds"])
        results.append(rate_result("B1p", "the same over POP3S", ours, n,
                                   "fetchmail 6.4 over POP3S, an MDA fsyncing each message into a Maildir", theirs, 1.0))

        ours = []
        proxy_port = free_port()
        proxy = subprocess.Popen([sys.executable, str(BENCH / "latency_proxy.py"), str(proxy_port),
                                  str(bench.dovecot.ports["imaps"]), "20"])
        try:
            wait_for_port(proxy_port)
            for i in range(runs):
                say(f"B2 run {i + 1}/{runs}: Spacemail over IMAPS through a 20 ms round-trip proxy")
                ours.append(bench.spacemail("imaps", bench.mailbox(), urls.sqlite(f"b2-{i}"), port=proxy_port)["seconds"])
        finally:
            proxy.terminate()
            proxy.wait()
        b2 = rate_result("B2", "B1 through a loopback proxy adding 20 ms round trip", ours, n)
        b2.reference, b2.reference_figure, b2.reference_samples = "Spacemail's own B1", b1.figure, b1.samples
        b2.ratio = b2.figure / b1.figure
        b2.goal, b2.met = "≥ 0.8 of B1", b2.ratio >= 0.8
        results.append(b2)

        b7 = Result("B7", "worker peak RSS over B1 (the worker's or its parser process's, the larger)", max(peaks),
                    "MB", peaks, goal="≤ 200 MB", met=max(peaks) <= 200)
        results.append(b7)
        results.append(big_message(bench, urls, big_mb))

        pg_rates = []
        for i in range(runs):
            url = urls.postgres(f"b1-{i}")
            if url is None:
                break
            say(f"B8 run {i + 1}/{runs}: Spacemail over IMAPS into PostgreSQL")
            pg_rates.append(n / bench.spacemail("imaps", bench.mailbox(), url)["seconds"])
        if pg_rates:
            b8 = Result("B8 fetch", "B1 on PostgreSQL", median(pg_rates), "messages/s", pg_rates,
                        "Spacemail's B1 on SQLite", b1.figure, b1.samples, median(pg_rates) / b1.figure,
                        "ratio ≥ 0.8", median(pg_rates) / b1.figure >= 0.8)
            results.append(b8)
    finally:
        bench.close()
    return results


def big_message(bench: FetchBench, urls, size_mb: int = 50) -> Result:
    """B7: one message of `size_mb` (a base64 attachment); the worker's peak above its baseline, over the size."""
    blob = base64.encodebytes(os.urandom(size_mb * 1024 * 1024 * 3 // 4)).replace(b"\n", b"\r\n")
    raw = (b"From: big@example.org\r\nTo: team@example.org\r\nSubject: A big one\r\nMessage-ID: <big@example.org>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n"
           b"\r\nSee attached.\r\n--b\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"--b--\r\n")
    say(f"B7: one {len(raw) / 2 ** 20:.0f} MB message over IMAPS")
    samples = []
    for i in range(3):
        data = bench.spacemail("imaps", bench.mailbox([raw]), urls.sqlite(f"b7-{i}"), expect=1)
        samples.append((data["peak_rss_kb"] - data["baseline_rss_kb"]) * 1024 / len(raw))
    figure = median(samples)
    return Result("B7 big", f"fetching one {len(raw) / 2 ** 20:.0f} MB message: worker peak above its baseline",
                  figure, "× the message size", samples, goal="< 4×", met=figure < 4)


if __name__ == "__main__":
    import argparse

    import corpus
    from common import Urls

    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=2000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    for r in run(list(corpus.generate(args.n, 7)), args.runs, Urls()):
        print(r)
    print(Path(WORKDIR))
