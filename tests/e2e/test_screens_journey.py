"""The Mail tab, a thread and a message at phone width (390 px) and desktop width, light and dark: nothing wider
than the screen, nothing cut off. With SPACEMAIL_SCREENSHOTS=DIR the pages are also saved there as PNGs (that is
how docs/screenshots/ was made)."""
import os
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.e2e.test_foundation_journey import sign_in
from webapp.archive import ingest
from webapp.archive.models import Message
from webapp.extensions import db
from webapp.spaces.services import create_site_space

pytestmark = pytest.mark.one_engine
WIDTHS = {"phone": (390, 844), "desktop": (1280, 900)}


def _archive(space_id: int) -> None:
    subjects = ["Quarterly budget review for the operations and infrastructure teams", "Re: Quarterly budget review",
                "Printer on floor two", "Deploy plan for the release-candidate-2026-12 build", "Lunch on Friday?"]
    for i, subject in enumerate(subjects):
        reply = "In-Reply-To: <m0@example.org>\r\nReferences: <m0@example.org>\r\n" if subject.startswith("Re:") else ""
        body = ("Hello team,\r\n\r\nHere is the long line that a phone must wrap: "
                + "https://intranet.example.org/budgets/2026/q4/operations-and-infrastructure-final-v3.xlsx "
                + "and the numbers follow.\r\n\r\n> An earlier message quoted\r\n> on two lines\r\n\r\n-- \r\nAnn\r\n")
        ingest.store(space_id, None, (
            f"From: Ann Longname-Example <ann.longname@example.org>\r\nTo: team@example.org\r\nSubject: {subject}\r\n"
            f"Date: Tue, 01 Dec 2026 1{i}:00:00 +0000\r\nMessage-ID: <m{i}@example.org>\r\n{reply}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode())


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(WIDTHS))
def test_mail_pages_fit_the_screen(app, live_server, browser, make_user, width, scheme):
    ann = make_user("ann")
    space = create_site_space(ann, "TEAM", "Team")
    _archive(space.id)
    db.session.commit()
    reply = db.session.query(Message).filter(Message.subject.like("Re:%")).one()
    context = browser.new_context(viewport=dict(zip(("width", "height"), WIDTHS[width])), color_scheme=scheme)
    page = context.new_page()
    sign_in(page, live_server, "ann", PASSWORD)
    out = os.environ.get("SPACEMAIL_SCREENSHOTS")
    for name, path in (("mail-tab", "/spaces/TEAM/mail"), ("thread", f"/spaces/TEAM/mail/threads/{reply.thread_id}"),
                       ("message", f"/spaces/TEAM/mail/messages/{reply.id}")):
        page.goto(live_server + path)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= WIDTHS[width][0], f"{name} is {scroll_width} px wide at {width} width"
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(out) / f"{name}-{width}-{scheme}.png"), full_page=True)
    context.close()
