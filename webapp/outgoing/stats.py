"""What the mail queue did per day, kept after its rows are gone, and the queue page's 30-day chart (plain SVG)."""
import functools
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import TextClause, select, text

from webapp.extensions import db
from webapp.outgoing import limits
from webapp.outgoing.models import MailDay
from webapp.timeutil import utcnow

SERIES = (("sent", "Sent"), ("waited", "Waited"), ("retried", "Retried"), ("failed", "Failed"),
          ("bounced", "Bounced"), ("suppressed", "Suppressed"))
WIDTH, HEIGHT, PAD = 620, 140, 22


def add(**counts: int) -> None:
    """Add to today's counts, in the caller's transaction: one statement whoever else is counting."""
    counts = {name: n for name, n in counts.items() if n}
    if counts:
        db.session.execute(_upsert(), {"day": limits.clock().strftime("%Y-%m-%d"),
                                       **{name: counts.get(name, 0) for name, _label in SERIES}})


@functools.cache
def _upsert() -> TextClause:
    """INSERT ... ON CONFLICT DO UPDATE, which SQLite and PostgreSQL spell alike; written once, as text. A sender
    counts each group of outcomes: built with the dialects' insert() each time it cost 1.3 ms a group."""
    names = [name for name, _label in SERIES]
    return text(f"INSERT INTO {MailDay.__tablename__} (day, {', '.join(names)}) "
                f"VALUES (:day, {', '.join(':' + n for n in names)}) ON CONFLICT (day) DO UPDATE SET "
                + ", ".join(f"{n} = {MailDay.__tablename__}.{n} + excluded.{n}" for n in names))


@dataclass
class Bar:
    x: float
    y: float
    height: float
    series: str
    label: str


@dataclass
class Chart:
    days: list[dict]  # oldest first: {"day": "2026-12-01", "sent": 3, ...}
    bars: list[Bar]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD

    @property
    def totals(self) -> dict[str, int]:
        return {name: sum(d[name] for d in self.days) for name, _label in SERIES}


def last_days(count: int = 30) -> Chart:
    """The last `count` days (today included), each series stacked in one bar a day."""
    today = utcnow().date()
    names = [(today - timedelta(days=count - 1 - i)).isoformat() for i in range(count)]
    stored = {d.day: d for d in db.session.scalars(select(MailDay).where(MailDay.day >= names[0]))}
    days = [{"day": name, **{s: getattr(stored.get(name), s, 0) or 0 for s, _label in SERIES}} for name in names]
    peak = max([sum(d[s] for s, _label in SERIES) for d in days] + [1])
    slot = (WIDTH - PAD) / count
    bars = []
    for index, day in enumerate(days):
        top = HEIGHT - PAD
        for name, label in SERIES:
            if day[name]:
                height = max((HEIGHT - 2 * PAD) * day[name] / peak, 1.5)
                top -= height
                bars.append(Bar(round(PAD + index * slot + 1, 1), round(top, 1), round(height, 1), name,
                                f"{day['day']}: {day[name]:,} {label.lower()}"))
    return Chart(days, bars, peak)
