"""Builders for archive tests: a team space with a mail account on the test Dovecot, and messages."""
import email.utils
import random
from datetime import datetime, timedelta, timezone

from webapp.archive.services import AccountData, create_account
from webapp.extensions import db
from webapp.security import secret_box
from webapp.settings import SiteSettings
from webapp.spaces.services import create_site_space

PORT_OF = {"imap": "imap", "imaps": "imaps", "pop": "pop3", "pops": "pop3s"}


def allow_loopback() -> None:
    SiteSettings.get().mail_host_allowlist = "127.0.0.1\n::1"
    db.session.commit()


def read_from_dovecot(box, dovecot, address: str) -> str:
    """A mailbox the site reads for itself (replies, bounces) set to a new Dovecot user over IMAPS; its username."""
    username, password = dovecot.add_user()
    box.enabled, box.address = True, address
    box.protocol, box.host, box.port = "imaps", "localhost", dovecot.ports["imaps"]
    box.username, box.password_encrypted = username, secret_box().encrypt(password)
    box.trusted_ca_pem = dovecot.ca.cert_pem
    db.session.commit()
    allow_loopback()
    return username


def team_inbox(space):
    """A committed-later IMAPS account "Team inbox" on a host nobody connects to (pages that list or edit one)."""
    from webapp.archive.services import create_account

    return create_account(space, AccountData(
        name="Team inbox", description="", protocol="imaps", host="mail.example.org", port=993, username="team",
        password="pw", require_starttls=False, folder="INBOX", trusted_ca_pem="", keep_on_server=False))


def account_data(dovecot, protocol: str, username: str, password: str, **overrides) -> AccountData:
    values = dict(name=f"{protocol} box", description="", protocol=protocol, host="localhost",
                  port=dovecot.ports[PORT_OF[protocol]], username=username, password=password,
                  require_starttls=protocol in ("pop", "imap"), folder="INBOX", trusted_ca_pem=dovecot.ca.cert_pem,
                  keep_on_server=False)
    values.update(overrides)
    return AccountData(**values)


def team_with_account(make_user, dovecot, protocol="imaps", **overrides):
    """(space admin, TEAM space, account, mailbox username) with loopback allowed."""
    admin = make_user("teamadmin")
    space = create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    allow_loopback()
    username, password = dovecot.add_user()
    account = create_account(space, account_data(dovecot, protocol, username, password, **overrides))
    db.session.commit()
    return admin, space, account, username


WORDS = ("budget release meeting invoice design review coffee server deploy backup holiday report "
         "customer ticket roadmap lunch printer quarterly migration").split()


def message(i: int, *, subject=None, html=False, attachment=False, reply_to=None, msgid=None,
            sender=("Ann Example", "ann@example.org")) -> bytes:
    """A real-looking message with CRLF line ends, as a server stores it."""
    rnd = random.Random(i)
    date = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=i)
    msgid = msgid or f"m{i}@example.org"
    headers = [
        f"From: {email.utils.formataddr(sender)}",
        "To: team@example.org",
        f"Subject: {subject or ' '.join(rnd.choice(WORDS) for _ in range(4)).capitalize()}",
        f"Date: {email.utils.format_datetime(date)}",
        f"Message-ID: <{msgid}>",
        "MIME-Version: 1.0",
    ]
    if reply_to:
        headers += [f"In-Reply-To: <{reply_to}>", f"References: <{reply_to}>"]
    body = " ".join(rnd.choice(WORDS) for _ in range(60))
    if not html and not attachment:
        headers.append("Content-Type: text/plain; charset=utf-8")
        return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()
    headers.append('Content-Type: multipart/mixed; boundary="b1"')
    parts = ["--b1", "Content-Type: text/plain; charset=utf-8", "", body]
    if html:
        parts += ["--b1", "Content-Type: text/html; charset=utf-8", "", f"<p><b>{body}</b></p>"]
    if attachment:
        parts += ["--b1", 'Content-Type: application/pdf; name="report.pdf"',
                  'Content-Disposition: attachment; filename="report.pdf"', "Content-Transfer-Encoding: base64", "",
                  "JVBERi0xLjQKJcTl8uXrp/Og0MTGCg=="]
    parts.append("--b1--")
    return ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(parts) + "\r\n").encode()


def mixed_mailbox() -> list[bytes]:
    """Plain, HTML, attachments, non-ASCII headers and a thread."""
    return [
        message(1, subject="Quarterly budget"),
        message(2, html=True),
        message(3, attachment=True),
        message(4, subject="Re: Quarterly budget", reply_to="m1@example.org"),
        ("From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>\r\nTo: team@example.org\r\n"
         "Subject: =?utf-8?b?R3LDvMOfZSBhdXMgTcO8bmNoZW4=?=\r\nDate: Mon, 05 Jan 2026 10:00:00 +0100\r\n"
         "Message-ID: <umlaut@example.de>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\nSch=F6ne Gr=FC=DFe\r\n").encode(),
    ]


def team_with_reader(db, make_user, login):
    """TEAM, administered by ann, with rita (View) signed in on the test client: the Mail tab as a reader sees it."""
    from webapp.spaces.models import VIEW, SpaceRole
    from webapp.spaces.services import create_site_space

    admin, reader = make_user("ann"), make_user("rita")
    space = create_site_space(admin, "TEAM", "Team")
    db.session.add(SpaceRole(space=space, user=reader, role=VIEW))
    db.session.commit()
    login(reader)
    return space
