"""Mail HTML that is safe to show an agent, and plain text derived from HTML.

Mail HTML is hostile input rendered inside the agent's authenticated page, so it
goes through an allow-list (nh3, i.e. Rust ammonia), never a deny-list. Remote
images are a separate, later step because they are tracking beacons rather than
script: the page loads them only when the agent asks.
"""

from __future__ import annotations

import functools
import html as html_lib
import re

import nh3

_TAGS = frozenset(
    {"p", "div", "span", "br", "hr", "a", "b", "strong", "i", "em", "u", "s", "strike", "sub"}
    | {"sup", "small", "big", "font", "center", "blockquote", "pre", "code", "tt", "abbr"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd", "address"}
    | {"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "col", "colgroup"}
    | {"img", "cite", "q", "del", "ins", "mark", "figure", "figcaption"}
)
# Dropped with their content: running or embedding code, form widgets whose
# text is noise, and foreign content (svg/math) that can carry handlers.
_CLEAN_CONTENT_TAGS = frozenset(
    {"script", "style", "title", "template", "iframe", "object", "noscript", "noembed"}
    | {"noframes", "xmp", "svg", "math", "select", "textarea"}
)
_CELL = {"colspan", "rowspan", "align", "valign", "width", "height", "bgcolor"}
_ATTRIBUTES = {
    "*": {"style", "dir", "lang", "title", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": _CELL,
    "th": _CELL,
    "tr": {"valign", "bgcolor"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "font": {"color", "face", "size"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "ol": {"start"},
}
_SIDES = ("", "-top", "-right", "-bottom", "-left")
# No position, display, background(-image), content, cursor, transform or
# z-index: nothing that can fetch a URL or lay an overlay over the agent's page.
_STYLE_PROPERTIES = frozenset(
    {"color", "background-color", "width", "height", "max-width", "min-width"}
    | {"line-height", "vertical-align", "white-space", "letter-spacing", "word-spacing"}
    | {"font", "font-family", "font-size", "font-style", "font-weight", "font-variant"}
    | {"text-align", "text-decoration", "text-indent", "text-transform", "direction"}
    | {"border-collapse", "border-spacing", "border-radius", "list-style-type"}
    | {f"margin{side}" for side in _SIDES}
    | {f"padding{side}" for side in _SIDES}
    | {f"border{side}{part}" for side in _SIDES for part in ("", "-color", "-style", "-width")}
)
_UNSAFE_CSS_VALUE = re.compile(r"url\s*\(|image-set|expression|javascript:|@import|\\", re.I)
_LINK_SCHEMES = ("http:", "https:", "//", "mailto:", "tel:")
_IMAGE_SCHEMES = ("http:", "https:", "//", "cid:")
_URL_NOISE = re.compile(r"[\x00-\x20]+")

# html5ever (inside nh3) is quadratic in the depth of the open-element stack and
# in long runs of character references; past these bounds a message is shown as
# escaped text instead of costing seconds of a bulk import.
_MAX_NESTING = 1000
_MAX_ENTITY_RUN = 2000
_NESTING_WORK_LIMIT = 1_000_000
_TAG_NAME = re.compile(r"<(/?)([a-zA-Z][^\s/>]*)")
# Void elements and those whose end tag is implied never deepen the stack.
_NOT_NESTING = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param"}
    | {"source", "track", "wbr", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td"}
    | {"th", "thead", "tbody", "tfoot", "colgroup", "caption", "rb", "rp", "rt", "rtc"}
)


def sanitize_html(html: str) -> str:
    """Mail HTML with everything that could run, submit, track or restyle the
    agent's page removed (nh3 allow-list).

    Remote images survive this step on purpose: `block_remote_images` disables
    them so the page can offer to load them. Markup that would make html5ever
    quadratic comes back as escaped text rather than stalling an import.
    """
    if _has_long_entity_run(html) or _nests_too_deep(html):
        return _as_escaped_text(html)
    try:
        return _cleaner().clean(html)
    except UnicodeEncodeError:  # lone surrogates from a surrogateescape decode
        return _cleaner().clean(html.encode("utf-8", "replace").decode("utf-8"))


@functools.cache
def _cleaner() -> nh3.Cleaner:
    """Built once, on first use, not at import."""
    return nh3.Cleaner(
        tags=set(_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT_TAGS),
        attributes={tag: set(names) for tag, names in _ATTRIBUTES.items()},
        attribute_filter=_filter_attribute,
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes={"http", "https", "mailto", "tel", "cid", "data"},
        filter_style_properties=set(_STYLE_PROPERTIES),
        url_relative=_keep_network_path,
    )


def _keep_network_path(url: str) -> str | None:
    """A relative URL would resolve against the agent's own site, so it goes;
    //host/path (common for newsletter images) is remote and stays."""
    return url if url.startswith("//") else None


def _filter_attribute(tag: str, name: str, value: str) -> str | None:
    """nh3's url_schemes is one list for every attribute, so per-attribute
    scheme rules, and CSS values nh3 does not inspect, are enforced here."""
    if name == "style":
        return _safe_style(value)
    if name == "href":
        return value if _url_key(value).startswith(_LINK_SCHEMES) else None
    if name == "src":
        return value if _is_image_source(value) else None
    return value


def _safe_style(style: str) -> str | None:
    """Bulk mail repeats a few short style strings thousands of times; only
    those are cached, so one huge attribute cannot pin memory."""
    return _cached_safe_style(style) if len(style) < 2048 else _filter_style(style)


@functools.lru_cache(maxsize=1024)
def _cached_safe_style(style: str) -> str | None:
    return _filter_style(style)


def _filter_style(style: str) -> str | None:
    """nh3 filters property names but not values, so url() is stopped here; a
    negative margin or indent is how content escapes its box to cover the page."""
    kept = []
    for declaration in style.split(";"):
        prop, colon, value = declaration.partition(":")
        prop = prop.strip().lower()
        if not colon or prop not in _STYLE_PROPERTIES or _UNSAFE_CSS_VALUE.search(value):
            continue
        if prop.startswith(("margin", "text-indent")) and "-" in value:
            continue
        kept.append(f"{prop}:{value.strip()}")
    return ";".join(kept) or None


def _url_key(url: str) -> str:
    """Browsers ignore ASCII whitespace and controls around and inside a scheme."""
    return _URL_NOISE.sub("", url[:64]).lower()


def _is_image_source(url: str) -> bool:
    """data: only for raster images: SVG is a document, and text/html in an
    img is never a picture."""
    key = _url_key(url)
    if key.startswith("data:"):
        return key.startswith("data:image/") and not key.startswith("data:image/svg")
    return key.startswith(_IMAGE_SCHEMES)


def _has_long_entity_run(html: str) -> bool:
    """The quadratic cost is per '<'-free run, so only such runs are counted."""
    if html.count("&") <= _MAX_ENTITY_RUN:
        return False
    return any(run.count("&") > _MAX_ENTITY_RUN for run in html.split("<"))


def _nests_too_deep(html: str) -> bool:
    """A cheap bound first (tags x opening tags); below it html5ever cannot do
    more than a few milliseconds of stack walking, so the precise pass is skipped."""
    tags = html.count("<")
    if (
        tags * tags <= _NESTING_WORK_LIMIT
        or tags * (tags - html.count("</")) <= _NESTING_WORK_LIMIT
    ):
        return False
    stack: list[str] = []
    open_counts: dict[str, int] = {}
    for slash, raw_name in _TAG_NAME.findall(html):
        name = raw_name.lower()
        if name in _NOT_NESTING:
            continue
        if not slash:
            stack.append(name)
            open_counts[name] = open_counts.get(name, 0) + 1
            if len(stack) > _MAX_NESTING:
                return True
        elif open_counts.get(name):
            while (top := stack.pop()) != name:
                open_counts[top] -= 1
            open_counts[name] -= 1
    return False


def _as_escaped_text(html: str) -> str:
    """The agent still reads the message; nothing in it is markup any more."""
    text = html_lib.escape(html_to_text(html), quote=False)
    return f'<div style="white-space:pre-wrap">{text}</div>'


_IMAGE_TAG = re.compile(
    r"<(img|source)\b((?:[^>\"']+|\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z))*)(>|\Z)", re.I
)
_ATTRIBUTE = re.compile(
    r"([^\s\"'>/=][^\s\"'>/=]*)(?:\s*=\s*(\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z)|[^\s>]*))?"
)
_LOCAL_IMAGE = ("cid:", "data:image/")


def block_remote_images(html: str) -> tuple[str, int]:
    """Already-sanitized HTML with every remote image (http/https/protocol-relative
    src, and srcset) disabled.

    The URL moves to data-remote-src (data-remote-srcset) and src is removed, so
    opening a ticket tells no sender it was read until the agent asks for the
    images; the count lets the page offer that. cid: and data:image/ stay.
    Anything else that is not local (relative, unknown scheme) is treated as
    remote too: the safe side of a guess.
    """
    blocked = 0

    def rewrite(match: re.Match[str]) -> str:
        nonlocal blocked
        attributes, disabled = _disable_remote_sources(match[2])
        blocked += disabled
        return f"<{match[1]}{attributes}{match[3]}"

    if "<" not in html:
        return html, 0
    return _IMAGE_TAG.sub(rewrite, html), blocked


def _disable_remote_sources(attributes: str) -> tuple[str, int]:
    """Attributes are matched whole, so a 'src=' inside an alt text is not touched."""
    disabled = False

    def rewrite(match: re.Match[str]) -> str:
        nonlocal disabled
        name = match[1].lower()
        if name.startswith("data-remote-"):  # never trust a pre-set target
            return ""
        if name not in ("src", "srcset") or not match[2]:
            return match[0]
        raw = match[2]
        value = raw[1:].removesuffix(raw[0]) if raw[0] in "\"'" else raw
        if _is_local_source(name, html_lib.unescape(value)):
            return match[0]
        disabled = True
        return f'data-remote-{name}="{value.replace(chr(34), "&quot;")}"'

    return _ATTRIBUTE.sub(rewrite, attributes), int(disabled)


def _is_local_source(name: str, url: str) -> bool:
    if name == "src":
        key = _url_key(url)
        return not key or key.startswith(_LOCAL_IMAGE)
    key = url.strip().lower()  # srcset: every candidate must be local
    return not key or (key.startswith(_LOCAL_IMAGE) and "//" not in key and "http" not in key)


_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)|<[!?][^>]*(?:>|\Z)"
    r"|<(/?)([a-zA-Z][^\s/>]*)((?:[^>\"']+|\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z))*)(?:>|\Z)",
    re.S,
)
# Content never shown as text; the first group hides the rest of the mail when
# left open, as a browser does, the second is skipped only when closed.
_SKIP_TO_END = frozenset(
    {"script", "style", "title", "textarea", "noscript", "noembed", "noframes", "iframe", "xmp"}
)
_SKIP_IF_CLOSED = frozenset({"head", "xml", "svg", "math", "select", "object", "template"})
_BLOCK_BREAKS = {
    **dict.fromkeys(("p", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "pre"), 2),
    **dict.fromkeys(
        {"div", "table", "tr", "thead", "tbody", "tfoot", "caption", "dl", "dt", "dd", "center"}
        | {"address", "section", "article", "header", "footer", "nav", "aside", "main", "body"}
        | {"figure", "figcaption", "form", "fieldset", "legend", "details", "summary"}
        | {"ul", "ol", "li", "blockquote"},
        1,
    ),
}
_TEXT_SHAPING = frozenset(
    _BLOCK_BREAKS.keys() | _SKIP_TO_END | _SKIP_IF_CLOSED | {"br", "a", "img", "td", "th"}
)
_INVISIBLE = re.compile("[\u00ad\u034f\u200b-\u200d\u2060\ufeff]")  # newsletter preheader padding
_SHOWN_LINK = ("http:", "https:", "mailto:", "tel:", "ftp:")
_LINK_KEY = re.compile(r"^(?:mailto:|tel:|[a-z]+://)?(?:www\.)?|/$|\s", re.I)
_MAX_QUOTE_DEPTH = 20
_MAX_LIST_DEPTH = 8


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML-only mail.

    Paragraphs, br, div, li and tr become line breaks, list items get bullets,
    links read 'text <url>' when the two differ, entities are decoded,
    script/style/head content is dropped and whitespace collapsed. Blockquote
    lines are prefixed with '> ' so quote stripping still recognises them.
    A linear regex pass: it runs on every message of a bulk import.
    """
    builder = _TextBuilder()
    html = _INVISIBLE.sub("", html.replace("\r\n", "\n").replace("\r", "\n"))
    pos, end = 0, len(html)
    while pos < end:
        pos = _convert_until_skip(html, pos, builder)
    return builder.result()


def _convert_until_skip(html: str, pos: int, builder: _TextBuilder) -> int:
    """Feeds tokens from pos until an element whose content is skipped; the
    scan restarts after it, so nothing inside (a '<' in a script) is tokenized."""
    for match in _TOKEN.finditer(html, pos):
        if match.start() > pos:
            builder.text(html[pos : match.start()])
        pos = match.end()
        slash, name, attributes = match.groups()
        if name is None:  # comment, doctype, processing instruction
            continue
        name = name.lower()
        if name not in _TEXT_SHAPING:  # span, b, font...: words only
            continue
        if slash:
            builder.end(name)
        elif name in _SKIP_TO_END or name in _SKIP_IF_CLOSED:
            return _skip_element(html, name, pos)
        else:
            builder.start(name, attributes)
    if pos < len(html):
        builder.text(html[pos:])
    return len(html)


def _skip_element(html: str, name: str, pos: int) -> int:
    close = _closing_tag(name).search(html, pos)
    if close:
        return close.end()
    return len(html) if name in _SKIP_TO_END else pos


@functools.cache
def _closing_tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{name}(?:[\s/][^>]*)?(?:>|\Z)", re.I)


def _attribute(source: str, name: str) -> str:
    """One attribute's decoded value; attributes are matched whole, so a
    'href=' inside a title is not mistaken for the link."""
    for match in _ATTRIBUTE.finditer(source):
        if match[1].lower() == name:
            raw = match[2] or ""
            value = raw[1:].removesuffix(raw[0]) if raw[:1] in ("'", '"') else raw
            return html_lib.unescape(value).strip()
    return ""


def _link_key(text: str) -> str:
    return _LINK_KEY.sub("", text).lower()


class _TextBuilder:
    """Lines are finished as they complete, so the '> ' of a blockquote and the
    indent of a list are known when each line starts; breaks owed between
    blocks are merged (at most one blank line), a <br> always adds one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.line: list[str] = []  # prefix first, then words
        self.line_quote = 0  # quote depth the current line started at
        self.breaks = 0  # line breaks owed before the next word
        self.gap = ""  # space owed before the next word on the same line
        self.quote = 0
        self.lists: list[int] = []  # -1 for a bullet list, else the last number used
        self.bullet = ""
        self.pre = 0
        self.paragraph_breaks = 2
        self.link: tuple[str, list[str]] | None = None
        self.blank_nbsp = False  # a block holding only &nbsp;: an intended empty line

    def text(self, raw: str) -> None:
        if "&" in raw:
            raw = _INVISIBLE.sub("", html_lib.unescape(raw))
            if not raw:
                return
        if self.pre:
            self._preformatted(raw)
        elif raw.isspace():
            if "\xa0" in raw and (self.breaks or not self.line):
                self.blank_nbsp = True
            self.gap = self.gap or " "
        else:
            self._inline(raw)

    def _inline(self, raw: str) -> None:
        if raw[0].isspace():
            self.gap = self.gap or " "
        if words := " ".join(raw.split()):  # split() knows U+00A0 as a space
            self._put(words)
        if raw[-1].isspace():
            self.gap = " "

    def _preformatted(self, raw: str) -> None:
        first, *rest = raw.split("\n")
        if first:
            self._put(first)
        for part in rest:
            self.breaks += 1
            if part:
                self._put(part)

    def _put(self, word: str) -> None:
        if self.breaks or not self.line:
            self._new_line()
        elif self.gap:
            self.line.append(self.gap)
        self.line.append(word)
        self.gap = ""
        self.blank_nbsp = False
        if self.link:
            self.link[1].append(word)

    def _new_line(self) -> None:
        if self.line:
            self.lines.append("".join(self.line).rstrip())
            if self.breaks > 1:
                self.lines.append(("> " * min(self.line_quote, self.quote)).rstrip())
        self.breaks = 0
        self.line_quote = quote = self.quote if self.quote < _MAX_QUOTE_DEPTH else _MAX_QUOTE_DEPTH
        prefix = "> " * quote
        if self.lists:
            prefix += "  " * (min(len(self.lists), _MAX_LIST_DEPTH) - 1) + (self.bullet or "  ")
        self.bullet = ""
        self.line = [prefix]

    def start(self, name: str, attributes: str) -> None:
        if name == "br":
            self.breaks += 1
        elif name == "a":
            self._close_link()
            self.link = (_attribute(attributes, "href"), [])
        elif name == "img":
            if alt := _attribute(attributes, "alt"):
                self.gap = self.gap or " "
                self._inline(f"[{alt}] ")
        elif name in ("td", "th"):
            self.gap = "  " if self.line and not self.breaks else self.gap
        elif name == "li":
            self._list_item()
        elif name in _BLOCK_BREAKS:
            self._open_block(name, attributes)

    def _open_block(self, name: str, attributes: str) -> None:
        if name == "p":  # Outlook writes each line as a margin-less <p class=MsoNormal>
            self.paragraph_breaks = 1 if "Mso" in attributes else 2
        breaks = self.paragraph_breaks if name == "p" else _BLOCK_BREAKS[name]
        self.breaks = max(self.breaks, breaks)
        if name == "blockquote":
            self.quote += 1
        elif name == "pre":
            self.pre += 1
        elif name == "ul":
            self.lists.append(-1)
        elif name == "ol":
            start = _attribute(attributes, "start")
            self.lists.append(int(start) - 1 if start.isdecimal() and len(start) < 7 else 0)

    def _list_item(self) -> None:
        self.breaks = max(self.breaks, 1)
        if not self.lists:
            self.lists.append(-1)
        if self.lists[-1] < 0:
            self.bullet = "- "
        else:
            self.lists[-1] += 1
            self.bullet = f"{self.lists[-1]}. "

    def end(self, name: str) -> None:
        if name == "a":
            self._close_link()
        elif name == "br":  # browsers read </br> as <br>
            self.breaks += 1
        elif name in _BLOCK_BREAKS:
            breaks = self.paragraph_breaks if name == "p" else _BLOCK_BREAKS[name]
            self.breaks = max(self.breaks, breaks)
            if self.blank_nbsp:
                self.breaks += 1
                self.blank_nbsp = False
            if name == "blockquote":
                self.quote = max(0, self.quote - 1)
            elif name == "pre":
                self.pre = max(0, self.pre - 1)
            elif name in ("ul", "ol") and self.lists:
                self.lists.pop()

    def _close_link(self) -> None:
        if self.link is None:
            return
        href, label_words = self.link
        self.link = None
        shown = _url_key(href).startswith(_SHOWN_LINK)
        if shown and _link_key("".join(label_words)) != _link_key(href):
            self.gap = " "
            self._put(f"<{href}>")

    def result(self) -> str:
        self._close_link()
        if self.line:
            self.lines.append("".join(self.line).rstrip())
        return "\n".join(self.lines).strip("\n")
