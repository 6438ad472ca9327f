"""Every model, imported in one place so Alembic and create_all see all tables."""
from webapp.settings import SiteSettings  # noqa: F401
from webapp.auth.models import User  # noqa: F401
from webapp.jobs import JobRun  # noqa: F401
from webapp.spaces.models import Space, SpaceRole  # noqa: F401
from webapp.archive.models import (  # noqa: F401
    ArchiveImport, ConnectionTest, FetchRun, MailAccount, Message, MessageRaw, MessageRef, SeenMessage, Thread,
)
from webapp.outgoing.models import (  # noqa: F401
    Bounce, BounceMailbox, DkimKey, MailDay, OutboundMail, SmtpServer, SmtpServerState, SmtpTest, Suppression,
)
from webapp.content.models import Comment, Page, PageVersion  # noqa: F401
from webapp.oauth.models import OAuthFlow, OAuthGrant, OAuthProvider  # noqa: F401
from webapp.notify.models import ContentEvent, ReplyMailbox, ReplyReceipt, Watch  # noqa: F401
