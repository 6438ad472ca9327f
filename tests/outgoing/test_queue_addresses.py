"""The queue's fast address check hands back exactly what email_validator would, and refuses what it refuses."""
import random
import re
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email

from webapp.outgoing.queue import normalized_address

# Real mails' headers from CPython's own email tests (Debian's libpython3.11-testsuite, installed by scripts/test).
EMAIL_TEST_DATA = Path("/usr/lib/python3.11/test/test_email/data")

EDGES = [
    "ann@example.org", "Ann.Lee@example.org", "ann@Example.org", "ann@EXAMPLE.ORG", "a+tag@mail.example.co.uk",
    "a..b@example.org", ".a@example.org", "a.@example.org", "ann@example", "ann@localhost", "ann@host.local",
    "ann@x.test", "ann@x.invalid", "ann@x.onion", "ann@1.2.3.4", "ann@example.123", "ann@-example.org",
    "ann@example-.org", "ann@ex--ample.org", "ann@xn--bcher-kva.example", "ann@ab--cd.org", "ann@a.b-c.d-e.org",
    "ann@" + "a" * 63 + ".org", "ann@" + "a" * 64 + ".org", "a" * 64 + "@example.org", "a" * 65 + "@example.org",
    "ann@" + ".".join(["a" * 60] * 4) + ".org", "ann@" + ".".join(["abc"] * 62) + ".org", "", "@", "ann",
    "ann@", "@example.org", "ann@@example.org", "ann lee@example.org", "ann@exa mple.org", "ann@example.org\n",
    "ann\r\n@example.org", "jörg@example.org", "ann@bücher.example", "ann@example.o", "ann@example.org.",
    "_@example.org", "-@example.org", "ann@example.arpa", "ann@10.in-addr.arpa", "ann@example.museum",
]


def expected(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def ours(address: str) -> str | None:
    try:
        return normalized_address(address)
    except EmailNotValidError:
        return None


def random_addresses(count: int) -> list[str]:
    """Mostly plausible addresses with a sprinkling of whatever the fast path must send the slow way."""
    rng = random.Random(19)
    local_chars = "abcxyzABC019._+-!#'~ é"
    domain_chars = "abcdefxyz0123-.ABüß_"
    tlds = ["org", "com", "de", "io", "local", "test", "arpa", "x", "123", "Org", "museum", "xn--p1ai", "localhost"]
    out = []
    for _ in range(count):
        local = "".join(rng.choice(local_chars) for _ in range(rng.randint(1, 12)))
        labels = ["".join(rng.choice(domain_chars) for _ in range(rng.randint(1, 10))) for _ in range(rng.randint(1, 3))]
        out.append(f"{local}@{'.'.join(labels + [rng.choice(tlds)])}")
    return out


@pytest.mark.parametrize("address", EDGES)
def test_edge_cases_agree(address):
    assert ours(address) == expected(address)


def test_random_addresses_agree():
    addresses = random_addresses(20_000)
    differ = [(a, ours(a), expected(a)) for a in addresses if ours(a) != expected(a)]
    assert differ == []
    accepted = sum(expected(a) is not None for a in addresses)
    assert 1_000 < accepted < len(addresses) - 1_000  # the sample holds plenty of both kinds


def test_addresses_from_real_mail_agree():
    if not EMAIL_TEST_DATA.is_dir():
        pytest.fail(f"{EMAIL_TEST_DATA} is missing: scripts/test installs it (libpython3.11-testsuite)")
    found = set()
    for path in EMAIL_TEST_DATA.glob("msg_*.txt"):
        found.update(re.findall(r"[^\s<>\"(),;:]+@[^\s<>\"(),;:]+", path.read_text("latin-1")))
    assert len(found) > 50
    assert [(a, ours(a), expected(a)) for a in sorted(found) if ours(a) != expected(a)] == []
