"""System administration: users, apps, settings, workers. Its routes are loaded by create_app (webapp/__init__.py), so importing a model
or a service from here never runs the views."""
from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")
