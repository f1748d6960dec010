"""sanitize_html, block_remote_images and html_to_text on hostile and on everyday mail HTML."""

from __future__ import annotations

import random
import re
import time

import pytest

from mailgateway.sanitize import block_remote_images, html_to_text, sanitize_html

FALLBACK = '<div style="white-space:pre-wrap">'


def tags(html: str) -> set[str]:
    return {name.lower() for name in re.findall(r"<([a-zA-Z][\w-]*)", html)}


# --- sanitize_html: what could run ------------------------------------------------------


def test_script_and_its_content_are_gone():
    out = sanitize_html("<p>Hello</p><script>alert('owned')</script><SCRIPT src=x.js></SCRIPT>")
    assert out == "<p>Hello</p>"


@pytest.mark.parametrize(
    "html",
    [
        '<img src="https://x.test/a.png" onerror="alert(1)">',
        '<p onclick="alert(1)">click</p>',
        '<table onload="alert(1)"><tr><td onmouseover="alert(1)">x</td></tr></table>',
        '<a href="https://x.test/" ONFOCUS="alert(1)" autofocus>x</a>',
    ],
)
def test_event_handlers_are_gone(html):
    out = sanitize_html(html)
    assert not re.search(r"\son\w+\s*=", out, re.I)
    assert "alert" not in out


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "&#106;avascript:alert(1)",
        "jav&#x09;ascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html,<script>alert(1)</script>",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "cid:part1@mail",
        "/relative/path",
        "#anchor",
    ],
)
def test_links_without_a_safe_scheme_lose_their_href(href):
    out = sanitize_html(f'<a href="{href}">click</a>')
    assert "href" not in out
    assert "click" in out


def test_links_keep_safe_schemes_and_open_apart_from_the_page():
    out = sanitize_html(
        '<a href="https://shop.test/o?a=1&amp;b=2" target="_self" rel="opener">order</a>'
        '<a href="mailto:help@shop.test">mail</a><a href="tel:+4930123">call</a>'
    )
    assert out.count('rel="noopener noreferrer nofollow"') == 3
    assert out.count('target="_blank"') == 3
    assert 'href="https://shop.test/o?a=1&amp;b=2"' in out
    assert 'href="mailto:help@shop.test"' in out
    assert 'href="tel:+4930123"' in out
    assert "_self" not in out and '"opener"' not in out


def test_forms_frames_objects_and_svg_are_gone():
    out = sanitize_html(
        '<form action="https://evil.test/steal" method="post">'
        'Login: <input name="pw" type="password">'
        '<button type="submit">Sign in</button><select><option>one</option></select>'
        "<textarea>typed</textarea></form>"
        '<iframe src="https://evil.test/">frame text</iframe><object data="x.swf">obj</object>'
        '<embed src="x.swf"><svg onload="alert(1)"><circle r="4"/></svg><math><mi>x</mi></math>'
    )
    assert tags(out) == set()
    for word in ("evil", "frame text", "obj", "alert", "one", "typed", "password"):
        assert word not in out
    assert "Login:" in out and "Sign in" in out  # the words stay, the controls go


def test_style_elements_stylesheets_meta_and_base_are_gone():
    out = sanitize_html(
        "<html><head><title>Newsletter</title><style>p{color:red} body{display:none}</style>"
        '<link rel="stylesheet" href="https://evil.test/x.css">'
        '<meta http-equiv="refresh" content="0;url=https://evil.test/"><base href="https://evil.test/">'
        "</head><body><p>Body</p></body></html>"
    )
    assert out == "<p>Body</p>"


def test_inline_style_keeps_formatting_and_drops_what_fetches_or_overlays():
    out = sanitize_html(
        '<p style="color:red; background:url(http://track.test/x.gif); position:fixed; top:0;'
        " z-index:9999; background-image:url(https://t.test/i.png); font-weight:bold;"
        ' width:expression(alert(1)); margin:-500px 0 0 0; padding:4px; behavior:url(x.htc)">t</p>'
    )
    style = re.search(r'style="([^"]*)"', out)[1]
    assert "color:red" in style
    assert "font-weight:bold" in style
    assert "padding:4px" in style
    for gone in ("url", "position", "fixed", "z-index", "expression", "margin", "behavior"):
        assert gone not in style
    assert "track.test" not in out


