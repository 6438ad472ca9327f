from flask import Blueprint

bp = Blueprint("outgoing", __name__, url_prefix="/admin")

from webapp.outgoing import routes  # noqa: E402,F401
