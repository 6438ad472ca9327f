from flask import Blueprint

bp = Blueprint("archive", __name__)
from webapp.archive import read_routes, routes  # noqa: E402,F401
