"""Every route, with ids, dates, cursors and page numbers from the edge of what a database holds: never a 500.

A message id of 20 digits, ?month=0000-01, a diff from=-5 and a keyset cursor with a huge id each gave a 500 (issue
14). Hypothesis draws a route of app.url_map and values for its converters and query arguments, signed in as a system
administrator (who reaches the most code), on the permission matrix's world.
"""
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.routing import IntegerConverter

from tests.test_permissions import world  # noqa: F401  (a fixture)

HUGE = [0, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**19, 10**25]
INTS = st.one_of(st.sampled_from(HUGE), st.integers(min_value=0, max_value=10**30))
WORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
QUERY_VALUES = st.one_of(
    INTS.map(str), st.integers(min_value=-(10**20), max_value=-1).map(str),
    st.sampled_from(["0000-01", "9999-12", "2026-00", "2026-13", "-1", "1e9", "0x10", "", " ", "nan", "١٢"]),
    st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(0, 9999), st.integers(0, 99)),
    st.builds(lambda d, i: f"{d}-{i}", st.sampled_from(["20260101T000000000000", "00010101T000000000000",
                                                        "99991231T235959999999", "2026", "x"]), INTS),
    WORDS,
)
QUERY_NAMES = ["page", "errors_page", "from", "to", "thread", "month", "before", "q", "sender", "view", "order",
               "images", "attachments", "ids", "token", "account_id"]
# Sign-outs would end the admin's session half way through: every other route is drawn.
SKIP = {("auth.logout", "POST"), ("auth.end_all_sessions", "POST")}


@pytest.fixture(autouse=True)
def generous_limits(app):
    """Rate limits would answer 429 before a value reaches the code under test (Test Connection allows 10 a
    minute): lifted here, they have tests of their own."""
    app.config.update(TEST_CONNECTION_RATE="100000 per minute", SIGNIN_ACCOUNT_LIMITS="100000 per minute",
                      SIGNIN_ADDRESS_LIMITS="100000 per minute", SIGNIN_SLOW_DOWN_SECONDS=0)


def routes(app) -> list[tuple]:
    """GET routes first: a POST may change what the others see (switching mail archiving off hides the archive)."""
    found = [(rule.endpoint, method, rule) for rule in app.url_map.iter_rules()
             for method in sorted(rule.methods - {"HEAD", "OPTIONS"}) if (rule.endpoint, method) not in SKIP]
    return sorted(found, key=lambda item: (item[1] != "GET", item[0], item[2].rule))


# A real value for each URL argument, from the permission matrix's world, so a route gets past its lookups.
REAL = {"message_id": "message", "thread_id": "thread", "page_id": "page", "account_id": "account", "run_id": "job",
        "test_id": "smtp_test", "server_id": "smtp_server", "user_id": "victim", "role_id": "victim_role",
        "watch_id": "watch", "session_id": "viewer_session", "event_id": "event", "index": "attachment",
        "token": "unwatch_token"}
FIXED = {"key": "TEAM", "cid": "logo@example.org", "filename": "app.css"}
EDGE_QUERY = ["0000-01", "9999-12", "-5", str(10**20), str(2**31), f"20260101T000000000000-{10**20}",
              "00010101T000000000000-1", "x"]
# One argument at a time, each with the edge values of its kind.
NUMBERS = ["-5", str(2**31), str(10**20), "x"]
EDGE_BY_NAME = {"month": ["0000-01", "9999-12", "2026-13"],
                "before": [f"20260101T000000000000-{10**20}", "00010101T000000000000-1", "x"],
                **dict.fromkeys(["page", "errors_page", "from", "to", "thread", "ids", "account_id"], NUMBERS),
                **dict.fromkeys(["q", "sender", "view", "order", "images", "attachments", "token"],
                                ["x", "\x00", "'\"<>", "1" * 300])}


