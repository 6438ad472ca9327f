"""View decorators every blueprint shares."""
import functools

from flask import abort
from flask_login import current_user, login_required


def admin_required(view):
    """System administrators only: others get 403, signed-out visitors the sign-in page."""

    @functools.wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper
