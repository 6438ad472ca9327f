"""The one base of every error a person can fix: its text is shown on the form or page as is."""


class UserError(Exception):
    """A problem the user can fix; its text is shown as is."""
