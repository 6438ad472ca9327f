"""The Spacemail web app: create_app() wires config, extensions, blueprints, errors and CLI."""
import importlib
from pathlib import Path

from flask import Flask, flash, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from sqlalchemy import event
from werkzeug.exceptions import HTTPException

from webapp.config import INSTANCE_DIR, Config, engine_options, sqlite_pragmas
from webapp import extensions
from webapp.extensions import csrf, db, limiter, login_manager, migrate
from webapp.htmx import is_htmx
from webapp.params import BoundedInt, refuse_nul
from webapp.security import SecretBox, set_security_headers


# Each blueprint package and the modules holding its views. The packages do not import their views themselves:
# that made every model import run the routes, and turned any import between two packages into a cycle.
BLUEPRINTS = (("auth", ("routes", "link_routes")), ("spaces", ("routes",)), ("admin", ("routes",)),
              ("archive", ("routes", "read_routes", "feed_routes")), ("outgoing", ("routes", "bounce_routes")), ("content", ("routes",)),
              ("notify", ("routes",)), ("oauth", ("routes",)))


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__, instance_path=str(INSTANCE_DIR), template_folder="../templates",
                static_folder="../static")
    app.config.from_object(Config())
    app.config.update(config or {})
    for name in ("SECRET_KEY", "ENCRYPTION_KEYS"):  # given by the caller (tests, benchmarks): not generated
        if name in (config or {}):
            app.config["KEY_SOURCES"] = {**app.config["KEY_SOURCES"], name.lower(): "configuration"}
    from webapp.jobs import limiter_storage_uri

    app.config["RATELIMIT_STORAGE_URI"] = limiter_storage_uri(app.config)  # one Redis for jobs and rate limits
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config["SQLALCHEMY_DATABASE_URI"],
                                                             app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    # The remember cookie is exactly as Secure as the session cookie (Flask-Login's has its own flag).
    app.config["REMEMBER_COOKIE_SECURE"] = app.config["SESSION_COOKIE_SECURE"]
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(app.root_path).parent / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    extensions.htmx.init_app(app)
    limiter.init_app(app)
    app.extensions["spacemail.secret_box"] = SecretBox(app.config["ENCRYPTION_KEYS"])
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", sqlite_pragmas(app.config.get("SQLITE_SYNCHRONOUS", "FULL")))

    from webapp import models  # noqa: F401  (every table, for Alembic and create_all)

    app.url_map.converters["int"] = BoundedInt  # before any route is added
    for package, views in BLUEPRINTS:
        for module in views:
            importlib.import_module(f"webapp.{package}.{module}")  # the views attach themselves to the blueprint
        app.register_blueprint(importlib.import_module(f"webapp.{package}").bp)

    from webapp.notify import events

    events.connect()
    from webapp.oauth import notices

    notices.connect()
    _register_login(app)
    _register_errors(app)
    _register_templates(app)
    app.before_request(refuse_nul)
    app.after_request(set_security_headers)

    from webapp.cli import register_cli

    register_cli(app)
    return app


def _register_login(app: Flask) -> None:
    from webapp.auth import sessions

    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to see that page."
    login_manager.login_message_category = "info"

    login_manager.user_loader(sessions.load)  # the same check for the session cookie and the remember cookie
    app.teardown_appcontext(sessions.touch_after_request)  # runs before Flask-SQLAlchemy's own (registered first)

    @login_manager.unauthorized_handler
    def unauthorized():
        target = url_for("auth.login", next=request.full_path.rstrip("?") if request.method == "GET" else None)
        if is_htmx():
            return "", 401, {"HX-Redirect": target}
        flash(login_manager.login_message, "info")
        return redirect(target)


ERROR_TEXT = {
    400: ("Bad request", "The form was stale or incomplete. Reload the page and try again."),
    429: ("Too many requests", "Wait a minute, then try again."),
    401: ("Sign-in needed", "This address needs a feed token or a sign-in."),
    410: ("Gone", "This link no longer works."),
    403: ("Not allowed", "You do not have permission to see or change this. A space admin can give you a role."),
    404: ("Not found", "There is nothing here. It may have been removed, or the link is wrong."),
    405: ("Not allowed", "That action is not available here."),
    500: ("Something went wrong", "The error has been logged. Try again in a moment."),
}


def _register_errors(app: Flask) -> None:
    def render_error(code: int, detail: str | None = None):
        title, text = ERROR_TEXT.get(code, (str(code), detail or ""))
        if is_htmx():
            # htmx is configured to swap error responses; this one goes to the message area.
            response = app.make_response((render_template("_error_flash.html", title=title, text=detail or text), code))
            response.headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
        else:
            response = app.make_response((render_template("error.html", code=code, title=title, text=detail or text), code))
        response.vary.add("HX-Request")
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return render_error(400, "The form expired or did not come from this site. Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if exc.code in ERROR_TEXT or exc.code == 429:
            custom = exc.description if exc.description != type(exc).description else None
            return render_error(exc.code, custom)
        return exc

    @app.errorhandler(500)
    def server_error(exc):
        db.session.rollback()
        return render_error(500)


def _register_templates(app: Flask) -> None:
    from flask_login import current_user

    from webapp.settings import SiteSettings
    from webapp.archive.trash import may_delete
    from webapp.spaces.access import role_in
    from webapp.settings import format_local
    from webapp.timeutil import format_age

    @app.context_processor
    def site():
        return {"site": SiteSettings.get()}

    app.jinja_env.filters["localtime"] = format_local
    app.jinja_env.filters["age"] = format_age
    from webapp.archive.display import format_size

    app.jinja_env.filters["filesize"] = format_size
    from webapp.notify.watches import is_watching, watcher_count

    app.jinja_env.globals["watching"] = lambda scope, space, page=None: is_watching(current_user, scope, space, page)
    app.jinja_env.globals["watcher_count"] = watcher_count
    app.jinja_env.globals["is_htmx"] = is_htmx
    from webapp.outgoing.suppression import suppression_of

    app.jinja_env.globals["mail_bounced"] = lambda: suppression_of(current_user.email)
    app.jinja_env.globals["space_role"] = lambda space: role_in(current_user, space)
    app.jinja_env.globals["may_delete_mail"] = lambda space: may_delete(current_user, space)
