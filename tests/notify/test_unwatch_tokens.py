"""The one-click stop-watching link: made without the serializer's per-call cost, read back by the serializer."""
import random
from types import SimpleNamespace

from itsdangerous import URLSafeSerializer

from webapp.notify.models import BLOG, PAGE, SPACE
from webapp.notify.watches import read_unwatch_token, unwatch_token


def test_tokens_are_the_serializers_own_bytes_and_read_back(app):
    serializer = URLSafeSerializer(app.config["SECRET_KEY"], salt="spacemail.unwatch")
    rng = random.Random(19)
    for _ in range(3000):
        values = [rng.choice([1, 2, 99, rng.randrange(1, 10 ** rng.randrange(1, 19))]), rng.choice([PAGE, SPACE, BLOG]),
                  rng.randrange(1, 10 ** rng.randrange(1, 12)), rng.choice([0, rng.randrange(1, 10 ** 9)])]
        token = unwatch_token(SimpleNamespace(user_id=values[0], scope=values[1], space_id=values[2],
                                              page_id=values[3]))
        assert token == serializer.dumps(values)
        assert read_unwatch_token(token) == tuple(values)


def test_a_changed_token_or_another_sites_key_reads_as_nothing(app):
    token = unwatch_token(SimpleNamespace(user_id=7, scope=PAGE, space_id=3, page_id=12))
    signature = token.split(".")[1]
    someone_else = unwatch_token(SimpleNamespace(user_id=8, scope=PAGE, space_id=3, page_id=12)).split(".")[0]
    assert read_unwatch_token(someone_else + "." + signature) is None
    assert read_unwatch_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    other = URLSafeSerializer("another site's key", salt="spacemail.unwatch").dumps([7, PAGE, 3, 12])
    assert read_unwatch_token(other) is None
    app.config["SECRET_KEY"] = "a new key"  # a rotated key: links made with the old one stop working
    assert read_unwatch_token(token) is None
    assert read_unwatch_token(unwatch_token(SimpleNamespace(user_id=7, scope=PAGE, space_id=3, page_id=12))) == \
        (7, PAGE, 3, 12)
