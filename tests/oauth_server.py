"""A real OAuth 2.0 authorization server on loopback for the tests, built with authlib's server side.

Authorization code with PKCE (S256), refresh with rotation (the old refresh token stops working at once),
client credentials (app-only), revocation (RFC 7009), and an introspection endpoint (RFC 7662) that Dovecot's
oauth2 passdb and the OAuth SMTP sink ask. Access tokens live `access_ttl` seconds, so a test can make them
expire in the middle of a fetch. The consent page asks which mailbox to sign in as and has Allow and Deny.
"""
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, jsonify, render_template_string, request
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.conftest import free_port

CLIENT_ID, CLIENT_SECRET = "spacemail-test-client", "test client sécret"
DOMAIN = "mail.test"
MAIL_SCOPE = "https://mail.test/mail"


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: set = field(default_factory=set)

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return next(iter(self.redirect_uris), None)

    def get_allowed_scope(self, scope):
        return scope

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return hmac.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token", "client_credentials")


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str | None
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


@dataclass
class Token(TokenMixin):
    client_id: str
    access_token: str
    refresh_token: str | None
    scope: str
    user: str | None
    issued_at: float
    expires_in: int
    revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client):
        return client.client_id == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return self.user

    def get_client(self):
        return None


CONSENT = """<!doctype html><title>Test provider: sign in</title>
<h1>Test provider</h1><p>Spacemail asks to read and send mail as you ({{ scope }}).</p>
<form method="post"><label>Sign in as <input name="user" value="{{ user }}"></label>
<button name="answer" value="allow">Allow</button> <button name="answer" value="deny">Deny</button></form>"""


