"""Settings for the `rq` command line (`rq worker -c workers.rq_settings`, `rq cron -c workers.rq_settings`):
the same Redis as the web's, from the same environment: SPACEMAIL_REDIS_URL, or Sentinel when
SPACEMAIL_REDIS_SENTINELS is set (README › Production)."""
import os

_sentinels = [h.strip() for h in os.environ.get("SPACEMAIL_REDIS_SENTINELS", "").split(",") if h.strip()]
if _sentinels:
    SENTINEL = {"INSTANCES": [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in _sentinels],
                "MASTER_NAME": os.environ.get("SPACEMAIL_REDIS_SENTINEL_MASTER", "mymaster"),
                "PASSWORD": os.environ.get("SPACEMAIL_REDIS_PASSWORD"), "SOCKET_TIMEOUT": 30}
else:
    REDIS_URL = os.environ.get("SPACEMAIL_REDIS_URL", "redis://127.0.0.1:6379/0")
