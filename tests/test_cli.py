"""`flask create-admin` and `flask setup-link`, run through Flask's CLI runner."""
from sqlalchemy import select

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
