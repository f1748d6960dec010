"""Charset labels as mail declares them, to the Python codec that reads them.

Outlook, Apple Mail and older mailers label text with names from the IANA registry or the
WHATWG Encoding Standard that Python's codecs do not know (iso-8859-8-i, windows-874,
x-mac-roman), or that Python reads with too small a table (Outlook's ks_c_5601-1987 is
Windows code page 949, not EUC-KR). Unknown, the text fell back to Windows-1252 and Hebrew
or Thai came out as Latin garbage. Bodies (parse.py) and encoded words in headers
(classify.py) both ask here, so a subject and its body read alike.
"""

from __future__ import annotations

import codecs

# Keys lower case, "_" written as "-".
ALIASES = {
    # RFC 1556: -i (logical) and -e (explicit) only say how bidi text is ordered
    "iso-8859-6-i": "iso8859_6", "iso-8859-6-e": "iso8859_6",
    "csiso88596i": "iso8859_6", "csiso88596e": "iso8859_6",
    "iso-8859-8-i": "iso8859_8", "iso-8859-8-e": "iso8859_8",
    "csiso88598i": "iso8859_8", "csiso88598e": "iso8859_8", "logical": "iso8859_8",
    "visual": "iso8859_8",
    "windows-874": "cp874", "x-windows-874": "cp874", "dos-874": "cp874",
    "x-mac-roman": "mac_roman", "x-mac-cyrillic": "mac_cyrillic",
    "x-mac-ukrainian": "mac_cyrillic", "x-mac-ce": "mac_latin2", "x-mac-greek": "mac_greek",
    "x-mac-turkish": "mac_turkish", "x-mac-icelandic": "mac_iceland",
    "x-sjis": "shift_jis", "windows-31j": "cp932", "cswindows31j": "cp932",
    "x-ms-cp932": "cp932",
    "x-euc-jp": "euc_jp", "cseucpkdfmtjapanese": "euc_jp",
    "x-gbk": "gbk", "windows-936": "gbk", "x-gb2312": "gbk", "csgb2312": "gbk",
    "gb-2312-80": "gbk", "x-euc-cn": "gbk", "cn-gb": "gbk",
    "ks-c-5601-1987": "cp949", "ks-c-5601-1989": "cp949", "ksc-5601": "cp949",
    "ksc5601": "cp949", "csksc56011987": "cp949", "iso-ir-149": "cp949", "korean": "cp949",
    "windows-949": "cp949", "x-windows-949": "cp949",
    "x-x-big5": "big5", "x-big5": "big5", "cn-big5": "big5",
    "koi8-ru": "koi8_u",
    **{f"x-cp125{n}": f"cp125{n}" for n in range(9)},
    "unicode-1-1-utf-8": "utf-8", "unicode20utf8": "utf-8", "x-unicode20utf8": "utf-8",
}


def python_codec(label: str | None) -> str | None:
    """The codec's own name (so two labels of one codec compare equal), or None when Python
    has none."""
    if not label:
        return None
    name = ALIASES.get(label.strip().lower().replace("_", "-"), label)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None
