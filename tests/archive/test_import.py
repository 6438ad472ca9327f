"""Import an mbox (twice) and .eml files through the page, run by a real worker."""
import io
import re

from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import stream_encode_multipart

from tests.archive.helpers import message as make_message
from webapp.archive.models import Message
from webapp.spaces.services import create_site_space


def mbox_of(raws) -> bytes:
    out = io.BytesIO()
    for i, raw in enumerate(raws):
        out.write(b"From sender@example.org Mon Jan  5 10:00:00 2026\n")
        body = raw.replace(b"\r\n", b"\n")
        out.write(re.sub(rb"(?m)^(>*From )", rb">\1", body))
        out.write(b"\n")
    return out.getvalue()


def upload(client, name, data):
    """A large multipart upload whose encoded body we close ourselves (Werkzeug's test builder spools big
    bodies to a temporary file that nobody closes)."""
    stream, length, boundary = stream_encode_multipart(
        {"files": FileStorage(io.BytesIO(data), filename=name), "csrf_token": client.csrf_token()})
    try:
        return client.open("/spaces/TEAM/mail/import", method="POST", input_stream=stream,
                           content_type=f'multipart/form-data; boundary="{boundary}"', content_length=length,
                           headers={"HX-Request": "true"})
    finally:
        stream.close()


def test_mbox_of_1000_imported_twice_is_1000(app, client, make_user, login, db, run_jobs):
    admin = make_user("ann")
    create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    login(admin)
    data = mbox_of([make_message(i) for i in range(1000)])
    first = upload(client, "archive.mbox", data).get_data(as_text=True)
    assert "Waiting for a worker" in first and "<html" not in first
    run_id = int(re.search(r'id="import-(\d+)"', first).group(1))
    run_jobs()
    done = client.htmx_get(f"/spaces/TEAM/mail/import/{run_id}").get_data(as_text=True)
    assert "Imported 1000 messages." in done
    upload(client, "archive.mbox", data)
    run_jobs()
    assert db.session.scalar(select(func.count(Message.id))) == 1000
    again = client.get("/spaces/TEAM/mail/import/%d" % (run_id + 1)).get_data(as_text=True)
    assert "Imported 0 messages; 1000 were already in the archive." in again


def test_eml_files_and_a_message_fetched_before_dedupe(app, client, make_user, login, db, run_jobs):
    from webapp.archive import ingest

    admin = make_user("ann")
    space = create_site_space(admin, "TEAM", "Team")
    ingest.store(space.id, None, make_message(7))  # as fetched from a server: CRLF
    db.session.commit()
    login(admin)
    response = client.post("/spaces/TEAM/mail/import", content_type="multipart/form-data", data={
        "files": [(io.BytesIO(make_message(7).replace(b"\r\n", b"\n")), "seven.eml"),
                  (io.BytesIO(make_message(8)), "eight.eml")]})
    assert response.status_code == 200
    run_jobs()
    assert db.session.scalar(select(func.count(Message.id))) == 2


def test_no_file_is_a_clear_message(app, client, make_user, login, db):
    admin = make_user("ann")
    create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    login(admin)
    response = client.htmx_post("/spaces/TEAM/mail/import", data={}, content_type="multipart/form-data")
    assert "Choose an mbox file" in response.get_data(as_text=True)
