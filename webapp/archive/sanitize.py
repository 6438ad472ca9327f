"""Untrusted HTML mail -> markup that runs nothing and loads nothing remote until the reader asks.

nh3 (an allow-list sanitizer) does the cleaning; the result is then only ever shown inside a sandboxed
iframe served with its own strict CSP (routes), so a sanitizer miss still cannot run script."""
import re
from collections.abc import Callable

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "div",
    "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p",
    "pre", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "tt", "u", "ul",
}
COMMON = {"style", "align", "dir", "title", "lang", "width", "height", "valign", "bgcolor", "color"}
ATTRIBUTES = {
    "*": COMMON,
    "a": {"href", "name"},
    "img": {"src", "alt", "border"},
    "font": {"face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "nowrap", "scope"},
    "ol": {"start", "type"},
    "col": {"span"},
    "colgroup": {"span"},
}
STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight", "line-height",
    "text-align", "text-decoration", "text-indent", "text-transform", "letter-spacing", "white-space",
    "vertical-align", "margin", "margin-top", "margin-right", "margin-bottom", "margin-left", "padding",
    "padding-top", "padding-right", "padding-bottom", "padding-left", "border", "border-top", "border-right",
    "border-bottom", "border-left", "border-color", "border-style", "border-width", "border-collapse",
    "border-spacing", "border-radius", "width", "max-width", "min-width", "height", "max-height", "min-height",
    "display", "float", "clear", "list-style-type", "table-layout", "direction",
}
_CSS_DANGER = re.compile(r"url\s*\(|expression\s*\(|image-set|@import|\\|javascript:|behavior", re.I)
_SAFE_LINK = re.compile(r"^(https?:|mailto:|#)", re.I)
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpe?g|webp);base64,[a-z0-9+/=\s]+$", re.I)


def sanitize(html: str, cid_url: Callable[[str], str | None], show_images: bool) -> tuple[str, bool]:
    """(clean HTML, whether remote images were held back). cid: images point at the message's own parts."""
    blocked = False

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        value = value.strip()
        if attr == "style":  # keep the harmless declarations, drop any that could fetch or run something
            kept = [d for d in value.split(";") if d.strip() and not _CSS_DANGER.search(d)]
            return ";".join(kept) or None
        if tag == "a" and attr == "href":
            return value if _SAFE_LINK.match(value) else None
        if tag == "img" and attr == "src":
            if value.lower().startswith("cid:"):
                return cid_url(value[4:].strip("<>"))
            if _DATA_IMAGE.match(value):
                return value
            if value.lower().startswith(("http://", "https://")):
                if show_images:
                    return value
                blocked = True
            return None
        return value

    clean = nh3.clean(
        html,
        tags=TAGS,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template", "svg", "math", "iframe",
                            "object", "embed", "form", "textarea", "select", "button"},
        attributes=ATTRIBUTES,
        attribute_filter=attribute_filter,
        url_schemes={"http", "https", "mailto", "data", "cid"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=STYLE_PROPERTIES,
        strip_comments=True,
    )
    return clean, blocked
