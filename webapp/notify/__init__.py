"""Watches, notifications, the daily report and reply by email. Its routes are loaded by create_app (webapp/__init__.py), so importing a model
or a service from here never runs the views."""
from flask import Blueprint

bp = Blueprint("notify", __name__)