def test_negative_offsets_that_move_content_over_the_page_are_dropped():
    out = sanitize_html(
        '<div style="margin-top:-300px;text-indent:-9999px;margin:0 auto;text-indent:2em">x</div>'
    )
    assert re.search(r'style="([^"]*)"', out)[1] == "margin:0 auto;text-indent:2em"


def test_huge_style_attribute_is_filtered_too():
    out = sanitize_html('<p style="color:red;' + "x:y;" * 5_000 + 'position:fixed">x</p>')
    assert out == '<p style="color:red">x</p>'


def test_css_escapes_and_uppercase_properties_are_handled():
    out = sanitize_html(
        '<p style="COLOR: Blue; background-color: u\\72l(http://t.test/x); pos\\ition: fixed">t</p>'
    )
    assert "color:Blue" in out
    assert "t.test" not in out
    assert "position" not in out and "fixed" not in out


def test_style_left_empty_is_removed():
    assert sanitize_html('<p style="position:fixed;top:0">x</p>') == "<p>x</p>"


def test_layout_attributes_of_mail_stay_and_ids_classes_go():
    out = sanitize_html(
        '<table width="600" border="0" cellpadding="4" cellspacing="0" bgcolor="#ffffff"'
        ' background="https://t.test/bg.png" class="wrap" id="main">'
        '<tr><td colspan="2" align="center" valign="top" bgcolor="#eee" data-x="1">'
        '<font color="red" face="Arial" size="2">Hi</font></td></tr></table>'
        '<p dir="rtl" lang="he" title="greeting" name="n">שלום</p>'
    )
    for kept in ('width="600"', 'cellpadding="4"', 'colspan="2"', 'valign="top"', 'color="red"'):
        assert kept in out
    for kept in ('face="Arial"', 'dir="rtl"', 'lang="he"', 'title="greeting"'):
        assert kept in out
    for gone in ("class=", "id=", "data-x", "background=", "name="):
        assert gone not in out


