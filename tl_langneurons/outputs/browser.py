"""A neuron browser: a static HTML site for reading what each language neuron fires on.

``write_browser(stats, neurons, out)`` (``tl-langneurons browse``) writes ``out/index.html`` — an
index of the neurons (language, layer, index, activation probability per language, shared-by,
specificity), sortable and filterable — and one ``out/neurons/L<layer>-<index>.js`` per neuron,
loaded only when that neuron is opened (``index.html#L3-120``): its top-activating examples in
every language with the firing token highlighted and its neighbours shaded by activation, its
activation probability across languages, its histogram per language where recorded, and its
language's ΔNLL where a perplexity matrix is given.

Everything is rendered here by Jinja2 templates (``templates/browser/``); the page's own script
only sorts, filters and loads a neuron's file (a ``<script>`` tag, which browsers allow from disk
where they refuse ``fetch``). No server, no network: the site opens from disk.
"""

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .._io import atomic_write_text, make_out_dir, package_version
from ..errors import LangNeuronsError
from ..identity import compatible

SHOW_BEFORE, SHOW_AFTER = 16, 8  # tokens of plain text shown around each example's context window
_SHADES = 8  # shading steps of a token's background, each way


def _env():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("tl_langneurons", "outputs/templates/browser"),
                      autoescape=select_autoescape(["html", "j2", "svg"], default_for_string=True, default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda v, n=3: "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) \
        else f"{v:.{n}f}"
    return env


def unit_id(layer: int, index: int) -> str:
    return f"L{layer}-{index}"


def _specificity(p: torch.Tensor) -> torch.Tensor:
    """1 − the normalised entropy of each unit's activation probabilities over languages: 1 = it
    fires in one language only, 0 = equally in all (LAPE's entropy, rescaled to [0, 1])."""
    K = p.shape[0]
    total = p.sum(0, keepdim=True)
    q = torch.where(total > 0, p / total.clamp_min(1e-300), torch.full_like(p, 1.0 / K))
    h = -(q * q.clamp_min(1e-300).log()).sum(0)
    return (1 - h / math.log(K)).clamp(0, 1) if K > 1 else torch.zeros_like(h)


def read_ppl(ppl) -> pd.DataFrame:
    """``ppl.csv`` of ``tl-langneurons ppl`` (a path to it or to its folder) or its DataFrame."""
    if isinstance(ppl, pd.DataFrame):
        df = ppl
    else:
        p = Path(ppl)
        p = p / "ppl.csv" if p.is_dir() else p
        if not p.is_file():
            raise LangNeuronsError(f"no perplexity result at {str(p)!r}; give ppl.csv written by 'tl-langneurons ppl'")
        df = pd.read_csv(p)
    missing = {"ablated", "evaluated", "condition", "nll"} - set(df.columns)
    if missing:
        raise LangNeuronsError(f"the perplexity table lacks column(s) {sorted(missing)}; is it ppl.csv from "
                               "'tl-langneurons ppl'?")
    return df


def _delta_nll(df: pd.DataFrame, language: str) -> dict | None:
    """ΔNLL of every evaluated language when ``language``'s neurons are switched off (and the random control)."""
    rows = df[df["ablated"] == language]
    if rows.empty:
        return None
    out = []
    for ev, g in rows.groupby("evaluated", sort=False):
        nll = {c: float(v) for c, v in zip(g["condition"], g["nll"])}
        if "baseline" not in nll or "intervention" not in nll:
            continue
        out.append({"evaluated": str(ev), "delta": nll["intervention"] - nll["baseline"],
                    "control": nll["control"] - nll["baseline"] if "control" in nll else None,
                    "own": str(ev) == language})
    return {"ablated": language, "rows": out} if out else None


@dataclass(frozen=True)
class _Bar:
    label: str
    value: float
    own: bool


def _bars_svg(bars: list[_Bar], width: int = 360, row: int = 16) -> dict:
    top = max([b.value for b in bars] + [1e-12])
    return {"width": width, "height": row * len(bars) + 4, "row": row, "label_w": 40, "bar_w": width - 40 - 60,
            "bars": [{"label": b.label, "value": b.value, "own": b.own, "frac": b.value / top} for b in bars]}


def _hist_svg(counts: torch.Tensor, edges: torch.Tensor, languages: list[str], own: set) -> dict | None:
    """Per language, the share of its tokens in each bin, over the bins where any language has any."""
    nz = (counts.sum(0) > 0).nonzero().squeeze(1)
    if len(nz) == 0:
        return None
    lo, hi = int(nz.min()), int(nz.max())
    shares = counts[:, lo:hi + 1].double()
    shares = shares / shares.sum(1, keepdim=True).clamp_min(1)
    e = edges.double().tolist()
    # bin b holds [edges[b-1], edges[b]); the outer bins are open-ended
    left = e[0] if lo == 0 else e[lo - 1]
    right = e[-1] if hi >= len(e) else e[hi]
    peak = float(shares.max()) or 1.0
    n, W, H = hi - lo + 1, 360, 36
    bw = W / n

    def path(row: list[float]) -> str:  # a step outline of the bars: SVG path data, one per language
        pts = [f"M0,{H}"]
        for b, v in enumerate(row):
            y = H * (1 - v / peak)
            pts.append(f"L{b * bw:.1f},{y:.1f}L{(b + 1) * bw:.1f},{y:.1f}")
        return "".join(pts) + f"L{W},{H}Z"

    return {"width": W, "height": H, "left": left, "right": right,
            "zero": (0.0 - left) / (right - left) if right > left else None,
            "rows": [{"label": lang, "own": lang in own, "path": path(shares[k].tolist())}
                     for k, lang in enumerate(languages)]}


def _shade(v: float, top: float) -> str:
    if top <= 0 or v == 0:
        return ""
    step = min(_SHADES, max(1, math.ceil(abs(v) / top * _SHADES)))
    return f"{'p' if v > 0 else 'n'}{step}"


def _example(e: dict, before: int, top: float, bos: bool) -> dict:
    """One example as text around shaded tokens: ``pre`` text, ``tokens`` of the context window
    (``piece``, ``act``, ``shade``, ``fire``), ``post`` text.

    A character that spans several tokens (byte fallback: a CJK character is often three) has an
    empty piece on all but its last token; such tokens are shown as one, with the activation of
    largest magnitude, the activations of each in its tooltip, and the firing mark if any fires.
    """
    pieces, pos = e["pieces"], e["position"]
    first = 1 if bos else 0  # BOS is never shown
    w0 = pos - before
    tokens, pending = [], []
    for w, act in enumerate(e["window"]):
        p = w0 + w
        if not first <= p < len(pieces):
            continue
        pending.append((p, act))
        if pieces[p] == "" and p + 1 < min(len(pieces), w0 + len(e["window"])):
            continue  # part of a character that a later token completes
        strongest = max(pending, key=lambda x: abs(x[1]))[1]
        tokens.append({"piece": pieces[p].replace("\n", "⏎") or "·", "act": strongest,
                       "acts": " / ".join(f"{a:.3f}" for _, a in pending), "shade": _shade(strongest, top),
                       "fire": any(q == pos for q, _ in pending)})
        pending = []
    start, end = max(first, w0), min(len(pieces), w0 + len(e["window"]))
    pre_from, post_to = max(first, start - SHOW_BEFORE), min(len(pieces), end + SHOW_AFTER)
    return {"value": e["value"], "sentence": e["sentence"], "position": pos,
            "pre": ("…" if pre_from > first else "") + "".join(pieces[pre_from:start]).replace("\n", "⏎"),
            "tokens": tokens,
            "post": "".join(pieces[end:post_to]).replace("\n", "⏎") + ("…" if post_to < len(pieces) else "")}


def write_browser(stats, neurons, out: str | os.PathLike, ppl=None, title: str | None = None,
                  max_neurons: int | None = None) -> Path:
    """Write the site into ``out`` and return the path of its ``index.html``.

    Args:
        stats: the :class:`~.stats.NeuronStats` the neurons were found on; with ``top_examples``
            (``record(..., top_examples=K)``) the site shows each neuron's examples, with
            histograms (``histogram_edges=``) its histograms.
        neurons: a :class:`~.neurons.LanguageNeurons` set of the same model and site.
        ppl: optional ``ppl.csv`` (or its folder, or its DataFrame) of ``tl-langneurons ppl`` on
            these neurons: each neuron's page shows its language's ΔNLL row.
        max_neurons: write at most this many neuron pages (the most specific first); default all.
    """
    from ..neurons import LanguageNeurons
    from ..stats import NeuronStats

    if not isinstance(stats, NeuronStats):
        raise LangNeuronsError(f"stats must be NeuronStats, got {type(stats).__name__}")
    if not isinstance(neurons, LanguageNeurons):
        raise LangNeuronsError(f"neurons must be LanguageNeurons, got {type(neurons).__name__}")
    if neurons.site != stats.site:
        raise LangNeuronsError(f"the neurons are at site {neurons.site!r}, the statistics at {stats.site!r}")
    compatible(neurons.model, stats.model, "the neurons", "the statistics")
    if (neurons.n_layers, neurons.d_mlp) != (stats.n_layers, stats.d_mlp):
        raise LangNeuronsError(f"the neurons are for {neurons.n_layers} x {neurons.d_mlp} units, the statistics "
                               f"for {stats.n_layers} x {stats.d_mlp}")
    ppl_df = None if ppl is None else read_ppl(ppl)
    out = make_out_dir(out)
    env = _env()

    langs = stats.languages
    p = stats.activation_probability().float()  # [K, L, I]
    owners: dict[tuple[int, int], list[str]] = {}
    for lang in neurons.languages:
        for pair in neurons.neurons[lang]:
            owners.setdefault(pair, []).append(lang)
    units = sorted(owners)
    if not units:
        raise LangNeuronsError("the neuron set is empty: nothing to browse")
    idx_l = torch.tensor([u[0] for u in units])
    idx_i = torch.tensor([u[1] for u in units])
    pu = p[:, idx_l, idx_i]  # [K, U]
    spec = _specificity(pu.double())
    rows = []
    for j, (layer, index) in enumerate(units):
        rows.append({"id": unit_id(layer, index), "layer": layer, "index": index, "langs": owners[(layer, index)],
                     "spec": float(spec[j]), "p": [float(v) for v in pu[:, j].tolist()]})
    order = sorted(range(len(rows)), key=lambda j: (-rows[j]["spec"], rows[j]["layer"], rows[j]["index"]))
    if max_neurons is not None:
        order = order[:max_neurons]
    pages = {rows[j]["id"] for j in order}

    top = stats.top_examples
    top_units = set() if top is None else {tuple(u) for u in top.units.tolist()}
    bos = bool(stats.meta.get("options", {}).get("bos_prepended", True)) if top is None else \
        bool(top.meta.get("bos_prepended", True))
    ppl_by_lang = {}
    if ppl_df is not None:
        ppl_by_lang = {k: _delta_nll(ppl_df, k) for k in neurons.languages}

    ndir = out / "neurons"
    if ndir.exists():
        shutil.rmtree(ndir)  # pages of another neuron set must not linger
    ndir.mkdir(parents=True)
    neuron_t = env.get_template("neuron.html.j2")
    for j in sorted(order):
        row = rows[j]
        layer, index = row["layer"], row["index"]
        own = set(row["langs"])
        by_lang = sorted(range(len(langs)), key=lambda k: (langs[k] not in own, -row["p"][k]))
        examples = None
        if (layer, index) in top_units:
            all_ex = {langs[k]: top.examples(layer, index, langs[k]) for k in by_lang}
            peak = max([abs(e["value"]) for ex in all_ex.values() for e in ex] + [0.0])
            examples = [{"lang": lang, "own": lang in own, "p": row["p"][langs.index(lang)],
                         "items": [_example(e, top.context[0], peak, bos) for e in ex]}
                        for lang, ex in all_ex.items()]
        hist = None
        if stats.hist is not None:
            hist = _hist_svg(stats.hist[:, layer, index, :], stats.hist_edges, langs, own)
        html = neuron_t.render(
            row=row, languages=langs, examples=examples, k=None if top is None else top.k,
            has_top=top is not None, bars=_bars_svg([_Bar(lang, row["p"][k], lang in own) for k, lang in enumerate(langs)]),
            hist=hist, has_hist=stats.hist is not None,
            ppl=[ppl_by_lang[x] for x in row["langs"] if ppl_by_lang.get(x)] if ppl_df is not None else None)
        atomic_write_text(ndir / f"{row['id']}.js", f"tlln.loaded({json.dumps(row['id'])}, {json.dumps(html)});\n")

    model = stats.model
    index_t = env.get_template("index.html.j2")
    page = index_t.render(
        title=title or f"Language neurons of {model.get('name') or 'a model'}",
        languages=langs, rows=[rows[j] for j in range(len(rows))], pages=sorted(pages),
        layers=sorted({u[0] for u in units}), neurons=neurons, stats=stats, model=model,
        n_tokens=[int(x) for x in stats.n_tokens.tolist()], has_top=top is not None,
        top_k=None if top is None else top.k, has_hist=stats.hist is not None, has_ppl=ppl_df is not None,
        version=package_version())
    return atomic_write_text(out / "index.html", page)
