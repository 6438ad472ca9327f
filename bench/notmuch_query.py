"""Time notmuch searches in-process (Debian's python3-notmuch2, run by the system python), for B4.

    /usr/bin/python3 bench/notmuch_query.py MAILDIR REPS QUERIES.json  ->  {"name": [ms, ...], ...} on stdout

Each query lists the newest 50 messages with their subject, as the Mail tab's search does; in-process, so
the figures hold no process start-up."""
import json
import sys
import time

import notmuch2


def main(maildir: str, reps: int, queries_file: str) -> None:
    queries = json.load(open(queries_file))
    db = notmuch2.Database(maildir, config=notmuch2.Database.CONFIG.EMPTY)
    samples = {}
    for name, query in queries.items():
        times = []
        for rep in range(reps + 1):
            started = time.perf_counter()
            found = 0
            for message in db.messages(query, sort=notmuch2.Database.SORT.NEWEST_FIRST):
                message.header("subject")
                found += 1
                if found == 50:
                    break
            if rep:  # the first is a warm-up
                times.append((time.perf_counter() - started) * 1000)
        samples[name] = times
    db.close()
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
