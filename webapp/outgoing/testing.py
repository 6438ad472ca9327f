"""Send Test Email: straight to one server with the conversation kept, or through the mail queue."""
import logging
from types import SimpleNamespace

from sqlalchemy import select

from webapp.auth.models import User
from webapp.extensions import db
from webapp.jobs import SEND_TEST_EMAIL, JobRun, start_job
from webapp.outgoing import compose
from webapp.outgoing.models import SmtpTest
from webapp.outgoing.queue import queue_mail
from webapp.outgoing.servers import OutgoingError, profile_for
from webapp.outgoing.smtp import SmtpError, SmtpSession
from webapp.settings import SiteSettings, base_url

log = logging.getLogger(__name__)

TEST_HTML = """<html><head><style>
  body {{ font-family: sans-serif; color: #1f2933; }}
  .box {{ border: 1px solid #cbd2d9; border-radius: 6px; padding: 12px 16px; }}
  .small {{ color: #616e7c; font-size: 12px; }}
</style></head><body><div class="box"><p>{body}</p>
<p class="small">Sent by {site} from Administration › Mail servers.</p></div></body></html>"""


def start_test(key: str, to: str, subject: str, body: str, user, via_queue: bool) -> SmtpTest:
    """Queue a test of server `key`; the caller commits. Through the queue, it is an ordinary pinned mail."""
    if profile_for(key) is None:
        raise OutgoingError("This server cannot be used: check its settings.")
    test = SmtpTest(server_key=key, to_address=to, subject=subject, body=body, created_by_id=user.id)
    if via_queue:
        mail = queue_mail(to, subject, body, _html(body), actor=user, kind="test", server_key=key)
        db.session.flush()
        test.mail_id = mail.id
    else:
        run = start_job("smtp-test", SEND_TEST_EMAIL, user=user)
        test.job_run_id = run.id
    db.session.add(test)
    db.session.flush()
    return test


def _html(body: str) -> str:
    from markupsafe import escape

    paragraphs = "<br>".join(escape(line) for line in compose.normalize_body(body).split("\n"))
    return TEST_HTML.format(body=paragraphs, site=escape(SiteSettings.get().site_title))


def test_for_run(run: JobRun) -> SmtpTest | None:
    return db.session.scalar(select(SmtpTest).where(SmtpTest.job_run_id == run.id))


def run_test(run: JobRun) -> None:
    """Open, secure, sign in and send, recording every step; the result goes on the SmtpTest row."""
    test = test_for_run(run)
    profile = profile_for(test.server_key)
    actor = db.session.get(User, test.created_by_id) if test.created_by_id else None
    if profile is None:
        test.result = {"ok": False, "kind": "missing", "message": "The server was removed before the test ran.",
                       "hint": "", "transcript": []}
        return
    session = SmtpSession(profile, record=True)
    mail = SimpleNamespace(kind="test", recipient=test.to_address, subject=test.subject, body_text=test.body,
                           body_html=_html(test.body), headers={},
                           message_id=compose.new_message_id(compose.message_id_host(base_url())))
    try:
        sender, data = compose.build(mail, profile, actor, SiteSettings.get().site_title)
        session.open()
        reply = session.send(sender, test.to_address, data)
        test.result = {"ok": True, "reply": reply, "transcript": session.transcript}
    except SmtpError as exc:
        test.result = {"ok": False, "kind": exc.kind, "message": exc.message, "hint": exc.hint,
                       "transcript": session.transcript}
    except Exception:
        log.exception("test email %s failed", test.id)
        test.result = {"ok": False, "kind": "internal", "message": "The test failed unexpectedly; the worker log "
                       "has the details.", "hint": "", "transcript": session.transcript}
    finally:
        session.close()
    run.done_count = run.total = 1
