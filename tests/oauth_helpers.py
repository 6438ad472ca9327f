"""Builders for OAuth tests: a sign-in provider pointing at the tests' authorization server, and "Connect" done
the way a browser does it (the form, the provider's consent page, the callback)."""
import http.client
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.oauth_server import CLIENT_ID, CLIENT_SECRET, DOMAIN
from webapp.extensions import db
from webapp.oauth.models import GENERIC
from webapp.oauth.providers import ProviderData, save_provider
from webapp.settings import SiteSettings


def make_provider(app, oauth_server, name="Test Provider", **overrides):
    """A provider row for the loopback authorization server (http allowed for loopback, as in tests only)."""
    app.config["OAUTH_ALLOW_HTTP_LOOPBACK"] = True
    SiteSettings.get().mail_host_allowlist = "127.0.0.1\n::1"
    values = dict(name=name, kind=GENERIC, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                  discovery_url=oauth_server.base + "/.well-known/openid-configuration",
                  scopes="openid email offline_access https://mail.test/mail", mail_hosts="localhost\n127.0.0.1")
    values.update(overrides)
    provider = save_provider(ProviderData(**values))
    db.session.commit()
    return provider


def mailbox_address(username: str) -> str:
    """The address the tests' provider signs a Dovecot user in as (Dovecot opens user3 for user3@mail.test)."""
    return f"{username}@{DOMAIN}"


def consent(authorize_url: str, user: str, answer: str = "allow") -> str:
    """What the person does on the provider's page; returns where the provider sends the browser back."""
    parts = urlsplit(authorize_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", f"{parts.path}?{parts.query}", urlencode({"user": user, "answer": answer}),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        assert response.status == 302, response.status
        return response.getheader("Location")
    finally:
        conn.close()


def start_connect(client, form: dict) -> str:
    """Press Connect on a connection form (htmx): the provider's sign-in URL the browser is sent to."""
    response = client.htmx_post("/oauth/connect", data=form)
    assert response.status_code == 204, response.get_data(as_text=True)
    return response.headers["HX-Redirect"]


def connect(client, form: dict, user: str) -> str:
    """Connect, consent as `user`, come back: the ticket the form then carries (from the page's address)."""
    back = consent(start_connect(client, form), user)
    parts = urlsplit(back)
    assert parts.netloc == "spacemail.test" and parts.path == "/oauth/callback", back
    response = client.get(f"/oauth/callback?{parts.query}")
    assert response.status_code == 302, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(form["return_to"]), location
    return parse_qs(urlsplit(location).query)["oauth"][0]


def callback_query(client, form: dict, user: str, answer: str = "allow") -> str:
    """Connect and consent, but leave the callback to the test: the query string the provider sent back."""
    return urlsplit(consent(start_connect(client, form), user, answer)).query
