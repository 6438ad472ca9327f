"""Links that last and archives people follow: permalinks by Message-ID, the Atom feed."""
import pytest

from tests.archive.helpers import team_with_reader
from webapp.archive import ingest
from webapp.spaces.models import SpaceRole


@pytest.fixture
def team(app, db, make_user, login):
    return team_with_reader(db, make_user, login)


def mail(msgid: str, subject: str, body: str = "Body.", extra: str = "") -> bytes:
    return (f"From: Ann <ann@example.org>\r\nTo: team@example.org\r\nSubject: {subject}\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{msgid}>\r\n{extra}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


@pytest.mark.parametrize("msgid", ["plain@example.org", "a/b+c%d=e?f#g@example.org", "ünïcode@例え.jp",
                                   "CAFx.1234@mail.gmail.com"])
def test_a_permalink_by_message_id_opens_the_message(client, team, db, msgid):
    ingest.store(team.id, None, mail(msgid, "Found by its id"))
    db.session.commit()
    message_page = client.get("/spaces/TEAM/mail").get_data(as_text=True)
    assert "Found by its id" in message_page
    from webapp.archive.models import Message

    stored = db.session.query(Message).one()
    page = client.get(f"/spaces/TEAM/mail/messages/{stored.id}").get_data(as_text=True)
    import re

    link = re.search(r'<a class="permalink mono" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    opened = client.get(link)
    assert opened.status_code == 200 and "Found by its id" in opened.get_data(as_text=True)
    bracketed = client.get("/spaces/TEAM/mail/id/%3C" + link.split("/mail/id/")[1] + "%3E")
    assert bracketed.status_code == 200  # pasted with its angle brackets, as mail clients show it


def test_an_unknown_message_id_says_where_it_might_be(client, team):
    missing = client.get("/spaces/TEAM/mail/id/nowhere@example.org")
    assert missing.status_code == 404 and "No message with the Message-ID" in missing.get_data(as_text=True)


def _feed_links(client) -> dict[str, str]:
    import re

    page = client.get("/spaces/TEAM/mail").get_data(as_text=True)
    return {text: href.replace("&amp;", "&") for href, text in
            re.findall(r'<a href="(/spaces/TEAM/mail/feed\.atom[^"]+)" type="application/atom\+xml">([^<]+)</a>', page)}


def test_the_feed_reads_in_a_real_feed_parser_with_the_token_only(app, client, team, db, make_user):
    import feedparser

    ingest.store(team.id, None, mail("root@example.org", "Release plan", "First draft of the plan."))
    ingest.store(team.id, None, mail("reply@example.org", "Re: Release plan", "Looks good.",
                                     extra="In-Reply-To: <root@example.org>\r\nReferences: <root@example.org>\r\n"))
    ingest.store(team.id, None, mail("bell@example.org", "Odd \x07 subject", "A bell: \x07 and <b>tags</b>."))
    db.session.commit()
    links = _feed_links(client)
    assert set(links) == {"new threads", "every message"}
    every = feedparser.parse(client.get(links["every message"]).get_data())
    assert not every.bozo, every.bozo_exception  # well-formed, even with a control character in the mail
    assert sorted(e.title for e in every.entries) == ["Odd  subject", "Re: Release plan", "Release plan"]
    tags = next(e for e in every.entries if e.title.startswith("Odd"))
    assert tags.summary == "A bell:  and <b>tags</b>." and tags.author_detail.email == "ann@example.org"
    assert tags.link == "http://spacemail.test/spaces/TEAM/mail/id/bell@example.org"
    threads = feedparser.parse(client.get(links["new threads"]).get_data())
    assert sorted(e.title for e in threads.entries) == ["Odd  subject", "Release plan"]  # no reply: a new thread only

    stranger = app.test_client()  # no session at all: the token is what counts
    assert stranger.get(links["every message"]).status_code == 200
    assert stranger.get(links["every message"].split("token=")[0]).status_code == 401
    forged = links["every message"][:-4] + ("0000" if not links["every message"].endswith("0000") else "1111")
    assert stranger.get(forged).status_code == 401


def test_resetting_the_token_ends_old_links_and_a_lost_role_ends_the_feed(app, client, team, db):
    from webapp.auth.models import User

    old = _feed_links(client)["every message"]
    stranger = app.test_client()
    assert stranger.get(old).status_code == 200
    client.post("/profile/feed-token/reset")
    assert stranger.get(old).status_code == 401
    new = _feed_links(client)["every message"]
    assert new != old and stranger.get(new).status_code == 200
    rita = db.session.query(User).filter_by(username="rita").one()
    db.session.query(SpaceRole).filter_by(user_id=rita.id).delete()
    db.session.commit()
    assert stranger.get(new).status_code == 404  # the token shows only what its person may see
