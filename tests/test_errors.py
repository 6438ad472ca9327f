"""The 500 page, for a page and for htmx; the error is logged, never shown."""
import pytest

from webapp import create_app
from webapp.extensions import db
from tests.conftest import Client


@pytest.fixture
def broken_client(app):
    """The same app config with one extra route that fails (a separate app: the matrix stays exact)."""
    broken = create_app({**app.config, "TESTING": False, "PROPAGATE_EXCEPTIONS": False})

    @broken.route("/boom")
    def boom():
        raise RuntimeError("secret detail from deep inside")

    broken.test_client_class = Client
    yield broken.test_client()
    with broken.app_context():
        db.engine.dispose()  # its own engine: leave no connection behind for the next test


def test_server_error_page_hides_the_cause(broken_client):
    page = broken_client.get("/boom")
    body = page.get_data(as_text=True)
    assert page.status_code == 500 and "Something went wrong" in body and "<html" in body
    assert "secret detail" not in body and "Traceback" not in body


def test_server_error_for_htmx_goes_to_the_flash_area(broken_client):
    fragment = broken_client.htmx_get("/boom")
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 500 and fragment.headers["HX-Retarget"] == "#flash"
    assert "<html" not in body and "Something went wrong" in body and "secret detail" not in body