class TestProvider:
    """The server and its store; tests reach in (revoke a user's grants, change token lifetimes, count calls)."""

    def __init__(self, access_ttl: int = 3600) -> None:
        self.access_ttl = access_ttl
        self.lock = threading.RLock()
        self.client = Client(CLIENT_ID, CLIENT_SECRET)
        self.codes: dict[str, Code] = {}
        self.tokens: list[Token] = []
        self.token_requests: list[dict] = []  # grant types and whether a code_verifier came, for the tests
        self.answer_token_with: tuple[int, str] | None = None  # a canned answer (status, body) for fault tests
        self.app_mailbox = ""  # the one mailbox app-only (client credentials) tokens may open
        self.app = self._make_app()
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True, request_handler=_Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()

    # What tests do to the provider --------------------------------------------------------------------------
    def revoke_user(self, user: str) -> None:
        """What a user removing the app's access in their account settings does: every token stops working."""
        with self.lock:
            for token in self.tokens:
                if token.user == user:
                    token.revoked = token.refresh_revoked = True

    def active_refresh_tokens(self, user: str) -> list[str]:
        with self.lock:
            return [t.refresh_token for t in self.tokens if t.user == user and t.refresh_token and not t.refresh_revoked]

    def introspect(self, access_token: str) -> dict:
        with self.lock:
            for token in self.tokens:
                if hmac.compare_digest(token.access_token, access_token):
                    if token.revoked or token.is_expired():
                        return {"active": False}
                    # An app-only token reaches the mailbox its application access policy names (Exchange's way).
                    return {"active": True, "username": token.user or self.app_mailbox, "scope": token.scope,
                            "client_id": token.client_id, "exp": int(token.issued_at + token.expires_in)}
        return {"active": False}

    # The server ---------------------------------------------------------------------------------------------
    def _make_app(self) -> Flask:
        app = Flask("test-oauth-provider")
        app.config.update(SECRET_KEY="test", OAUTH2_REFRESH_TOKEN_GENERATOR=True)
        provider = self

        def save_token(token, req):
            with provider.lock:
                user = req.user
                provider.tokens.append(Token(CLIENT_ID, token["access_token"], token.get("refresh_token"),
                                             token.get("scope", ""), user, time.time(), token["expires_in"]))

        server = AuthorizationServer(app, query_client=lambda cid: self.client if cid == CLIENT_ID else None,
                                     save_token=save_token)
        server.register_token_generator("default", self._generator(server))

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code, req):
                with provider.lock:
                    provider.codes[code] = Code(code, CLIENT_ID, req.payload.redirect_uri, req.scope or "", req.user,
                                                req.payload.data.get("code_challenge"),
                                                req.payload.data.get("code_challenge_method"))

            def query_authorization_code(self, code, client):
                return provider.codes.get(code)

            def delete_authorization_code(self, authorization_code):
                provider.codes.pop(authorization_code.code, None)  # single use: a replayed code is refused

            def authenticate_user(self, authorization_code):
                return authorization_code.user

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

            def authenticate_refresh_token(self, refresh_token):
                with provider.lock:
                    for token in provider.tokens:
                        if token.refresh_token == refresh_token and not token.refresh_revoked:
                            return token

            def authenticate_user(self, refresh_token):
                return refresh_token.user

            def revoke_old_credential(self, refresh_token):
                refresh_token.refresh_revoked = True

        class AppGrant(grants.ClientCredentialsGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        class Revocation(RevocationEndpoint):
            CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def query_token(self, token_string, token_type_hint):
                with provider.lock:
                    return next((t for t in provider.tokens if token_string in (t.access_token, t.refresh_token)),
                                None)

            def revoke_token(self, token, req):
                token.revoked = token.refresh_revoked = True

        server.register_grant(CodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)
        server.register_grant(AppGrant)
        server.register_endpoint(Revocation)

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize():
            if request.method == "GET":
                grant = server.get_consent_grant(end_user=None)
                return render_template_string(CONSENT, scope=grant.request.payload.scope,
                                              user=request.args.get("login_hint", "user1@" + DOMAIN))
            grant = server.get_consent_grant(end_user=None)
            user = request.form.get("user", "").strip() if request.form.get("answer") == "allow" else None
            return server.create_authorization_response(grant=grant, grant_user=user or None)

        @app.route("/token", methods=["POST"])
        def issue_token():
            with provider.lock:
                provider.token_requests.append({"grant_type": request.form.get("grant_type"),
                                                "code_verifier": bool(request.form.get("code_verifier"))})
                canned = provider.answer_token_with
            if canned:
                return canned[1], canned[0], {"Content-Type": "application/json"}
            response = server.create_token_response()
            if request.form.get("grant_type") == "authorization_code" and response.status_code == 200:
                body = response.get_json()
                if "openid" in (body.get("scope") or "").split():
                    body["id_token"] = _id_token(_user_of(provider, body["access_token"]))
                    return jsonify(body)
            return response

        @app.route("/revoke", methods=["POST"])
        def revoke():
            return server.create_endpoint_response(Revocation.ENDPOINT_NAME)

        @app.route("/introspect", methods=["POST"])
        def introspect():
            return jsonify(provider.introspect(request.form.get("token", "")))

        @app.route("/.well-known/openid-configuration")
        def discovery():
            return jsonify({"issuer": provider.base, "authorization_endpoint": provider.base + "/authorize",
                            "token_endpoint": provider.base + "/token", "revocation_endpoint": provider.base + "/revoke",
                            "introspection_endpoint": provider.base + "/introspect",
                            "code_challenge_methods_supported": ["S256"]})

        return app

    def _generator(self, server):
        def generate(grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True):
            token = {"token_type": "Bearer", "access_token": secrets.token_urlsafe(32),
                     "expires_in": self.access_ttl, "scope": scope or ""}
            if include_refresh_token and grant_type != "client_credentials":
                token["refresh_token"] = secrets.token_urlsafe(40)
            return token

        return generate


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def _user_of(provider: TestProvider, access_token: str) -> str | None:
    with provider.lock:
        return next((t.user for t in provider.tokens if t.access_token == access_token), None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _id_token(user: str | None) -> str:
    """An OpenID Connect ID token naming the mailbox (HS256 with the client secret, as OIDC allows)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"iss": "test", "sub": hashlib.sha256((user or "").encode()).hexdigest()[:16],
                              "aud": CLIENT_ID, "email": user, "iat": int(time.time()),
                              "exp": int(time.time()) + 600}).encode())
    signature = hmac.new(CLIENT_SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"
