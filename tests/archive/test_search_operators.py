"""The Mail tab's search operators, on both engines (the suite runs on SQLite and PostgreSQL): what the reader
sees in the list for each operator, alone and combined with the filters beside the box."""
import re
from urllib.parse import quote

import pytest

from webapp.archive import ingest
from webapp.spaces.models import VIEW, SpaceRole
from webapp.spaces.services import create_site_space

MAIL = [  # key, from, to, subject, date, body, attachment name
    ("plan", "Ann Lee <ann@example.org>", "team@example.org", "Q3 plan", "Mon, 05 Jan 2026 10:00:00 +0000",
     "The budget for Q3 is attached.", "plan-q3.pdf"),
    ("draft", "Ann Lee <ann@example.org>", "bob@example.org", "Budget draft", "Tue, 10 Feb 2026 10:00:00 +0000",
     "A rough draft of the budget.", None),
    ("reply", "Bob Stone <bob@example.org>", "ann@example.org", "Re: Q3 plan", "Wed, 11 Mar 2026 10:00:00 +0000",
     "Looks fine; budget approved.", None),
    ("cv", "Zoë Durand <zoe@example.org>", "hr@example.org", "Candidature", "Thu, 12 Mar 2026 10:00:00 +0000",
     "Mon CV est joint.", "Résumé Zoë.pdf"),
]


def raw(key, sender, to, subject, date, body, attachment) -> bytes:
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{key}@example.org>\r\n"
            + ("In-Reply-To: <plan@example.org>\r\nReferences: <plan@example.org>\r\n" if key == "reply" else ""))
    if not attachment:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()
    return (head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n--b\r\n"
            f"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''{quote(attachment)}"
            "\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--b--\r\n").encode()


@pytest.fixture
def team(app, db, make_user, login):
    ann = make_user("ann")
    space = create_site_space(ann, "TEAM", "Team")
    reader = make_user("rita")
    db.session.add(SpaceRole(space=space, user=reader, role=VIEW))
    db.session.commit()
    for entry in MAIL:
        ingest.store(space.id, None, raw(*entry))
    db.session.commit()
    login(reader)
    return space


def listed(client, **args) -> list[str]:
    page = client.get("/spaces/TEAM/mail", query_string=args).get_data(as_text=True)
    return re.findall(r'<a href="/spaces/TEAM/mail/messages/\d+">([^<]+)</a>', page)


@pytest.mark.parametrize("q, expected", [
    ("budget", ["Re: Q3 plan", "Budget draft", "Q3 plan"]),
    ("budget -draft", ["Re: Q3 plan", "Q3 plan"]),
    ("budget -\"rough draft\"", ["Re: Q3 plan", "Q3 plan"]),
    ("-budget", ["Candidature"]),
    ("from:ann", ["Budget draft", "Q3 plan"]),
    ("from:\"bob stone\"", ["Re: Q3 plan"]),
    ("budget from:bob", ["Re: Q3 plan"]),
    ("subject:budget", ["Budget draft"]),
    ("subject:\"q3 plan\"", ["Re: Q3 plan", "Q3 plan"]),
    ("SUBJECT:plan FROM:ann", ["Q3 plan"]),
    ("to:bob@example.org", ["Budget draft"]),
    ("to:ann", ["Re: Q3 plan"]),
    ("has:attachment", ["Candidature", "Q3 plan"]),
    ("has:attachment budget", ["Q3 plan"]),
    ("filename:pdf", ["Candidature", "Q3 plan"]),
    ("filename:résumé", ["Candidature"]),
    ("filename:PLAN-Q3", ["Q3 plan"]),
    ("after:2026-03-01", ["Candidature", "Re: Q3 plan"]),
    ("after:2026-03-12", ["Candidature"]),  # that day and later, as in Gmail
    ("before:2026-02", ["Q3 plan"]),
    ("after:2026-02-01 before:2026-03-12 budget", ["Re: Q3 plan", "Budget draft"]),
    ("in:thread", ["Re: Q3 plan", "Q3 plan"]),
    ("in:thread -re", ["Q3 plan"]),
    ("re: 10:30 http://x", []),  # not operators: words, searched as written
])
def test_each_operator_alone_and_combined(client, team, q, expected):
    assert listed(client, q=q) == expected


def test_operators_combine_with_the_filters_beside_the_box(client, team):
    assert listed(client, q="budget", sender="ann") == ["Budget draft", "Q3 plan"]
    assert listed(client, q="budget", month="2026-01") == ["Q3 plan"]
    assert listed(client, q="from:ann", attachments="1") == ["Q3 plan"]
    assert listed(client, q="budget", order="relevance")[0] == "Budget draft"  # the subject ranks first


def test_an_unknown_operator_value_says_what_is_known(client, team):
    page = client.get("/spaces/TEAM/mail", query_string={"q": "has:link before:yesterday"}).get_data(as_text=True)
    assert "has:link is not known; has:attachment is." in page
    assert "before: wants a date such as 2026-11-30, 2026-11 or 2026." in page


def test_a_filter_never_leaves_a_page_short(client, db, make_user, login):
    """Matches of the filter far behind the newest hits of the words (the old code filtered the first 200 hits
    and could show fewer than a page): every page is full while there are matches."""
    space = create_site_space(make_user("ann"), "BIG", "Big")
    db.session.commit()
    for i in range(260):  # the newest 260 mention the budget, from Bob
        when = f"Mon, 05 Oct 2026 {10 + i // 60}:{i % 60:02d}:00 +0000"
        ingest.store(space.id, None, raw(f"b{i}", "Bob <bob@example.org>", "t@example.org", f"Budget {i}", when,
                                         "budget", None))
    for i in range(60):  # older ones from Ann
        ingest.store(space.id, None, raw(f"a{i}", "Ann <ann@example.org>", "t@example.org", f"Old budget {i}",
                                         f"Mon, 05 Jan 2026 10:{i:02d}:00 +0000", "budget", None))
    db.session.commit()
    login(make_user("root", admin=True))
    page = client.get("/spaces/BIG/mail", query_string={"q": "budget", "sender": "ann"}).get_data(as_text=True)
    assert len(re.findall(r"Old budget \d+", page)) == 50 and "Older →" in page
    page = client.get("/spaces/BIG/mail", query_string={"q": "budget from:ann"}).get_data(as_text=True)
    assert len(re.findall(r"Old budget \d+", page)) == 50
