"""The neuron browser (outputs/browser.py, ``tl-langneurons browse``) on the built-in model: the
site's files, then the site opened from disk in a real headless Chromium — filter, sort, click
into a neuron, and read what it shows against the statistics, with no console error and no
request outside the site's folder."""

import re
from pathlib import Path

import pytest
from chromium import Chromium, chromium_path

from tl_langneurons import LangNeuronsError, LanguageNeurons, NeuronStats, identify, load_corpus, record
from tl_langneurons.cli import main
from tl_langneurons.evaluate import perplexity_matrix
from tl_langneurons.outputs.browser import unit_id, write_browser
from tl_langneurons.outputs.measurements import write_ppl

LANGS = ["en", "de", "ru"]
MAX_PAGES = 40  # neuron pages written (the most specific first): all rows are in the index
needs_chromium = pytest.mark.skipif(chromium_path() is None, reason="no chromium on PATH (Debian: apt-get install "
                                    "chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def demo(builtin_model, tmp_path_factory):
    """The demo's steps in small: statistics with top examples and histograms, LAPE, the perplexity
    matrix, and the site."""
    d = tmp_path_factory.mktemp("browse")
    corpus = load_corpus("builtin", languages=LANGS, max_sentences=25)
    stats = record(builtin_model, corpus, batch_size=16, top_examples=5, histogram_edges=True, progress=False)
    neurons = identify.lape(stats, top_rate=0.03)
    ev = load_corpus("builtin", languages=LANGS, split="eval", max_sentences=2)
    df = perplexity_matrix(builtin_model, ev, neurons, batch_size=8, progress=False)
    stats.save(d / "stats")
    neurons.save(d / "neurons.json")
    write_ppl(df, d / "ppl")
    assert main(["browse", "--stats", str(d / "stats"), "--neurons", str(d / "neurons.json"), "--ppl",
                 str(d / "ppl"), "--max-neurons", str(MAX_PAGES), "--out", str(d / "site")]) == 0
    return {"dir": d, "stats": stats, "neurons": neurons, "ppl": df, "site": d / "site"}


def _pages(demo) -> set[str]:
    return {p.stem for p in (demo["site"] / "neurons").glob("*.js")}


def _own_neuron(demo, lang: str) -> tuple[int, int]:
    """The neuron of ``lang`` alone with a page and the highest activation probability in ``lang``
    (its examples in ``lang`` come first on its page)."""
    n = demo["neurons"]
    alone = [u for u in n.neurons[lang] if all(u not in n.neurons[k] for k in n.languages if k != lang)
             and unit_id(*u) in _pages(demo)]
    p = demo["stats"].activation_probability()
    k = demo["stats"].index(lang)
    return max(alone, key=lambda u: float(p[k, u[0], u[1]]))


def test_site_files_are_self_contained(demo):
    site, stats = demo["site"], demo["stats"]
    units = demo["neurons"].union()
    pages = sorted(_pages(demo))
    # the MAX_PAGES most specific neurons have pages, and only they are links
    from tl_langneurons.outputs.browser import _specificity

    p = stats.activation_probability()[:, [u[0] for u in units], [u[1] for u in units]]
    spec = _specificity(p.double()).tolist()
    ranked = sorted(range(len(units)), key=lambda j: (-spec[j], units[j]))
    assert pages == sorted(unit_id(*units[j]) for j in ranked[:MAX_PAGES])
    html = (site / "index.html").read_text(encoding="utf-8")
    for text in [html] + [(site / "neurons" / f"{p}.js").read_text(encoding="utf-8") for p in pages[:20]]:
        links = re.findall(r'(?:src|href)=\\?"([^"\\]*)', text)
        assert all(not re.match(r"[a-z]+:|//", x) for x in links), links  # nothing from a network
        assert "<link" not in text and "@import" not in text
    assert html.count("<tr data-id=") == len(units) and html.count('href="#L') == MAX_PAGES


def test_without_examples_histograms_or_ppl_the_page_says_how_to_get_them(demo, tmp_path, tiny_llama):
    from dataclasses import replace

    stats = replace(demo["stats"], top_examples=None, hist=None, hist_edges=None)
    write_browser(stats, demo["neurons"], tmp_path, max_neurons=1)
    page = next((tmp_path / "neurons").glob("*.js")).read_text(encoding="utf-8")
    assert "record with <code>--top-examples K</code>" in page and "--histograms" in page and "ΔNLL" not in page
    with pytest.raises(LangNeuronsError, match="no perplexity result"):
        write_browser(demo["stats"], demo["neurons"], tmp_path, ppl=tmp_path / "missing.csv")
    other = LanguageNeurons({"en": [(0, 1)]}, "test", {}, "pre", {}, 6, 1792)
    with pytest.raises(LangNeuronsError, match="site 'pre'"):
        write_browser(demo["stats"], other, tmp_path)
    tiny = record(tiny_llama, {"en": ["A b c."]}, progress=False)
    with pytest.raises(LangNeuronsError, match="different models"):
        write_browser(tiny, demo["neurons"], tmp_path)
    assert main(["browse", "--stats", str(demo["dir"] / "stats"), "--neurons", str(demo["dir"] / "neurons.json"),
                 "--max-neurons", "0", "--out", str(tmp_path)]) == 2


@needs_chromium
def test_in_chromium_filter_sort_click_into_a_neuron_and_read_it(demo):
    stats, neurons, top = demo["stats"], demo["neurons"], demo["stats"].top_examples
    layer, index = _own_neuron(demo, "de")
    uid = unit_id(layer, index)
    with Chromium() as c:
        c.open((demo["site"] / "index.html").as_uri())
        n_all = len(neurons.union())
        assert c.eval("document.getElementById('count').textContent") == f"{n_all} of {n_all} neurons"
        # filter by language: exactly that language's neurons remain
        c.eval("var s = document.getElementById('f-lang'); s.value = 'de'; s.dispatchEvent(new Event('input'))")
        shown = c.eval("Array.from(document.querySelectorAll('#neurons tbody tr')).filter(r => !r.hidden)"
                       ".map(r => r.dataset.id)")
        assert sorted(shown) == sorted(unit_id(*u) for u in neurons.neurons["de"])
        # sort by specificity (a click on its header): descending
        c.click("th[data-key='spec']")
        specs = c.eval("Array.from(document.querySelectorAll('#neurons tbody tr')).filter(r => !r.hidden)"
                       ".map(r => parseFloat(r.dataset.spec))")
        assert specs == sorted(specs, reverse=True)
        # click into the neuron: its page is loaded from neurons/<id>.js
        c.click(f"a[href='#{uid}']")
        c.wait_for(f"document.querySelector('#neuron-body .neuron[data-id=\"{uid}\"]')")
        assert c.eval("document.getElementById('index').hidden") is True
        first = top.examples(layer, index, "de")[0]
        fire = c.eval("(function () { var f = document.querySelector('details[data-lang=\"de\"] li.ex .t.fire'); "
                      "return [f.textContent, f.dataset.act, f.closest('li').dataset.sentence, "
                      "f.closest('li').dataset.position]; })()")
        pieces = first["pieces"]
        shown_piece = next(p for p in pieces[first["position"]:] if p)  # a split character shows on its last token
        assert fire == [shown_piece, f"{first['value']:.4f}", str(first["sentence"]), str(first["position"])]
        # the activation-probability bars carry the statistics' numbers
        p = stats.activation_probability()
        bars = c.eval("Array.from(document.querySelectorAll('.neuron svg.bars .pval')).map(t => t.textContent)")
        assert bars == [f"{float(p[k, layer, index]):.3f}" for k in range(len(stats.languages))]
        # its language's ΔNLL, as the perplexity matrix has it
        df = demo["ppl"]
        own = df[(df.ablated == "de") & (df.evaluated == "de")].set_index("condition")["nll"]
        dnll = c.eval("document.querySelector('.ppl tr.own .dnll').textContent")
        assert dnll == f"{own['intervention'] - own['baseline']:+.4f}"
        assert c.eval("document.querySelectorAll('.neuron svg.hist').length") == len(stats.languages)
        # back to the index, then straight to another neuron by its address
        c.click("a.back")
        c.wait_for("!document.getElementById('index').hidden")
        other = unit_id(*_own_neuron(demo, "ru"))
        c.open((demo["site"] / "index.html").as_uri() + "#" + other)
        c.wait_for(f"document.querySelector('#neuron-body .neuron[data-id=\"{other}\"]')")
        c.open((demo["site"] / "index.html").as_uri() + "#L99-0")
        c.wait_for("document.getElementById('neuron-body').textContent.indexOf('no page for neuron L99-0') >= 0")
        errors = [e for e in c.errors if "L99-0.js" not in e]  # the one missing page asked for on purpose
        assert errors == [], errors
        assert c.eval("window.tllnErrors.filter(e => e.indexOf('L99-0') < 0).length") == 0
        site = demo["site"].as_uri()
        assert c.requests and all(u.startswith(site) for u in c.requests), c.requests
