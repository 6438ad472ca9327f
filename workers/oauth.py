"""Sign-in providers' tokens: renewed by a worker before they expire, never inside a web request."""
from webapp.oauth.tokens import forget_unused, refresh_due
from workers import job


@job
def refresh_tokens() -> None:
    """Every minute from workers/cron.py: renew the access tokens in use that expire soon; forget abandoned sign-ins."""
    refresh_due()
    forget_unused()
