"""Names from data shown where markup renders stay literal text."""

from capsafe_core import inert

WJ = "\u2060"


def test_md_escapes_every_markdown_construct():
    out = inert.md("![x](http://e.io/a.png) **b** <i>i</i> $x^2$ :red[c] `code` # h")
    assert out.replace(WJ, "").replace("\\", "") == "![x](http://e.io/a.png) **b** <i>i</i> $x^2$ :red[c] `code` # h"
    plain = out.replace(WJ, "")
    i = 0
    while i < len(plain):  # every punctuation mark is escaped by the backslash before it
        if plain[i] == "\\":
            i += 2
            continue
        assert plain[i].isalnum() or plain[i] == " ", (i, plain)
        i += 1
    assert "http\\:" + WJ in out  # no autolink: the URL is broken by an invisible joiner
    assert "\n" not in inert.md("two\nlines")


def test_md_breaks_autolinks_and_emoji_codes():
    for text in ("see www.example.com", "mail a@b.co", ":smile: :material/home:"):
        out = inert.md(text)
        assert WJ in out
    assert inert.md("plain name_1") == "plain name\\_1"


def test_plot_label_escapes_tags_but_not_quotes():
    assert inert.plot_label('<b>"x"</b> & y') == '&lt;b&gt;"x"&lt;/b&gt; &amp; y'
    assert inert.html('"') == "&quot;"
