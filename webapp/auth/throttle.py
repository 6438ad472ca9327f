"""Throttling guesses: failed sign-ins (and setup, password change, reset) counted per account and per address.

Moving windows in the Redis the app already uses (Flask-Limiter's storage, the `limits` library): a few failures
slow an account down, more refuse it for a while, and every window runs out, so a person who knows their password
is never locked out for ever. An attacker spreading guesses over many sessions or addresses is still counted per
account; one address guessing many accounts is counted per address.
"""
import logging
import math
import time

from flask import current_app, request
from limits import parse_many
from limits.errors import StorageError
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from webapp.extensions import limiter

log = logging.getLogger(__name__)


class Throttle:
    """The failures of one kind of attempt (`action`) for one account (any text naming it) and this client."""

    def __init__(self, action: str, account: str | None = None) -> None:
        self.action = action
        self.keys = [("address", request.remote_addr or "unknown")]
        if account is not None:
            self.keys.append(("account", account.strip().lower()[:254]))

    def _rules(self, scope: str):
        return parse_many(current_app.config[f"SIGNIN_{scope.upper()}_LIMITS"])

    def _each(self):
        if not current_app.config.get("RATELIMIT_ENABLED", True):
            return  # rate limits switched off for this app (the benchmarks do), sign-in throttling with them
        strategy = MovingWindowRateLimiter(limiter.storage)
        for scope, value in self.keys:
            for rule in self._rules(scope):
                yield strategy, rule, (f"signin:{self.action}:{scope}", value)

    def wait_seconds(self) -> int:
        """0 when an attempt may be made now; else how long until the oldest counted failure runs out."""
        wait = 0.0
        try:
            for strategy, rule, ids in self._each():
                if not strategy.test(rule, *ids):
                    reset = strategy.get_window_stats(rule, *ids).reset_time
                    wait = max(wait, reset - time.time(), 1)
        except (StorageError, RedisError):
            # Redis is down: sign-in stays possible (nothing else would work either), and the log says so.
            log.warning("sign-in throttling is off: its Redis cannot be reached", exc_info=True)
            return 0
        return math.ceil(wait)

    def failed(self) -> None:
        try:
            for strategy, rule, ids in self._each():
                strategy.hit(rule, *ids)
        except (StorageError, RedisError):
            log.warning("sign-in throttling could not count a failure: its Redis cannot be reached", exc_info=True)

    def slow_down(self) -> None:
        """After a few failures each further answer waits a little longer (at most 2 s), so scripts crawl."""
        try:  # one step for each limit that is half used up
            count = sum(strategy.get_window_stats(rule, *ids).remaining < rule.amount // 2
                        for strategy, rule, ids in self._each())
        except (StorageError, RedisError):
            return
        time.sleep(min(count * current_app.config["SIGNIN_SLOW_DOWN_SECONDS"], 2.0))


def refusal(seconds: int) -> str:
    """What the form says while attempts are refused."""
    minutes = math.ceil(seconds / 60)
    if seconds < 60:
        return f"Too many attempts; try again in {seconds} second{'s' if seconds != 1 else ''}."
    return f"Too many attempts; try again in {minutes} minute{'s' if minutes != 1 else ''}."
