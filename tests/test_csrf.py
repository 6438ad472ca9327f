"""Every state-changing route refuses a request without the CSRF token and changes nothing."""
import pytest
from sqlalchemy import select

from tests.test_permissions import MATRIX, _url, matrix, matrix_image, world  # noqa: F401  (fixtures)
from webapp.extensions import db as _db

# RFC 8058: mail clients POST the one-click unwatch with no session and no form; the signed token is the proof.
CSRF_EXEMPT = {"notify.unwatch"}
STATE_CHANGING = [row for row in MATRIX if row[1] == "POST" and row[0] not in CSRF_EXEMPT]


def snapshot():
    """Every row of every table, to prove a refused request changed nothing."""
    return {
        table.name: sorted(map(repr, _db.session.execute(select(table)).all()))
        for table in _db.metadata.sorted_tables
    }


@pytest.mark.parametrize("endpoint, method, kwargs, data, wanted", STATE_CHANGING,
                         ids=[f"{row[0]} {'/'.join(map(str, row[2].values()))}" for row in STATE_CHANGING])
def test_post_without_token_is_refused(matrix, endpoint, method, kwargs, data, wanted):
    client, world, db = matrix.client, matrix.world, _db
    matrix.login(world.people["sysadmin"])
    url = _url(matrix.app, endpoint, kwargs, world.ids)
    # A form that would succeed with the token: enough fields for every route here.
    payload = {**(data or {}), "name": "Changed", "full_name": "Changed", "email": "changed@example.org",
               "site_title": "Changed", "time_zone": "UTC", "person": "user", "role": "admin", "value": "off",
               "key": "NEWKEY", "username": "newbie", "password": "0123456789ab", "confirm": "0123456789ab",
               "current": "x", "login": "sysadmin"}
    before = snapshot()
    response = client.post(url, data=payload, csrf=False)
    assert response.status_code == 400
    assert "did not come from this site" in response.get_data(as_text=True)
    db.session.expire_all()
    assert snapshot() == before


def test_htmx_post_without_token_gets_a_message_in_the_flash_area(app, client, login, world):
    login(world.people["sysadmin"])
    response = client.post("/admin/apps/mail-archiving", data={"value": "off"}, csrf=False,
                           headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert response.headers["HX-Retarget"] == "#flash"
    body = response.get_data(as_text=True)
    assert "<html" not in body and "Reload the page" in body