def real_value(rule, name: str, known) -> str:
    converter = rule._converters[name]
    if type(converter).__name__ == "AnyConverter":
        return sorted(re.findall(r"[a-z_]+", converter.regex))[0]
    if name in REAL:
        return str(known.ids[REAL[name]])
    return FIXED.get(name, "1")


def url(rule, values: dict) -> str:
    path = rule.rule
    for name, value in values.items():
        path = re.sub(r"<(?:[^:<>]+:)?%s>" % name, value, path)
    return path


def archiving_on() -> None:
    """A POST may switch the Mail archiving app off (its switch gets value=x): on again, so the archive's routes
    are reached by the values that follow instead of all answering 404."""
    from webapp.extensions import db
    from webapp.settings import SiteSettings

    db.session.expire_all()
    if not SiteSettings.get().mail_archiving_enabled:
        SiteSettings.get().mail_archiving_enabled = True
        db.session.commit()


def ask(client, method: str, path: str, query: dict):
    response = client.get(path, query_string=query) if method == "GET" else \
        client.post(path, query_string=query, data=dict(query))
    body = response.get_data(as_text=True) if response.mimetype.startswith("text") else ""
    response.close()
    return response.status_code, body


def test_edge_values_on_every_route(app, client, login, world):  # noqa: F811
    """Each route with real ids and every query argument at one edge value; then each id at the edge."""
    login(world.people["sysadmin"])
    problems = []
    for endpoint, method, rule in routes(app):
        real = {name: real_value(rule, name, world) for name in rule.arguments}
        if method == "GET":  # one argument at a time: together, one (q) can send the request down another path
            tries = [(real, {name: value}) for name, values in EDGE_BY_NAME.items() for value in values]
        else:
            tries = [(real, dict.fromkeys(QUERY_NAMES, value)) for value in EDGE_QUERY]
        for name in rule.arguments:
            if isinstance(rule._converters[name], IntegerConverter):
                tries += [(dict(real, **{name: str(big)}), {}) for big in (2**31, 10**20)]
        for values, query in tries:
            archiving_on()
            status, body = ask(client, method, url(rule, values), query)
            if status >= 500 or "Traceback" in body:
                problems.append(f"{status} {method} {url(rule, values)} {query}")
        if client.get("/profile").status_code != 200:
            login(world.people["sysadmin"])  # a route signed the admin out (a session ended): go on signed in
    assert problems == []


def value_for(draw, rule, name: str, known):
    converter = rule._converters[name]
    kind = type(converter).__name__
    if draw(st.booleans()):
        return real_value(rule, name, known)
    if isinstance(converter, IntegerConverter):
        return str(draw(INTS))
    if kind == "AnyConverter":
        return draw(st.sampled_from(sorted(re.findall(r"[a-z_]+", converter.regex))))
    if name == "key":
        return draw(st.sampled_from(["TEAM", "OTHER", "~viewer", "NOPE", "x" * 300]))
    return draw(st.one_of(st.sampled_from(["app.css", "config", "1", "logo@example.org"]),
                          WORDS.filter(lambda t: t and "/" not in t and t not in (".", ".."))))


@pytest.mark.timeout(600)
@settings(max_examples=80 if os.environ.get("SPACEMAIL_TEST_DB") == "postgres" else 200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_value_makes_a_500(app, client, login, world, data):  # noqa: F811
    if client.get("/profile").status_code != 200:
        login(world.people["sysadmin"])
    archiving_on()
    endpoint, method, rule = data.draw(st.sampled_from(routes(app)), label="route")
    path = url(rule, {name: value_for(data.draw, rule, name, world) for name in rule.arguments})
    query = data.draw(st.dictionaries(st.sampled_from(QUERY_NAMES), QUERY_VALUES, max_size=4), label="query")
    status, body = ask(client, method, path, query)
    assert status < 500 and "Traceback" not in body, f"{method} {path} {query}: {body[:300]}"
