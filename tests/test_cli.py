"""`flask create-admin` and `flask setup-link`, run through Flask's CLI runner."""
from sqlalchemy import select

from webapp.oauth.credentials import secret_for
from webapp.auth.models import User
from webapp.settings import SiteSettings


def test_create_admin_from_the_shell(app, db):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["setup-link"])
    assert "/setup?token=" in result.output and SiteSettings.get().setup_token_hash

    bad = runner.invoke(args=["create-admin", "--username", "Root!", "--email", "nope", "--full-name", "R",
                              "--password", "short"])
    assert bad.exit_code == 1 and "username:" in bad.output and "password:" in bad.output
    assert db.session.scalar(select(User)) is None

    ok = runner.invoke(args=["create-admin", "--username", "root", "--email", "Root@Example.org",
                             "--full-name", "Rita Root", "--password", "long enough pw"])
    assert ok.exit_code == 0, ok.output
    db.session.expire_all()
    root = db.session.scalar(select(User))
    assert root.is_admin and root.email == "root@example.org" and root.check_password("long enough pw")
    assert SiteSettings.get().setup_token_hash is None  # the printed link no longer works
    assert "Users exist already" in runner.invoke(args=["setup-link"]).output

    again = runner.invoke(args=["create-admin", "--username", "root", "--email", "x@example.org",
                                "--full-name", "X", "--password", "long enough pw"])
    assert again.exit_code != 0 and "That username is taken." in again.output


def test_rotate_keys_re_encrypts_every_stored_password(app, db, make_user):
    from cryptography.fernet import Fernet

    from tests.conftest import TEST_KEY
    from webapp.archive.services import AccountData, create_account
    from webapp.security import SecretBox
    from webapp.spaces.services import create_site_space

    space = create_site_space(make_user("ann"), "TEAM", "Team")
    account = create_account(space, AccountData(name="a", protocol="imaps", host="mail.example.org", port=993, username="u",
                       password="pw-1", require_starttls=False, folder="INBOX", trusted_ca_pem=""))
    from webapp.outgoing.servers import ServerData, create_server, profile

    server = create_server(ServerData("SMTP", "site@example.org", "", "", "smtp.example.org", 587, "starttls",
                                      "mailer", "smtp-pw", 30, "none", ""))
    from webapp.oauth.models import OAuthGrant, OAuthProvider
    from webapp.security import secret_box

    provider = OAuthProvider(name="P", kind="generic", client_id="id", client_secret_encrypted=secret_box().encrypt(
        "client-secret"), authorization_endpoint="https://idp.example/a", token_endpoint="https://idp.example/t")
    db.session.add(provider)
    db.session.flush()
    grant = OAuthGrant(provider_id=provider.id, refresh_token_encrypted=secret_box().encrypt("refresh-1"),
                       access_token_encrypted=secret_box().encrypt("access-1"))
    db.session.add(grant)
    db.session.commit()
    new_key = Fernet.generate_key().decode()
    app.extensions["spacemail.secret_box"] = SecretBox([new_key, TEST_KEY])  # the new key put first
    result = app.test_cli_runner().invoke(args=["rotate-keys"])
    assert result.exit_code == 0 and "Re-encrypted 5 secret" in result.output
    app.extensions["spacemail.secret_box"] = SecretBox([new_key])  # the old key removed
    db.session.expire_all()
    assert secret_for(account) == "pw-1"
    assert profile(server).password == "smtp-pw"
    assert SecretBox([new_key]).decrypt(db.session.get(OAuthProvider, provider.id).client_secret_encrypted) == \
        "client-secret"
    assert SecretBox([new_key]).decrypt(db.session.get(OAuthGrant, grant.id).refresh_token_encrypted) == "refresh-1"
