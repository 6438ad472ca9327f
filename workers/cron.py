"""The one `rq cron` configuration: what runs when. Run exactly one `rq cron workers.cron`."""
import os

from rq import cron

from workers.fetch import fetch_due_accounts, purge_trash, tidy_search_index
from workers.notify import fetch_replies, notify_tick
from workers.oauth import refresh_tokens
from workers.send import fetch_bounces, sweep_queue
from workers.system import sweep

QUEUE = os.environ.get("SPACEMAIL_QUEUE", "spacemail")

# Interval jobs also fire when `rq cron` starts, so a restart sweeps at once.
cron.register(sweep, QUEUE, interval=60, job_timeout=120)
cron.register(sweep_queue, QUEUE, interval=60, job_timeout=120)
cron.register(notify_tick, QUEUE, interval=60, job_timeout=600)
cron.register(fetch_replies, QUEUE, interval=60, job_timeout=600)
cron.register(fetch_bounces, QUEUE, interval=60, job_timeout=600)
cron.register(fetch_due_accounts, QUEUE, interval=60, job_timeout=300)
cron.register(refresh_tokens, QUEUE, interval=60, job_timeout=300)
cron.register(tidy_search_index, QUEUE, interval=3600, job_timeout=600)
cron.register(purge_trash, QUEUE, cron="17 3 * * *", job_timeout=3600)
