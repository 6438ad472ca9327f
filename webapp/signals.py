"""What one package tells the others without importing them: content and spaces announce, notify listens.

Receivers run at once, in the sender's transaction, so what they write commits (or rolls back) with the change.
The notify package connects its receivers in `webapp.notify.events.connect()`, which create_app calls.
"""
from blinker import Namespace

_signals = Namespace()

# sender: the Page; kwargs: kind ("created", "edited", "commented"), actor, comment, from_version, to_version.
content_changed = _signals.signal("content-changed")

# sender: the Space; kwargs: user, who may have lost the right to view it (a role removed or lowered).
access_changed = _signals.signal("access-changed")

# sender: the OAuthGrant whose refresh the provider refused (now "Reconnect needed"), after that was committed.
# webapp.oauth.notices tells the people who can connect it again, once.
grant_needs_reconnect = _signals.signal("grant-needs-reconnect")