@pytest.mark.parametrize(
    ("src", "kept"),
    [
        ("https://cdn.test/a.png", True),
        ("http://cdn.test/a.png", True),
        ("//cdn.test/a.png", True),
        ("cid:image001.png@01D9", True),
        ("data:image/png;base64,iVBORw0KGgo=", True),
        ("data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("javascript:alert(1)", False),
        ("/logout", False),
        ("mailto:a@b.test", False),
    ],
)
def test_image_sources(src, kept):
    out = sanitize_html(f'<img src="{src}" alt="pic" width="10" height="20" title="t">')
    assert ("src=" in out) is kept
    assert 'alt="pic"' in out and 'width="10"' in out and 'height="20"' in out


def test_srcset_and_lazy_sources_do_not_survive_sanitizing():
    out = sanitize_html(
        '<img src="cid:a" srcset="https://t.test/a.png 2x" lowsrc="https://t.test/l.png"'
        ' data-src="https://t.test/d.png"><picture><source srcset="https://t.test/s.png"></picture>'
    )
    assert "t.test" not in out


def test_comments_including_conditional_ones_are_gone():
    out = sanitize_html("<!--[if mso]><p>only outlook</p><![endif]--><p>all</p><!-- secret -->")
    assert out == "<p>all</p>"


@pytest.mark.parametrize(
    "html",
    [
        "",
        "plain text, no markup",
        "<",
        "<<<>>>",
        "<p",
        '<a href="',
        "<div><span><b>unclosed",
        "</p></div></table>",
        "<table><td>cell<tr><p>odd</table></td>",
        "a\x00b\x01c",
        "lone \udcff surrogate",
        "<p>" + "x" * 1_000_000 + "</p>",
        "<p>Hello <b>world</b> &amp; co</p>\n" * 30_000,
    ],
    ids=lambda html: repr(html[:20]),
)
def test_never_raises(html):
    assert isinstance(sanitize_html(html), str)
    assert isinstance(html_to_text(html), str)


def test_surrogates_are_replaced_not_fatal():
    assert sanitize_html("<p>caf\udce9</p>") == "<p>caf?</p>"


@pytest.mark.parametrize(
    "html",
    [
        "<div>" * 200_000 + "deep",
        "<span></foo>" * 80_000 + "stray end tags",
        "<ul><li>" * 80_000 + "list",
        "& " * 500_000,
    ],
    ids=["nested-div", "unclosed-span", "nested-list", "ampersands"],
)
def test_quadratic_html5ever_inputs_fall_back_to_escaped_text(html):
    """Regression: html5ever walks its open-element stack per tag and rescans
    character-reference runs, so 1 MB of <div> took 81 s inside nh3."""
    started = time.perf_counter()
    out = sanitize_html(html)
    assert time.perf_counter() - started < 5
    assert out.startswith(FALLBACK)
    assert tags(out) == {"div"}


def test_escaped_text_fallback_cannot_smuggle_markup():
    out = sanitize_html("<div>" * 2_000 + "<img src=x onerror=alert(1)>&lt;script&gt;")
    assert out.startswith(FALLBACK)
    assert "<img" not in out and "<script" not in out
    assert "&lt;script&gt;" in out


def test_legit_mail_with_many_implied_end_tags_is_not_a_fallback():
    html = "<table>" + "<tr><td>a<td>b" * 3_000 + "</table>" + "<p>x" * 3_000
    assert not sanitize_html(html).startswith(FALLBACK)


# --- block_remote_images ----------------------------------------------------------------


def test_tracking_pixel_is_disabled_and_counted():
    html, count = block_remote_images(
        sanitize_html('<p>Hi</p><img src="http://tracker.test/p.gif" width="1" height="1" alt="">')
    )
    assert count == 1
    assert not re.search(r"\ssrc\s*=", html)
    assert 'data-remote-src="http://tracker.test/p.gif"' in html
    assert 'width="1"' in html


def test_local_images_stay():
    original = sanitize_html(
        '<img src="cid:logo@mail" alt="logo">'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="dot">'
    )
    html, count = block_remote_images(original)
    assert (html, count) == (original, 0)


def test_protocol_relative_and_https_are_remote():
    html, count = block_remote_images(
        sanitize_html(
            '<img src="//cdn.test/a.png"><img src="https://cdn.test/b.png"><img src="cid:c">'
        )
    )
    assert count == 2
    assert 'data-remote-src="//cdn.test/a.png"' in html
    assert 'data-remote-src="https://cdn.test/b.png"' in html
    assert 'src="cid:c"' in html


def test_srcset_is_disabled_with_its_image():
    html, count = block_remote_images(
        '<img src="https://t.test/a.png"'
        ' srcset="https://t.test/a2.png 2x, https://t.test/a3.png 3x">'
        '<picture><source srcset="//t.test/s.webp"><img src="cid:x" alt="x"></picture>'
    )
    assert count == 2
    assert "srcset=" not in html.replace("data-remote-srcset=", "")
    assert 'data-remote-srcset="https://t.test/a2.png 2x, https://t.test/a3.png 3x"' in html
    assert 'data-remote-srcset="//t.test/s.webp"' in html
    assert 'src="cid:x"' in html


def test_only_real_attributes_are_rewritten():
    html, count = block_remote_images(
        "<img alt=\"src=http://x.test/not-an-attribute\" title='a \"quoted\" src' src='http://x.test/i.png'>"
    )
    assert count == 1
    assert 'alt="src=http://x.test/not-an-attribute"' in html
    assert 'data-remote-src="http://x.test/i.png"' in html


def test_entity_encoded_and_uppercase_sources_are_caught():
    html, count = block_remote_images(
        '<IMG SRC="HTTP://x.test/a.png"><img src="&#104;ttps://x.test/b.png"><img src=" http://x.test/c">'
    )
    assert count == 3
    assert not re.search(r"\ssrc\s*=", html, re.I)


def test_a_preset_remote_target_is_not_trusted():
    html, count = block_remote_images('<img data-remote-src="https://evil.test/" src="cid:ok">')
    assert count == 0
    assert "evil" not in html


def test_html_without_images_is_untouched():
    for html in ("", "plain", "<p>no images <b>here</b></p>", "<img", '<img src="'):
        assert block_remote_images(html)[1] == 0


# --- html_to_text -----------------------------------------------------------------------

NEWSLETTER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Spring Sale at ACME</title>
<style>body { margin: 0 } .hide { display: none }</style>
<script>window.track && track('open');</script>
<!--[if mso]><xml><o:OfficeDocumentSettings><o:AllowPNG/>
</o:OfficeDocumentSettings></xml><![endif]-->
</head>
<body>
<div class="preheader">Save 20% this week&nbsp;&zwnj;&nbsp;&zwnj;&nbsp;&zwnj;</div>
<table width="100%" cellpadding="0"><tr><td>
  <a href="https://acme.test/?utm_source=mail&amp;utm_medium=news"><img src="https://cdn.acme.test/logo.png"
     alt="ACME"></a>
</td></tr>
<tr><td>
  <h1>Spring&nbsp;Sale</h1>
  <p>Dear Anna,<br>our prices are <b>down</b>   by
     20&nbsp;% &mdash; don&rsquo;t miss out.</p>
  <ul>
    <li>Widgets &amp; gadgets</li>
    <li>Tools<ul><li>hammers</li><li>saws</li></ul></li>
  </ul>
  <ol><li>Pick</li><li>Pay</li></ol>
  <table>
    <tr><th>Item</th><th>Price</th></tr>
    <tr><td>Widget</td><td>&euro;&nbsp;10</td></tr>
  </table>
  <p><a href="https://acme.test/sale?id=7&amp;u=9">Shop now</a> or write to
     <a href="mailto:help@acme.test">help@acme.test</a>.
     Visit <a href="https://www.acme.test/">acme.test</a>.</p>
</td></tr></table>
<p>On 3 May 2024, Bob &lt;bob@acme.test&gt; wrote:</p>
<blockquote><p>Is the sale on?<br>Thanks</p><blockquote>Nested question</blockquote></blockquote>
<p>Unsubscribe: <a href="https://acme.test/u?t=1">here</a></p>
</body></html>
"""

NEWSLETTER_TEXT = """Save 20% this week
[ACME] <https://acme.test/?utm_source=mail&utm_medium=news>

Spring Sale

Dear Anna,
our prices are down by 20 % — don’t miss out.

- Widgets & gadgets
- Tools
  - hammers
  - saws
1. Pick
2. Pay
Item  Price
Widget  € 10

Shop now <https://acme.test/sale?id=7&u=9> or write to help@acme.test. Visit acme.test.

On 3 May 2024, Bob <bob@acme.test> wrote:

> Is the sale on?
> Thanks
>
> > Nested question

Unsubscribe: here <https://acme.test/u?t=1>"""


def test_newsletter_reads_as_plain_text():
    assert html_to_text(NEWSLETTER) == NEWSLETTER_TEXT


OUTLOOK = """<html xmlns:o="urn:schemas-microsoft-com:office:office">
<head><meta http-equiv=Content-Type content="text/html; charset=utf-8">
<style><!-- p.MsoNormal {margin:0cm; font-size:11.0pt;
  font-family:"Calibri",sans-serif;} --></style>
</head>
<body lang=DE link="#0563C1"><div class=WordSection1>
<p class=MsoNormal>Hello support team,<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>order&nbsp;#4711 hasn&#8217;t arrived &amp; tracking says
&quot;pending&quot;.<o:p></o:p></p>
<p class=MsoNormal>Details: <a href="https://shop.test/orders/4711">order page</a><o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Kind regards<br>Anna M&uuml;ller<o:p></o:p></p>
</div></body></html>"""


def test_outlook_lines_stay_single_spaced_with_its_blank_paragraphs():
    assert html_to_text(OUTLOOK) == (
        "Hello support team,\n"
        "\n"
        'order #4711 hasn’t arrived & tracking says "pending".\n'
        "Details: order page <https://shop.test/orders/4711>\n"
        "\n"
        "Kind regards\n"
        "Anna Müller"
    )


def test_blockquote_lines_are_quoted_for_quote_stripping():
    text = html_to_text(
        '<div dir="ltr">Sounds good.</div><div class="gmail_quote">On Mon, Ann wrote:<br>'
        '<blockquote class="gmail_quote"><div>First line<br>second line</div></blockquote></div>'
    )
    assert text == "Sounds good.\nOn Mon, Ann wrote:\n> First line\n> second line"


def test_script_style_head_and_comments_are_not_text():
    text = html_to_text(
        "<head><title>T</title><style>p{}</style></head>"
        "<p>a<script>if (x < y) { document.write('<b>no</b>') }</script>b<!-- c -->d</p>"
        "<style>.x{}</style><noscript>n</noscript><template>t</template>"
    )
    assert text == "abd"


def test_unclosed_script_hides_the_rest_as_a_browser_does():
    assert html_to_text("<p>shown</p><script>var a = '<p>hidden</p>'") == "shown"


def test_whitespace_and_breaks_collapse():
    assert html_to_text("<p>  a \n\t b  </p>\n\n\n<p>c</p>") == "a b\n\nc"
    assert html_to_text("a<br><br><br><br><br>b") == "a\n\nb"
    assert html_to_text("<div>a</div><div>b</div>") == "a\nb"
    assert html_to_text("<b>bold</b><i>italic</i> <u>u</u>") == "bolditalic u"


def test_preformatted_text_keeps_its_lines():
    assert html_to_text("<pre>\n  indented\n\tcode &lt;x&gt;</pre><p>after</p>") == (
        "  indented\n\tcode <x>\n\nafter"
    )


def test_links_show_their_url_only_when_it_adds_something():
    assert html_to_text('<a href="https://x.test/">https://x.test/</a>') == "https://x.test/"
    assert html_to_text('<a href="https://x.test/a">read</a>') == "read <https://x.test/a>"
    assert html_to_text('<a href="javascript:void(0)">menu</a>') == "menu"
    assert html_to_text('<a href="#top">top</a>') == "top"
    assert html_to_text('<a href="https://x.test/b"><img src="cid:x" alt=""></a>') == (
        "<https://x.test/b>"
    )


def test_entities_decode_once():
    assert html_to_text("&amp;lt; &lt;b&gt; &#169; &#x263A; &copy &unknown;") == (
        "&lt; <b> © ☺ © &unknown;"
    )


def test_ordered_list_start():
    assert html_to_text('<ol start="7"><li>seven</li><li>eight</li></ol>') == "7. seven\n8. eight"


@pytest.mark.parametrize(
    "html",
    ["<div>" * 200_000 + "deep", "<blockquote>x" * 50_000, "<ul><li>" * 50_000, "<!--" * 100_000],
    ids=["nested-div", "nested-quote", "nested-list", "comments"],
)
def test_html_to_text_stays_linear_on_pathological_nesting(html):
    started = time.perf_counter()
    html_to_text(html)
    assert time.perf_counter() - started < 5


# --- all three on random hostile soup ---------------------------------------------------

# Kept packed by hand: one item per line would make a page of this list.
# fmt: off
SOUP = [
    "<p>", "</p>", "<div style='color:red;background:url(http://t.test/x)'>", "</div>", "<",
    "<a href='javascript:alert(1)'>", '<a href="https://x.test/?a=1&b=2">', "</a>", ">", "'",
    "<img src='http://t.test/p.gif' onerror=alert(1)>", '<img src="cid:x">', "&", "&#0;",
    "<img srcset='//t.test/x 2x'>", "<script>", "</script>", "<style>", "</style>", "<!--", "-->",
    "<blockquote>", "</blockquote>", "<ul>", "<li>", "</ul>", "<ol start=99999999999>", "<table>",
    "<tr>", "<td>", "&nbsp;", "&amp;", "text", " ", "\n", "\x00", "\udcff", "<pre>", "</pre>",
    "<svg onload=alert(1)>", "<math>", "<iframe>", "<br>", "</br>", "<title>", '"', "<head>",
    "</head>", "<![CDATA[", "<?xml", "<a title='x src=http://y.test'>", "<xmp>",
    "<img alt='>' src=//t.test/e.png>", "<font face='<script>'>", "<p class=MsoNormal>",
    "<input src=http://t.test/i type=image>", "<base href=http://t.test/>", "\u200c", "<form>",
    "<meta http-equiv=refresh content='0;url=http://t.test/'>", "<object>", "<noscript>",
]
# fmt: on


def test_random_soup_never_raises_and_never_leaks():
    rnd = random.Random(20240503)
    for _ in range(500):
        soup = "".join(rnd.choice(SOUP) for _ in range(rnd.randint(0, 60)))
        html, _count = block_remote_images(sanitize_html(soup))
        assert isinstance(html_to_text(soup), str)
        markup = " ".join(re.findall(r"<[a-zA-Z][^>]*>", html))
        assert not re.search(
            r"<(script|style|iframe|svg|math|object|form|input|base|meta)\b", markup
        )
        assert not re.search(r"\son\w+\s*=|javascript:|url\(", markup, re.I)
        assert not re.search(r"\ssrc=\"(?!cid:|data:image/)", markup)
