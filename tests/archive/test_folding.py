"""What is new shows first: quotes and signatures folded in plain text and in HTML mail as the big clients
write them (Gmail, Thunderbird, Apple Mail, Outlook), never anything lost from the page."""
import html
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.archive.display import text_to_html
from webapp.archive.sanitize import sanitize

GMAIL = ('<div dir="ltr">Sounds good.</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, '
         'Dec 1, 2026 at 10:00 AM Ann &lt;ann@example.org&gt; wrote:<br></div><blockquote class="gmail_quote" '
         'style="margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex">Shall we?'
         '</blockquote></div><div><br clear="all"><div dir="ltr" class="gmail_signature">Bob | Ops</div></div>')
THUNDERBIRD = ('<p>Agreed.</p><div class="moz-cite-prefix">On 01/12/2026 10:00, Ann wrote:<br></div>'
               '<blockquote type="cite" cite="mid:x@example.org">Shall we?</blockquote><pre class="moz-signature" '
               'cols="72">-- \nBob</pre>')
APPLE = ('<div>Yes.</div><div><br><blockquote type="cite"><div>On 1 Dec 2026, Ann wrote:</div>Shall we?'
         '</blockquote></div>')
OUTLOOK = ('<div class="WordSection1"><p>Fine by me.</p><div id="appendonsend"></div><hr style="display:inline-block;'
           'width:98%"><div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Ann<br><b>Sent:</b> Monday</div>'
           '<div>Shall we?</div></div>')


@pytest.mark.parametrize("mail, new, kinds", [(GMAIL, "Sounds good.", ["quote", "signature"]),
                                              (THUNDERBIRD, "Agreed.", ["quote", "signature"]),
                                              (APPLE, "Yes.", ["quote"]), (OUTLOOK, "Fine by me.", ["quote"])])
def test_html_quotes_and_signatures_fold_and_nothing_is_lost(mail, new, kinds):
    clean, _ = sanitize(mail, lambda cid: None, False)
    assert re.findall(r'<details class="folded (\w+)">', clean) == kinds
    before_fold = clean.split("<details")[0]
    assert new in before_fold and "Shall we?" not in before_fold  # the new text first, the quote folded
    assert "Shall we?" in clean  # and still there, one click away
    assert re.sub(r"<[^>]+>", "", clean).count("Shall we?") == 1


def test_plain_text_folds_the_attribution_with_its_quote_and_the_signature():
    shown = text_to_html("Sounds good.\n\nOn Mon, 1 Dec 2026, Ann wrote:\n> Shall we?\n> Yes?\n\n-- \nBob\nOps")
    first = shown.split("<details")[0]
    assert "Sounds good." in first and "wrote:" not in first
    assert re.findall(r'<details class="(\w+)">', shown) == ["quoted", "signature"]
    assert "Bob" in shown.split('<details class="signature">')[1]


def test_a_long_text_after_dashes_is_not_taken_for_a_signature():
    text = "Intro\n--\n" + "\n".join(f"line {i}" for i in range(40))
    assert "signature" not in text_to_html(text)


def test_a_long_thread_opens_at_what_is_new_since_the_last_visit(app, client, db, make_user, login):
    from datetime import timedelta

    from webapp.archive import ingest
    from webapp.archive.models import Message, Thread
    from webapp.spaces.services import create_site_space
    from webapp.timeutil import utcnow

    space = create_site_space(make_user("ann"), "TEAM", "Team")
    db.session.commit()

    def post(i):
        reply = f"In-Reply-To: <t{i - 1}@example.org>\r\nReferences: <t0@example.org>\r\n" if i else ""
        head = f"From: Ann <ann@example.org>\r\nSubject: Plan\r\nMessage-ID: <t{i}@example.org>\r\n"
        ingest.store(space.id, None, (head + f"Date: Tue, 01 Dec 2026 1{i % 10}:00:00 +0000\r\n{reply}\r\n"
                                      f"Part {i}.\r\n").encode())
        db.session.commit()

    for i in range(7):
        post(i)
    login(make_user("root", admin=True))
    thread = db.session.query(Thread).one()
    first = client.get(f"/spaces/TEAM/mail/threads/{thread.id}").get_data(as_text=True)
    assert 'class="seen"' not in first and "new since your last visit" not in first  # first visit: all open
    for message in db.session.query(Message):  # as if archived before that visit
        message.received_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    post(7)
    post(8)
    again = client.get(f"/spaces/TEAM/mail/threads/{thread.id}").get_data(as_text=True)
    assert "2 new since your last visit" in again and again.count('<details class="seen">') == 7
    assert "Part 8." in again.split('<details class="seen">')[-1].split("</details>", 1)[1]  # the new one, open
    reload = client.get(f"/spaces/TEAM/mail/threads/{thread.id}").get_data(as_text=True)
    assert "2 new since your last visit" in reload  # a reload within the minute is the same visit
    from webapp.archive.models import ThreadVisit

    for message in db.session.query(Message):  # later: everything was archived before that visit
        message.received_at = utcnow() - timedelta(minutes=3)
    db.session.query(ThreadVisit).update({"seen_at": utcnow() - timedelta(minutes=2)})
    db.session.commit()
    third = client.get(f"/spaces/TEAM/mail/threads/{thread.id}").get_data(as_text=True)
    assert "new since your last visit" not in third  # nothing new: the whole thread, open


LINE_PIECES = ["plain words", "https://example.org/a?b=1&c=<2>", "> quoted", "On Mon, Ann wrote:", "-- ", "--",
               'x"y\'z', "http://h.example/p.", "\t", "", "é ü 😀", "(see https://e.example/x)", "www.example.org"]
BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LINE_PIECES), st.text(max_size=12), st.sampled_from(BREAKS)), max_size=25))
def test_each_line_is_escaped_and_linked_as_it_would_be_alone(pieces):
    """Text is escaped and linked in one pass, then cut into lines: every line (links, quotes, a signature, any of
    Python's line breaks) comes out as that line escaped and linked on its own would."""
    text = "".join(a + b + brk for a, b, brk in pieces)
    alone = [re.sub(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]", lambda m: f'<a href="{m.group(0)}" rel="noopener '
                    f'noreferrer nofollow" target="_blank">{m.group(0)}</a>', html.escape(line, quote=True),
                    flags=re.I) for line in text.splitlines()]
    shown = re.sub(r"</?details[^>]*>|<summary>[^<]*</summary>", "\n", str(text_to_html(text)))
    assert [line for line in shown.split("\n") if line] == [line for line in alone if line]
