"""Sign-in providers (Administration) and the Connect flow's bad input: state, replayed codes, provider errors,
http URLs, redirects to private addresses, slow and garbage answers. Against the real test authorization server."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from tests.oauth_helpers import callback_query, connect, make_provider
from tests.oauth_server import CLIENT_SECRET
from webapp.extensions import db
from webapp.mailnet import MailboxError
from webapp.oauth.models import GRANT_RECONNECT, OAuthFlow, OAuthGrant, OAuthProvider
from webapp.oauth.providers import MICROSOFT_APP_SCOPE
from webapp.security import secret_box
from webapp.spaces.services import create_site_space

FORM = {"name": "Box", "description": "", "protocol": "imaps", "host": "localhost", "port": "993",
        "username": "", "password": "", "folder": "INBOX", "trusted_ca_pem": "",
        "return_to": "/spaces/TEAM/mail-accounts/new"}


@pytest.fixture
def root(make_user, login):
    user = make_user("root", admin=True)
    login(user)
    return user


@pytest.fixture
def team(app, root, oauth_server):
    create_site_space(root, "TEAM", "Team")
    db.session.commit()
    return make_provider(app, oauth_server)


def test_presets_show_the_redirect_uri_and_documented_scopes(client, root):
    page = client.get("/admin/sign-in-providers/new").get_data(as_text=True)
    assert "http://spacemail.test/oauth/callback" in page
    assert "https://mail.google.com/" in page and "https://outlook.office.com/IMAP.AccessAsUser.All" in page

    saved = client.post("/admin/sign-in-providers/new", data={
        "kind": "microsoft", "name": "Contoso 365", "tenant": "contoso.onmicrosoft.com", "client_id": "app-id",
        "client_secret": "the client sécret", "app_mailboxes": "archive@contoso.com"})
    assert saved.status_code == 302, saved.get_data(as_text=True)
    provider = db.session.scalar(select(OAuthProvider))
    assert provider.authorization_endpoint == \
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    assert provider.token_endpoint.endswith("/contoso.onmicrosoft.com/oauth2/v2.0/token")
    assert "offline_access" in provider.scopes and "https://outlook.office.com/SMTP.Send" in provider.scopes
    assert "https://outlook.office.com/POP.AccessAsUser.All" in provider.scopes
    assert provider.app_scope == MICROSOFT_APP_SCOPE and provider.mail_hosts.split() == [
        "outlook.office365.com", "smtp.office365.com"]
    assert secret_box().decrypt(provider.client_secret_encrypted) == "the client sécret"
    edit = client.get(f"/admin/sign-in-providers/{provider.id}").get_data(as_text=True)
    assert "the client sécret" not in edit and provider.client_secret_encrypted not in edit
    assert "IMAP.AccessAsUser.All" in edit and "http://spacemail.test/oauth/callback" in edit

    google = client.post("/admin/sign-in-providers/new", data={"kind": "google", "name": "Gmail",
                                                               "client_id": "x.apps.googleusercontent.com"})
    assert google.status_code == 302
    gmail = db.session.scalar(select(OAuthProvider).where(OAuthProvider.name == "Gmail"))
    assert gmail.scopes == "openid email https://mail.google.com/"
    assert gmail.token_endpoint == "https://oauth2.googleapis.com/token"


@pytest.mark.parametrize("values, message", [
    ({"kind": "generic", "authorization_endpoint": "http://idp.example.com/auth",
      "token_endpoint": "https://idp.example.com/token", "scopes": "mail"}, "must start with https://"),
    ({"kind": "generic", "scopes": "mail"}, "discovery URL, or both"),
    ({"kind": "microsoft", "tenant": "bad tenant!"}, "tenant"),
    ({"kind": "generic", "discovery_url": "https://127.0.0.1:1/.well-known/openid-configuration", "scopes": "m"},
     "loopback address"),
])
def test_bad_provider_settings_are_refused_on_the_form(client, root, values, message):
    response = client.post("/admin/sign-in-providers/new", data={"name": "P", "client_id": "id", **values})
    assert response.status_code == 200 and message in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(OAuthProvider.id))) == 0


def test_only_system_admins_manage_providers(client, make_user, login):
    login(make_user("ann"))
    assert client.get("/admin/sign-in-providers").status_code == 403
    assert client.post("/admin/sign-in-providers/new", data={"name": "x"}).status_code == 403


def test_client_secret_from_configuration(app, client, root, oauth_server, monkeypatch):
    provider = make_provider(app, oauth_server, client_secret="")
    app.config["OAUTH_CLIENT_SECRETS"] = {"SPACEMAIL_OAUTH_SECRET_TEST_PROVIDER": CLIENT_SECRET}
    page = client.get(f"/admin/sign-in-providers/{provider.id}").get_data(as_text=True)
    assert "SPACEMAIL_OAUTH_SECRET_TEST_PROVIDER" in page and "taken from the environment" in page
    create_site_space(root, "TEAM", "Team")
    db.session.commit()
    ticket = connect(client, dict(FORM, auth_method=f"oauth:{provider.id}"), "user1@mail.test")
    assert db.session.scalar(select(OAuthFlow).where(OAuthFlow.ticket == ticket)).grant_id is not None


def test_state_from_another_session_is_refused(team, client, app, login, root):
    query = callback_query(client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test")
    other = app.test_client()
    login(root, other)  # the same person, signed in elsewhere (or an attacker's session)
    response = other.get(f"/oauth/callback?{query}")
    assert response.status_code == 400 and "another session" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(OAuthGrant.id))) == 0


def test_state_that_matches_nothing_and_a_replayed_callback(team, client):
    assert client.get("/oauth/callback?state=forged&code=abc").status_code == 400
    query = callback_query(client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test")
    assert client.get(f"/oauth/callback?{query}").status_code == 302
    again = client.get(f"/oauth/callback?{query}")
    assert again.status_code == 400 and "already used" in again.get_data(as_text=True)
    assert db.session.scalar(select(func.count(OAuthGrant.id))) == 1


def test_a_code_replayed_at_the_provider_is_refused(team, client, oauth_server):
    """Two flows, and the code of the first sent with the second's state: the provider refuses the used code."""
    first = dict(pair.split("=", 1) for pair in callback_query(
        client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test").split("&"))
    assert client.get(f"/oauth/callback?code={first['code']}&state={first['state']}").status_code == 302
    second = dict(pair.split("=", 1) for pair in callback_query(
        client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test").split("&"))
    response = client.get(f"/oauth/callback?code={first['code']}&state={second['state']}")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "could not be completed" in page and "invalid_grant" in page
    assert first["code"] not in page


def test_the_person_denies_access(team, client):
    query = callback_query(client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test", answer="deny")
    response = client.get(f"/oauth/callback?{query}")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "did not grant access" in page and "access_denied" in page
    assert db.session.scalar(select(func.count(OAuthGrant.id))) == 0


def test_a_ticket_is_only_good_for_the_person_who_connected(team, client, app, make_user, login):
    ticket = connect(client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test")
    mallory = make_user("mallory", admin=True)
    other = app.test_client()
    login(mallory, other)
    response = other.post("/spaces/TEAM/mail-accounts/new", data=dict(
        FORM, auth_method=f"oauth:{team.id}", username="user1@mail.test", oauth_ticket=ticket))
    assert response.status_code == 200 and "Connect with Test Provider first" in response.get_data(as_text=True)


def test_tokens_only_go_to_the_providers_mail_servers_and_over_tls(team, client):
    ticket = connect(client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test")
    evil = client.post("/spaces/TEAM/mail-accounts/new", data=dict(
        FORM, auth_method=f"oauth:{team.id}", host="mail.example.net", username="user1@mail.test",
        oauth_ticket=ticket))
    assert "may only go to its mail servers" in evil.get_data(as_text=True)
    plain = client.post("/spaces/TEAM/mail-accounts/new", data=dict(
        FORM, auth_method=f"oauth:{team.id}", protocol="imap", port="143", username="user1@mail.test",
        oauth_ticket=ticket))
    assert "needs an encrypted connection" in plain.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(db.metadata.tables["mail_accounts"])) == 0


class _Answers(BaseHTTPRequestHandler):
    """A misbehaving token endpoint: a redirect to a private address, garbage, or silence."""

    mode = "redirect"

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.mode == "slow":
            time.sleep(3)
        if self.mode == "redirect":
            self.send_response(307)
            self.send_header("Location", "http://10.0.0.1/token")
            self.end_headers()
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>not json</html>")
        except BrokenPipeError:
            pass  # the slow case: Spacemail gave up waiting, as it should

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("mode, message", [
    ("redirect", "does not follow redirects"),
    ("garbage", "not an OAuth 2.0 response"),
    ("slow", "did not answer within 1 seconds"),
])
def test_a_misbehaving_token_endpoint_gets_a_clear_message(app, team, client, mode, message):
    _Answers.mode = mode
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app.config["OAUTH_TIMEOUT_SECONDS"] = 1
    try:
        team.token_endpoint = f"http://127.0.0.1:{server.server_address[1]}/token"
        db.session.commit()
        query = callback_query(client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test")
        response = client.get(f"/oauth/callback?{query}")
        assert response.status_code == 302
        page = client.get(response.headers["Location"]).get_data(as_text=True)
        assert message in page
    finally:
        server.shutdown()
        server.server_close()
    assert db.session.scalar(select(func.count(OAuthGrant.id))) == 0


def test_a_refused_refresh_marks_reconnect_needed_without_a_500(app, team, client, oauth_server):
    from webapp.oauth.tokens import refresh

    ticket = connect(client, dict(FORM, auth_method=f"oauth:{team.id}"), "user1@mail.test")
    grant = db.session.scalar(select(OAuthFlow).where(OAuthFlow.ticket == ticket)).grant
    oauth_server.revoke_user("user1@mail.test")
    with pytest.raises(MailboxError) as caught:
        refresh(grant, force=True)
    assert caught.value.kind == "reconnect_needed" and "Reconnect needed" in caught.value.message
    assert db.session.get(OAuthGrant, grant.id).status == GRANT_RECONNECT
    assert client.get("/admin/sign-in-providers").status_code == 200


def test_loopback_http_is_refused_unless_configured(app, team, client):
    app.config["OAUTH_ALLOW_HTTP_LOOPBACK"] = False
    response = client.htmx_post("/oauth/connect", data=dict(FORM, auth_method=f"oauth:{team.id}"))
    assert response.status_code == 204  # starting only sends the browser there; the exchange is refused
    from webapp.oauth.http import ProviderError, call

    with pytest.raises(ProviderError) as caught:
        call(team.token_endpoint, {"grant_type": "x"})
    assert "must start with https://" in caught.value.message
