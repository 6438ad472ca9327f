"""Composing mail: headers nobody can break, templates that substitute only three variables, clean wire bytes."""
import random
import re
from datetime import datetime, timezone
from email import policy
from email.header import decode_header, make_header
from email.utils import parseaddr
from email.parser import BytesParser
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings, strategies as st

from webapp.outgoing import compose
from webapp.outgoing.smtp import SmtpProfile

BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")
HOSTILE = list("ab Z\r\n\x00\"'<>@,;:\\()[]=?.\t\x0b\x0c\x1c\x1d\x1e") + ["\u2028", "\u2029", "\u0085", "é", "中",
                                                                          "\r\n", "\nBcc: x@evil.example", "=?utf-8?q?=0A?="]
hostile_text = st.lists(st.sampled_from(HOSTILE) | st.characters(codec="utf-8"), max_size=40).map("".join)


def profile(**overrides) -> SmtpProfile:
    values = dict(key="1", name="t", host="localhost", port=25, security="none", from_address="spacemail@example.org",
                  from_name="${fullname} via ${email.hostname}", subject_prefix="[Spacemail]", reply_to_policy="actor")
    values.update(overrides)
    return SmtpProfile(**values)


def mail(subject="Hello", body="Body", html=None, headers=None):
    return SimpleNamespace(kind="notification", recipient="reader@example.org", subject=subject, body_text=body,
                           body_html=html, headers=headers or {}, message_id="<1.spacemail@spacemail.test>")


def rfc2047_address(raw: str) -> tuple[str, str]:
    """Name and address as RFC 2047 reads them (whitespace between encoded words is not text).

    Python's policy.default parser keeps that whitespace inside a display name, so it is not the judge here.
    """
    name, address = parseaddr(re.sub(r"\r?\n[ \t]", " ", str(raw)))
    return str(make_header(decode_header(name))), address


def parse(data: bytes):
    return BytesParser(policy=policy.default).parsebytes(data.replace(b"\r\n", b"\n"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fullname=hostile_text, prefix=hostile_text, subject=hostile_text, body=hostile_text)
def test_no_name_prefix_or_subject_adds_or_breaks_a_header(fullname, prefix, subject, body):
    actor = SimpleNamespace(full_name=fullname, email="actor@example.org")
    _sender, data = compose.build(mail(subject, body), profile(subject_prefix=prefix), actor)
    assert BARE_EOL.search(data) is None
    message = parse(data)
    assert sorted(message.keys()) == sorted(["From", "To", "Reply-To", "Subject", "Date", "Message-ID",
                                             "Auto-Submitted", "MIME-Version", "Content-Type",
                                             "Content-Transfer-Encoding"])
    assert message.defects == []
    assert len(message["From"].addresses) == 1 and len(message["Reply-To"].addresses) == 1
    raw = BytesParser(policy=policy.compat32).parsebytes(data)
    assert rfc2047_address(raw["From"]) == (compose.render_from_name("${fullname} via ${email.hostname}", fullname,
                                                                      "actor@example.org"), "spacemail@example.org")
    assert rfc2047_address(raw["Reply-To"]) == (compose.clean_header_text(fullname, 200), "actor@example.org")
    expected_subject = " ".join(p for p in (compose.clean_header_text(prefix), compose.clean_header_text(subject)) if p)
    assert message["Subject"] == expected_subject
    text = message.get_content()
    expected_body = compose.normalize_body(body)
    assert text == expected_body + ("" if expected_body.endswith("\n") else "\n")


line_text = st.lists(st.sampled_from(["a", " ", ".", "=", "\r", "\n", "\r\n", "é", "--=_spacemail_", "a" * 899,
                                       "b" * 450]), max_size=12).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=line_text, html=line_text.filter(bool))
def test_both_parts_come_back_exactly_with_every_wire_line_short(body, html):
    """Text and HTML parts (CR, LF and CRLF line ends, lines of 899 to 1,800 characters, boundary look-alikes)
    read back as written, line ends made LF; 7bit only for short-lined ASCII; no line on the wire over 998."""
    _sender, data = compose.build(mail(body=body, html=html), profile(), None)
    assert BARE_EOL.search(data) is None and max(map(len, data.split(b"\r\n"))) <= 998
    message = parse(data)
    assert message.defects == [] and message.get_content_type() == "multipart/alternative"
    parts = [message.get_body(("plain",)), message.get_body(("html",))]
    for part, written in zip(parts, (body, html)):
        expected = compose.normalize_body(written)
        expected += "" if expected.endswith("\n") else "\n"
        assert part.get_content() == expected
        short = expected.isascii() and all(len(line) < 900 for line in expected.split("\n"))
        assert part["Content-Transfer-Encoding"] == ("7bit" if short else "quoted-printable")


