"""`flask` commands: first-run link, create-admin."""
import click
from flask import Flask
from werkzeug.datastructures import MultiDict

from webapp.extensions import db


def register_cli(app: Flask) -> None:
    register_key_rotation(app)
    register_doctor(app)
    register_backup(app)

    @app.cli.command("setup-link")
    def setup_link():
        """Print a one-time link that creates the first system administrator (only while none exists)."""
        from webapp.settings import base_url
        from webapp.auth.services import issue_setup_token

        token = issue_setup_token()
        if token is None:
            click.echo("Users exist already: sign in at " + base_url() + "/login")
        else:
            click.echo(f"First run: open {base_url()}/setup?token={token} to create the administrator.")

    @app.cli.command("create-admin")
    @click.option("--username", prompt=True)
    @click.option("--email", prompt=True)
    @click.option("--full-name", prompt="Full name")
    @click.password_option()
    def create_admin(username, email, full_name, password):
        """Create a system administrator from the shell (the same checks as the setup page)."""
        from webapp.auth.forms import SetupForm
        from webapp.auth.services import AuthError, create_user

        with app.test_request_context():
            form = SetupForm(meta={"csrf": False}, formdata=MultiDict({
                "username": username, "email": email, "full_name": full_name,
                "password": password, "confirm": password,
            }))
            if not form.validate():
                for field, errors in form.errors.items():
                    click.echo(f"{field}: {'; '.join(errors)}", err=True)
                raise SystemExit(1)
        try:
            user = create_user(form.username.data, form.email.data, form.full_name.data, password, is_admin=True)
        except AuthError as exc:
            raise click.ClickException(str(exc))
        from webapp.settings import SiteSettings

        SiteSettings.get().setup_token_hash = None
        db.session.commit()
        click.echo(f"System administrator {user.username} created.")


def register_key_rotation(app: Flask) -> None:
    @app.cli.command("rotate-keys")
    def rotate_keys():
        """Re-encrypt every stored secret with the first key of SPACEMAIL_ENCRYPTION_KEYS."""
        from webapp.security import secret_box

        count = 0
        for model, column in _secret_columns():
            for row in db.session.scalars(db.select(model).where(column.is_not(None))):
                setattr(row, column.key, secret_box().rotate(getattr(row, column.key)))
                count += 1
        db.session.commit()
        click.echo(f"Re-encrypted {count} secret(s) with the first key. Old keys can now be removed.")


def _secret_columns():
    from webapp.archive.models import ConnectionTest, MailAccount
    from webapp.notify.models import ReplyMailbox
    from webapp.oauth.models import OAuthFlow, OAuthGrant, OAuthProvider
    from webapp.outgoing.models import SmtpServer

    return [(OAuthProvider, OAuthProvider.client_secret_encrypted), (OAuthGrant, OAuthGrant.refresh_token_encrypted),
            (OAuthGrant, OAuthGrant.access_token_encrypted), (OAuthFlow, OAuthFlow.verifier_encrypted),
            (ReplyMailbox, ReplyMailbox.password_encrypted), (MailAccount, MailAccount.password_encrypted), (ConnectionTest, ConnectionTest.password_encrypted),
            (SmtpServer, SmtpServer.password_encrypted)]


def register_doctor(app: Flask) -> None:
    @app.cli.command("doctor")
    @click.option("--quiet", is_flag=True, help="Print only what is not ok (for start-up scripts).")
    def doctor(quiet):
        """Check what a production install needs; exits 1 when a check fails."""
        from webapp import health

        health.report_host("doctor")
        checks = health.run_checks()
        marks = {health.OK: "ok  ", health.WARN: "WARN", health.FAIL: "FAIL"}
        for check in checks:
            if quiet and check.status == health.OK:
                continue
            click.echo(f"{marks[check.status]}  {check.name}: {check.found}")
            if check.fix and check.status != health.OK:
                click.echo(f"      → {check.fix}")
        if not quiet:
            click.echo(health.summary(checks))
        if any(c.status == health.FAIL for c in checks):
            raise SystemExit(1)


def register_backup(app: Flask) -> None:
    @app.cli.command("backup")
    @click.argument("destination", type=click.Path(dir_okay=False, writable=True))
    def backup(destination):
        """Copy the database to DESTINATION while Spacemail runs: SQLite through its backup API (a consistent
        copy, not a file copy of a database in use), PostgreSQL with pg_dump's custom format (restore with
        pg_restore). Keep the keys with it: without the encryption keys the stored passwords cannot be read."""
        import shutil
        import sqlite3
        import subprocess

        url = db.engine.url
        if url.get_backend_name() == "sqlite":
            source = sqlite3.connect(url.database)
            target = sqlite3.connect(destination)
            with target:
                source.backup(target)
            target.close()
            source.close()
        else:
            pg_dump = shutil.which("pg_dump")
            if pg_dump is None:
                raise click.ClickException("pg_dump is not installed (Debian: postgresql-client).")
            plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
            done = subprocess.run([pg_dump, "--format=custom", "--no-owner", f"--file={destination}", plain],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise click.ClickException(f"pg_dump failed: {done.stderr.strip()}")
        sources = app.config.get("KEY_SOURCES", {})
        click.echo(f"Database copied to {destination}.")
        if "instance" in sources.values():
            click.echo(f"Back up the keys too: {app.instance_path}/secret_key and encryption_keys.")
        else:
            click.echo("Back up the keys too: SPACEMAIL_SECRET_KEY and SPACEMAIL_ENCRYPTION_KEYS.")
