"""A deterministic mail corpus for benchmarks: `python bench/corpus.py N SEED OUT.mbox` (or import generate()).

Sizes 2-60 KB (median near 8 KB), 15% with attachments, 10% HTML alternative, 35% replies with References
chains up to 12 deep, Zipf-distributed vocabulary, some non-ASCII headers, and in 2% of messages one of
1,000 codenames ("project417") so that searches have rare words too. CRLF line ends, as servers serve."""
import base64
import itertools
import email.utils
import random
import sys
from datetime import datetime, timedelta, timezone

SYLLABLES = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "pin", "que", "zu", "ran", "bel", "cor", "fi", "nu"]
NAMES = [("Ann Example", "ann@example.org"), ("Bob Builder", "bob@example.org"), ("Jürgen Müller", "jm@example.de"),
         ("Zoë Quinn", "zoe@example.net"), ("Søren Kierkegaard", "soren@example.dk"), ("Li Wei", "li@example.cn")]


def vocabulary(rnd: random.Random, size: int = 5000) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rnd.choice(SYLLABLES) for _ in range(rnd.randint(1, 4))))
    return sorted(words)


def _zipf_words(rnd, vocab, cum_weights, count):
    return rnd.choices(vocab, cum_weights=cum_weights, k=count)


def _size(rnd) -> int:
    """Log-normal around 8 KB, clipped to 2-60 KB."""
    return int(min(60_000, max(2_000, rnd.lognormvariate(8.98, 0.6))))


def _header(value: str) -> str:
    return email.header.Header(value, "utf-8").encode() if not value.isascii() else value


def generate(n: int, seed: int = 1):
    """Yield n raw messages (bytes), the same for the same (n, seed)."""
    import email.header  # noqa: F401

    rnd = random.Random(seed)
    vocab = vocabulary(rnd)
    weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocab))))
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    chains: list[list[str]] = []
    for i in range(n):
        name, addr = rnd.choice(NAMES)
        msgid = f"bench{seed}.{i}@example.org"
        refs = []
        if chains and rnd.random() < 0.35:
            chain = rnd.choice(chains[-200:])
            refs = chain[-12:]
            subject = "Re: " + chain[0].split("|", 1)[1]
            chain.append(msgid + "|" + chain[0].split("|", 1)[1])
            refs = [r.split("|", 1)[0] for r in refs]
        else:
            subject = " ".join(_zipf_words(rnd, vocab, weights, rnd.randint(3, 8))).capitalize()
            chains.append([msgid + "|" + subject])
        date = start + timedelta(minutes=i * 7 + rnd.randint(0, 5))
        headers = [f"From: {email.utils.formataddr((_header(name), addr))}", "To: team@example.org",
                   f"Subject: {_header(subject)}", f"Date: {email.utils.format_datetime(date)}",
                   f"Message-ID: <{msgid}>", "MIME-Version: 1.0"]
        if refs:
            headers += [f"In-Reply-To: <{refs[-1]}>", "References: " + " ".join(f"<{r}>" for r in refs)]
        target = _size(rnd)
        words = []
        length = 0
        while length < min(target, 12_000):
            line = " ".join(_zipf_words(rnd, vocab, weights, 12))
            words.append(line)
            length += len(line) + 2
        if rnd.random() < 0.02:  # rare words for search benchmarks: each of 1,000 codenames in 0.002% of mail
            words.insert(rnd.randrange(len(words) + 1), f"Codename project{rnd.randrange(1000)}")
        text = "\r\n".join(words)
        html = rnd.random() < 0.10
        attach = rnd.random() < 0.15
        if not html and not attach:
            body = "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
            yield ("\r\n".join(headers) + "\r\n" + body).encode()
            continue
        parts = [f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"]
        if html:
            parts = ["Content-Type: multipart/alternative; boundary=alt\r\n\r\n--alt\r\n" + parts[0] +
                     f"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>{text}</p>\r\n--alt--\r\n"]
        if attach:
            blob = base64.encodebytes(rnd.randbytes(max(1000, target - length))).decode().replace("\n", "\r\n")
            parts.append(f'Content-Type: application/pdf; name="doc{i}.pdf"\r\nContent-Disposition: attachment; '
                         f'filename="doc{i}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n{blob}')
        body = "Content-Type: multipart/mixed; boundary=mix\r\n\r\n" + "".join(
            f"--mix\r\n{p}" for p in parts) + "--mix--\r\n"
        yield ("\r\n".join(headers) + "\r\n" + body).encode()


def main() -> None:
    n, seed, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "corpus.mbox"
    with open(out, "wb") as f:
        for raw in generate(n, seed):
            f.write(b"From bench@example.org Mon Jan  1 00:00:00 2024\n")
            f.write(raw.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From "))
            f.write(b"\n")
    print(f"wrote {n} messages to {out}")


if __name__ == "__main__":
    main()