def test_a_boundary_found_in_a_part_is_drawn_again(monkeypatch):
    """The generator's first boundary written into the text itself: the message still splits where it should."""
    first = f"=_spacemail_{random.Random(7).getrandbits(96):024x}"
    body = f"--{first}\nContent-Type: text/html\n\n<p>forged</p>\n--{first}--\n"
    monkeypatch.setattr(compose, "_random", random.Random(7))
    _sender, data = compose.build(mail(body=body, html="<p>real</p>"), profile(), None)
    message = parse(data)
    assert first not in message["Content-Type"]
    assert message.get_body(("plain",)).get_content() == body
    assert message.get_body(("html",)).get_content() == "<p>real</p>\n"


def test_the_date_is_the_time_of_sending():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    sent = [parse(compose.build(mail(), profile(), None)[1])["Date"].datetime for _ in range(3)]
    after = datetime.now(timezone.utc)
    assert all(before <= date <= after for date in sent)


def test_template_substitutes_only_its_three_variables():
    name = compose.render_from_name("{{7*7}} ${fullname} <${email}> @${email.hostname} $other ${os.environ} $$",
                                    "Ann\r\nBcc: x@evil.example", "ann@example.org")
    assert name == "{{7*7}} Ann Bcc: x@evil.example <ann@example.org> @example.org $other ${os.environ} $"


def test_no_actor_uses_the_site_name():
    _sender, data = compose.build(mail(), profile(from_name="${fullname} (Spacemail)"), None, "Team Site")
    message = parse(data)
    assert message["From"].addresses[0].display_name == "Team Site"  # no person: the site's name alone
    assert message["Reply-To"] is None


def test_html_part_has_inlined_css_and_no_linked_stylesheet():
    html = ('<html><head><link rel="stylesheet" href="http://remote.example/x.css">'
            '<style>p { color: red; }</style></head><body><p>Hi</p></body></html>')
    _sender, data = compose.build(mail(html=html), profile(), None)
    message = parse(data)
    assert message.get_content_type() == "multipart/alternative"
    part = message.get_body(("html",)).get_content()
    assert 'style="color: red;"' in part
    assert "remote.example" not in part and "<link" not in part and "<style" not in part


def test_extra_headers_are_cleaned_and_only_known_ones_pass():
    headers = {"List-Id": "Team <team.spacemail.test>\r\nBcc: x@evil.example", "X-Evil": "yes"}
    message = parse(compose.build(mail(headers=headers), profile(), None)[1])
    assert message["List-Id"] == "Team <team.spacemail.test> Bcc: x@evil.example"
    assert message["X-Evil"] is None and message["Bcc"] is None


def test_a_literal_encoded_word_cannot_smuggle_a_header():
    """Python 3.11.7 decodes "=?...?=" text while folding and writes its newline raw (CVE-2024-6923)."""
    actor = SimpleNamespace(full_name="=?utf-8?q?=0ABcc:_y@evil.example?=", email="actor@example.org")
    _sender, data = compose.build(mail("=?utf-8?q?=0ABcc:_x@evil.example?="), profile(), actor)
    assert b"\r\nBcc:" not in data and b"\nBcc" not in data.replace(b"\r\n", b" ")
    assert parse(data)["Bcc"] is None


NAMES = ["From", "To", "Subject"]
GOOD_HEADS = [b"From: a@example.org\r\nTo: b@example.org\r\nSubject: Hi\r\n\r\nbody",
              b"from: a@example.org\r\nTO: b@example.org\r\nSubject: =?utf-8?q?x?=\r\n =?utf-8?q?y?=\r\n\r\n",
              b"From: \r\nTo: b\r\nSubject:\r\n\tfolded\r\n\r\nbody\nwith bare\rline ends\0 in the body"]
BAD_HEADS = [b"From: a\r\nTo: b\nBcc: c\r\nSubject: x\r\n\r\n", b"From: a\r\nTo: b\rBcc: c\r\nSubject: x\r\n\r\n",
             b"From: a\r\nTo: b\r\nBcc: c\r\nSubject: x\r\n\r\n", b"From: a\r\nSubject: x\r\nTo: b\r\n\r\n",
             b"From: a\r\nTo: b\r\nSubject: x\0y\r\n\r\n", b"From: a\r\nTo b\r\nSubject: x\r\n\r\n",
             b"From: a\r\nTo: b\r\n\r\n", b"From: a\r\nTo: b\r\nSubject: x\r\nX: y\r\n\r\n",
             b" From: a\r\nTo: b\r\nSubject: x\r\n\r\n", b"From: a\r\nTo: b\r\nSubjects: x\r\n\r\n",
             b"From : a\r\nTo: b\r\nSubject: x\r\n\r\n"]


def test_the_last_guard_passes_the_headers_set_and_nothing_else():
    for head in GOOD_HEADS:
        compose._check_headers(head, NAMES)
    for head in BAD_HEADS:
        try:
            compose._check_headers(head, NAMES)
        except ValueError:
            continue
        raise AssertionError(f"{head!r} passed the guard")
