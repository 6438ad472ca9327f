"""Header text as its sender meant it: raw 8-bit bytes read as UTF-8 (then the part's charset, then windows-1252),
RFC 2047 encoded words decoded one by one with the charset names mail clients really use, and addresses split on
the raw header before any display name is decoded (an encoded comma is not a separator)."""
import binascii
import codecs
import functools
import email.policy
import email.utils
import re

# Labels mail clients write that Python does not know, or knows as a smaller charset than the one meant.
CHARSET_ALIASES = {
    "gb2312": "gb18030", "gbk": "gb18030", "gb_2312-80": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030",
    "cp936": "gb18030", "chinese": "gb18030", "csgb2312": "gb18030",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-8-e": "iso-8859-8", "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6", "logical": "iso-8859-8", "visual": "iso-8859-8",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "ks_c_5601-1989": "cp949", "euc-kr": "cp949",
    "ksc5601": "cp949", "x-windows-949": "cp949",
    "shift-jis": "cp932", "shift_jis": "cp932", "x-sjis": "cp932", "sjis": "cp932", "ms_kanji": "cp932",
    "windows-31j": "cp932", "x-euc-jp": "euc_jp", "iso-2022-jp": "iso2022_jp_ext",
    "big5": "big5hkscs", "x-x-big5": "big5hkscs", "big5-hkscs": "big5hkscs",
    # Text labelled ASCII or Latin-1 with bytes above 0x7f is windows-1252 in practice (as browsers read it).
    "us-ascii": "cp1252", "ascii": "cp1252", "ansi_x3.4-1968": "cp1252", "iso-8859-1": "cp1252",
    "latin1": "cp1252", "latin-1": "cp1252", "iso_8859-1": "cp1252", "l1": "cp1252",
    "x-mac-roman": "mac_roman", "macintosh": "mac_roman", "unicode-1-1-utf-7": "utf-7", "utf8": "utf-8",
    "x-user-defined": "cp1252", "unknown-8bit": "utf-8", "x-unknown": "utf-8", "unknown": "utf-8",
    "default": "utf-8", "charset": "utf-8", "_iso-2022-jp$esc": "iso2022_jp_ext",
}
ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]*?)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_SURROGATE = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


@functools.lru_cache(maxsize=512)
def codec(charset) -> str | None:
    """The Python codec for a charset label as found in mail, or None when there is no such charset."""
    if not charset or not isinstance(charset, str):
        return None
    label = charset.strip().strip("\"'").split("*", 1)[0].lower()  # RFC 2231 adds "*<language>"
    label = CHARSET_ALIASES.get(label, label)
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError):
        return None
    return None if name in ("rot-13", "base64", "hex", "quopri", "uu", "zlib", "bz2") else name


def decode_bytes(data: bytes, charset=None, fallback=None) -> str:
    """Bytes in their declared charset; when that is unknown or the bytes are not valid in it, UTF-8, then the
    fallback (the part's charset), then windows-1252, which reads every byte. Never raises."""
    tried = []
    for name in (codec(charset), "utf-8", codec(fallback)):
        if name and name not in tried:
            tried.append(name)
            try:
                return data.decode(name)
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode("cp1252", "replace")


def raw_text(value, fallback=None) -> str:
    """A header value as str: the raw 8-bit bytes compat32 keeps as surrogates (or in a Header) decoded."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value) if not hasattr(value, "_chunks") else "".join(
            s if isinstance(s, str) else s.decode("ascii", "surrogateescape") for s, _ in value._chunks)
    if _SURROGATE.search(value):
        value = decode_bytes(value.encode("utf-8", "surrogateescape"), "utf-8", fallback)
    return value


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _word_bytes(encoding: str, text: str) -> bytes:
    """An encoded word's bytes; broken base64 (missing padding, stray characters) read as far as it goes."""
    data = text.encode("utf-8", "surrogateescape")
    if encoding in "bB":
        data = _NOT_BASE64.sub(b"", data)
        data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data + b"=" * (-len(data) % 4)
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:
            return b""
    return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))


def decode_words(text: str, fallback=None) -> str:
    """RFC 2047, word by word: one word that cannot be read leaves the others readable; adjacent words in one
    charset are joined as bytes first (clients split a character across two words); the space between adjacent
    encoded words goes, as the RFC says."""
    if "=?" not in text:
        return text
    out, pending, pos = [], None, 0  # pending: [charset, [bytes of each word]] of the encoded words being joined

    def flush():
        if pending is None:
            return
        name = codec(pending[0])
        try:  # joined, as the sender's client split them; a bad word spoils only itself
            out.append(b"".join(pending[1]).decode(name or "utf-8"))
        except (UnicodeDecodeError, LookupError):
            out.extend(decode_bytes(word, pending[0], fallback) for word in pending[1])

    for m in ENCODED_WORD.finditer(text):
        between = text[pos:m.start()]
        charset = m.group(1)
        data = _word_bytes(m.group(2), m.group(3))
        if pending is not None and not between.strip():
            if codec(pending[0]) == codec(charset):
                pending[1].append(data)
            else:
                flush()
                pending = [charset, [data]]
        else:
            flush()
            out.append(between)
            pending = [charset, [data]]
        pos = m.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def clean(text: str) -> str:
    """Unfolded, without control characters or stray line breaks, trimmed."""
    text = _FOLD.sub("", text)
    return _CONTROL.sub("", text.replace("\r", " ").replace("\n", " ")).strip()


def header_text(value, fallback=None) -> str:
    """Any header value (Subject, a file name) as a reader should see it."""
    text = clean(raw_text(value, fallback))
    return clean(decode_words(text, fallback)) if "=?" in text else text


def has_8bit(msg) -> bool:
    """Whether any header of `msg` holds raw 8-bit bytes (kept as surrogates by LenientPolicy)."""
    return any(isinstance(v, str) and _SURROGATE.search(v) for _, v in msg._headers)


def addresses(values, fallback=None) -> list[tuple[str, str]]:
    """(display name, address) pairs, split on the raw text so an encoded comma stays inside its name; names
    decoded after. Non-ASCII addresses (RFC 6532) come through as written."""
    raw = [clean(raw_text(v, fallback)) for v in values or []]
    found = []
    for name, address in email.utils.getaddresses(raw):
        name = clean(decode_words(name, fallback)) if "=?" in name else name.strip()
        address = address.strip()
        if address or name:
            found.append((name, address))
    return found


def format_address(name: str, address: str) -> str:
    """"Name" <address> for display and search; unlike formataddr, any script in the address is fine."""
    if not name:
        return address
    if re.search(r'[(),.:;<>@\[\]"\\]', name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>" if address else name


class LenientPolicy(email.policy.Compat32):
    """compat32 (fast, never raises on real headers), but header values always str: raw 8-bit bytes stay as
    surrogates for raw_text() to read, instead of a Header object that str methods (.split) fail on."""

    def header_fetch_parse(self, name, value):
        return value


LENIENT = LenientPolicy()
