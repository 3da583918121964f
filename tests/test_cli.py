"""The command line: identify / analyze / plot / bench / demo write what they say, agree with the
Python API, and every user mistake is one line on stderr with exit status 2, never a traceback.

Commands run in-process through ``cli.main`` (fast); a few record mistakes also run as real
``python -m tl_langneurons`` processes, started together at the beginning of the module so that
they run while the in-process tests do.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import SENTENCES

from tl_langneurons import NeuronStats, analysis, evaluate, identify
from tl_langneurons.cli import main
from tl_langneurons.neurons import LanguageNeurons

REPO = Path(__file__).resolve().parents[1]
LANGS = ["en", "de", "fr", "es", "ru", "uk", "zh", "ja"]
L, I, S = 4, 64, 12  # layers, neurons per layer, sentences per language
MODEL = {"name": "synthetic", "architecture": "none", "n_layers": L, "d_mlp": I, "gated": False,
         "weights_hash": "0123abcd"}
FIGURES = ["layer_placement", "overlap_heatmap", "overlap_clustermap", "shared_by_k"]
TABLES = ["counts.csv", "layer_distribution.csv", "shared_by_k.csv", "overlap.csv", "relatedness.csv"]


# ---------------------------------------------------------------------------------------------
# Subprocess checks: started first, collected last


RECORD_MISTAKES = ["unknown language", "unknown model", "missing corpus folder", "empty corpus file",
                   "non-UTF-8 corpus file", "negative --max-sentences", "unknown --site"]


def _record_mistakes(tmp: Path) -> dict[str, list[str]]:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "en.txt").write_text("\n  \n", encoding="utf-8")
    (tmp / "latin1").mkdir()
    (tmp / "latin1" / "de.txt").write_bytes("Grüße aus Köln\n".encode("latin-1"))
    return {
        "unknown language": ["--languages", "en,xx"],
        "unknown model": ["--model", "./nope"],
        "missing corpus folder": ["--corpus", str(tmp / "no_such_folder")],
        "empty corpus file": ["--corpus", str(tmp / "empty")],
        "non-UTF-8 corpus file": ["--corpus", str(tmp / "latin1")],
        "negative --max-sentences": ["--max-sentences", "-3"],
        "unknown --site": ["--site", "nope"],
    }


@pytest.fixture(scope="module", autouse=True)
def record_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_subprocess")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    procs = {}
    cases = _record_mistakes(tmp)
    assert list(cases) == RECORD_MISTAKES
    for name, extra in cases.items():
        cmd = [sys.executable, "-m", "tl_langneurons", "record", "--out", str(tmp / "out"), *extra]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                       cwd=tmp)
    yield procs
    for p in procs.values():  # only ours; normally all finished already
        if p.poll() is None:
            p.kill()


# ---------------------------------------------------------------------------------------------
# Synthetic statistics with planted language neurons


def _synthetic_stats(sentence_means: bool = True, site: str = "act", weights_hash: str = "0123abcd") -> NeuronStats:
    """Each language has 3 neurons of its own (p = 0.9 there, 0.02 elsewhere); related languages
    (es–fr, ru–uk, zh–ja, en–de) share two more. Everything else fires at random rates."""
    g = torch.Generator().manual_seed(0)
    K = len(LANGS)
    p = torch.rand(K, L, I, generator=g, dtype=torch.float64) * 0.3 + 0.1
    planted = {}
    for k in range(K):
        planted[k] = [(1 + k % 3, 3 * k + j) for j in range(3)]
    pairs = [("es", "fr"), ("ru", "uk"), ("zh", "ja"), ("en", "de")]
    for n, (a, b) in enumerate(pairs):
        shared = [(3, 40 + 2 * n), (3, 41 + 2 * n)]
        planted[LANGS.index(a)] += shared
        planted[LANGS.index(b)] += shared
    owners: dict[tuple[int, int], list[int]] = {}
    for k, cells in planted.items():
        for c in cells:
            owners.setdefault(c, []).append(k)
    for (l, j), ks in owners.items():
        p[:, l, j] = 0.02
        p[ks, l, j] = 0.9
    n_tokens = torch.full((K,), 1000.0, dtype=torch.float64)
    count = torch.round(p * 1000.0)
    sm = sl = None
    if sentence_means:
        sm = torch.randn(K * S, L, I, generator=g)
        sl = torch.arange(K).repeat_interleave(S)
        for (l, j), ks in owners.items():
            for k in ks:
                sm[sl == k, l, j] += 3.0
    meta = {"model": {**MODEL, "weights_hash": weights_hash}}
    return NeuronStats(list(LANGS), site, n_tokens, count, count * 0.5, count * 0.5, sm, sl, meta=meta)


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("stats")
    _synthetic_stats().save(d)
    return d


@pytest.fixture(scope="module")
def lape_json(stats_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lape") / "neurons.json"
    assert main(["identify", "--stats", str(stats_dir), "--method", "lape", "--top-rate", "0.15",
                 "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------------------------------------
# identify


def test_identify_lape_equals_api(lape_json, stats_dir, capsys):
    got = LanguageNeurons.load(lape_json)
    want = identify.lape(NeuronStats.load(stats_dir), top_rate=0.15)
    assert got == want
    assert got.model["weights_hash"] == MODEL["weights_hash"] and got.site == "act"
    # the planted neurons are found: each language's own three, and the two it shares
    for k, lang in enumerate(LANGS):
        assert {(1 + k % 3, 3 * k + j) for j in range(3)} <= set(got.neurons[lang])
    assert {(3, 42), (3, 43)} <= set(got.neurons["ru"]) & set(got.neurons["uk"])


@pytest.mark.parametrize("argv, call", [
    (["--method", "lape", "--top-rate", "0.05", "--normalize-entropy", "--per-layer"],
     lambda s: identify.lape(s, top_rate=0.05, normalize_entropy=True, per_layer=True)),
    (["--method", "ap", "--n", "8", "--languages", "de,ru", "--n-positive", "6", "--n-negative", "14"],
     lambda s: identify.ap_experts_all(s, ["de", "ru"], n=8, n_positive=6, n_negative=14)),
    (["--method", "ap", "--n", "10"], lambda s: identify.ap_experts_all(s, None, n=10)),
    (["--method", "threshold", "--top-m", "5"], lambda s: identify.threshold(s, top_m=5)),
    (["--method", "threshold", "--min-probability", "0.8"], lambda s: identify.threshold(s, min_probability=0.8)),
    (["--method", "threshold", "--all-sentences"], lambda s: identify.threshold(s, all_sentences=True)),
])
def test_identify_methods_equal_api(argv, call, stats_dir, tmp_path, capsys):
    out = tmp_path / "n.json"
    assert main(["identify", "--stats", str(stats_dir), *argv, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    got = LanguageNeurons.load(out)
    assert got == call(NeuronStats.load(stats_dir))
    # a short summary: the counts (the full set is in the file), where it is and the time taken
    lines = printed.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{got.method}: {len(got.union())} neurons")
    assert lines[1] == "per language: " + ", ".join(f"{k} {n}" for k, n in got.counts().items())
    assert re.fullmatch(rf"wrote {re.escape(str(out))}; took \S+", printed.err.strip())


def test_identify_into_directory(stats_dir, tmp_path):
    assert main(["identify", "--stats", str(stats_dir), "--method", "threshold", "--top-m", "2",
                 "--out", str(tmp_path / "sets")]) == 0
    assert LanguageNeurons.load(tmp_path / "sets" / "neurons.json").counts() == dict.fromkeys(LANGS, 2)


# ---------------------------------------------------------------------------------------------
# analyze and plot


def test_analyze_writes_tables_and_summary(lape_json, stats_dir, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", "--neurons", str(lape_json), "--stats", str(stats_dir), "--permutations", "500",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "within_vs_across by family" in printed and "mantel_pearson by script" in printed
    # branch first: the most informative grouping on a real model (README)
    assert printed.index("within_vs_across by branch") < printed.index("within_vs_across by family")
    neurons = LanguageNeurons.load(lape_json)
    for name in TABLES + ["activation_probability.csv", "summary.json"]:
        assert (out / name).is_file(), name
    pd.testing.assert_frame_equal(pd.read_csv(out / "counts.csv"), analysis.counts(neurons), check_dtype=False)
    pairs = pd.read_csv(out / "overlap.csv")
    assert len(pairs) == len(LANGS) ** 2
    assert len(pd.read_csv(out / "layer_distribution.csv")) == (len(LANGS) + 1) * L

    summary = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN
    assert summary["method"] == "lape" and summary["counts"] == neurons.counts()
    assert summary["weights_hash"] == MODEL["weights_hash"]
    tests = summary["relatedness"]["tests"]
    for test in ("within_vs_across", "mantel_pearson"):
        assert list(tests[test]) == ["branch", "family", "script"]
        for by in ("branch", "family", "script"):
            r = tests[test][by]
            assert set(r) >= {"statistic", "p_value"}, (test, by, r)
            assert 0 < r["p_value"] <= 1
    # the planted pairs make same-script languages overlap more, as the test must see
    assert tests["within_vs_across"]["script"]["statistic"] > 0
    assert tests["within_vs_across"]["script"]["p_value"] < 0.05
    rel = pd.read_csv(out / "relatedness.csv")
    assert len(rel) == 6 and list(dict.fromkeys(rel.by)) == ["branch", "family", "script"]
    # each set fires far more on its own language than on the others
    for lang, s in summary["selectivity"].items():
        assert s["p_own"] > 0.5 and s["p_own"] > 3 * s["p_other_mean"], (lang, s)


def test_analyze_without_stats_and_unknown_language(tmp_path, capsys):
    """Languages without metadata are left out of the relatedness tests, not fatal."""
    sets = {"en": [(0, 1), (0, 2)], "de": [(0, 2), (1, 3)], "fr": [(1, 3)], "xx": [(0, 1)]}
    path = LanguageNeurons(sets, "manual", {}, "act", {}, 2, 8).save(tmp_path / "n.json")
    assert main(["analyze", "--neurons", str(path), "--permutations", "50", "--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["relatedness"]["no_metadata"] == ["xx"]
    assert not (tmp_path / "a" / "activation_probability.csv").exists()
    # en, de, fr are all Latin-script: nothing to compare, so that test is skipped with a reason
    assert "skipped" in summary["relatedness"]["tests"]["within_vs_across"]["script"]


def test_plot_writes_png_and_pdf(lape_json, stats_dir, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["plot", "--neurons", str(lape_json), "--stats", str(stats_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert re.fullmatch(rf"wrote 5 figures \(PNG and PDF\) to {re.escape(str(out))}; took \S+", printed.err.strip())
    printed = printed.out.split()
    names = FIGURES + ["entropy_distribution"]
    for name in names:
        for ext in ("png", "pdf"):
            f = out / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
            assert str(f) in printed
    assert (out / "layer_placement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "layer_placement.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{e}" for n in names for e in ("png", "pdf"))


def test_plot_without_stats(lape_json, tmp_path):
    assert main(["plot", "--neurons", str(lape_json), "--out", str(tmp_path)]) == 0
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(FIGURES)


# ---------------------------------------------------------------------------------------------
# bench


def test_bench_identify_prints_json(monkeypatch, capsys):
    from tl_langneurons import bench

    real = bench.bench_identify
    monkeypatch.setattr(bench, "bench_identify",
                        lambda: real(lape_shape=(3, 2, 40), ap_shape=(60, 48), sklearn_units=5))
    assert main(["bench", "identify", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert result["lape_shape"] == [3, 2, 40] and result["ap_max_abs_diff"] < 1e-6
    assert {"lape_s", "ap_s", "ap_speedup"} <= set(result)


def test_bench_hash_prints_json(monkeypatch, capsys):
    from tl_langneurons import bench

    real = bench.bench_hash
    monkeypatch.setattr(bench, "bench_hash", lambda: real(n_elements=1 << 14, n_tensors=4))
    assert main(["bench", "hash", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parameters"] == 1 << 14 and result["bytes"] == 2 << 14
    assert {"hash_s", "cached_s", "gb_per_s", "llama_8b_extrapolated_s"} <= set(result)


# ---------------------------------------------------------------------------------------------
# User mistakes: one line, status 2, no traceback


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory, stats_dir, lape_json):
    tmp = tmp_path_factory.mktemp("mistakes")
    (tmp / "bad.json").write_text("{not json", encoding="utf-8")
    (tmp / "other.json").write_text(json.dumps({"format": "something/else"}), encoding="utf-8")
    bad_range = json.loads(lape_json.read_text())
    bad_range["neurons"]["en"] = [[99, 0]]
    (tmp / "range.json").write_text(json.dumps(bad_range), encoding="utf-8")
    (tmp / "empty_dir").mkdir()
    (tmp / "a_file").write_text("not a directory", encoding="utf-8")
    LanguageNeurons({}, "manual", {}, "act", {}, L, I).save(tmp / "no_languages.json")
    _synthetic_stats(sentence_means=False).save(tmp / "no_sentences")
    _synthetic_stats(weights_hash="ffff0000").save(tmp / "other_model")
    _synthetic_stats(site="post").save(tmp / "other_site")
    return tmp


def _mistake_table():
    ident = ["identify", "--stats", "{stats}", "--out", "{tmp}/n.json", "--method"]
    analyze = ["analyze", "--out", "{tmp}/a", "--neurons"]
    plot = ["plot", "--out", "{tmp}/f", "--neurons"]
    return {
        "stats dir missing": (["identify", "--stats", "{tmp}/nowhere", "--method", "lape", "--out", "{tmp}/n.json"],
                              "no statistics"),
        "stats dir empty": (["identify", "--stats", "{tmp}/empty_dir", "--method", "lape", "--out", "{tmp}/n.json"],
                            "no statistics"),
        "unknown method": (ident + ["nope"], "unknown --method 'nope'; allowed: lape, ap, threshold"),
        "mistyped method": (ident + ["lap"], "unknown --method 'lap' (did you mean 'lape'?)"),
        "option of another method": (ident + ["lape", "--top-m", "5"], "--top-m is an option of --method threshold"),
        "top rate out of range": (ident + ["lape", "--top-rate", "1.5"], "--top-rate must be a number in (0, 1]"),
        "demo top rate out of range": (["demo", "--top-rate", "2", "--out", "{tmp}/d"],
                                       "--top-rate must be a number in (0, 1], got 2"),
        "demo zero samples": (["demo", "--n-samples", "0", "--out", "{tmp}/d"], "--n-samples must be"),
        "demo bench target not a language": (["demo", "--bench-targets", "de,xx", "--out", "{tmp}/d"], "'xx'"),
        "demo bench target not recorded": (["demo", "--languages", "en,de", "--bench-targets", "ru", "--out", "{tmp}/d"],
                                           "target(s) 'ru' are not among the demo's languages"),
        "demo zero bench prompts": (["demo", "--bench-eval", "0", "--out", "{tmp}/d"], "--bench-eval must be"),
        "top rate not a number": (ident + ["lape", "--top-rate", "lots"], "invalid float"),
        "threshold without criterion": (ident + ["threshold"], "exactly one of --top-m, --min-probability, "
                                                               "--all-sentences; got none"),
        "threshold with two criteria": (ident + ["threshold", "--top-m", "3", "--all-sentences"],
                                        "got --top-m, --all-sentences"),
        "ap odd n": (ident + ["ap", "--n", "7"], "even"),
        "ap unknown language": (ident + ["ap", "--n", "8", "--languages", "en,xx"], "'xx'"),
        "ap empty languages": (ident + ["ap", "--languages", ","], "names no language"),
        "ap without sentence means": (["identify", "--stats", "{tmp}/no_sentences", "--out", "{tmp}/n.json",
                                       "--method", "ap", "--n", "8"], "record the statistics again with "
                                                                       "--sentence-means"),
        "all sentences without sentence means": (["identify", "--stats", "{tmp}/no_sentences", "--out",
                                                  "{tmp}/n.json", "--method", "threshold", "--all-sentences"],
                                                 "--all-sentences needs per-sentence means"),
        "missing --out": (["identify", "--stats", "{stats}", "--method", "lape"], "--out"),
        "neurons missing": (analyze + ["{tmp}/nowhere.json"], "no neuron set"),
        "neurons not JSON": (analyze + ["{tmp}/bad.json"], "not valid JSON"),
        "neurons other format": (analyze + ["{tmp}/other.json"], "not a neuron set"),
        "neurons layer out of range": (analyze + ["{tmp}/range.json"], "out of range"),
        "neurons with no language": (analyze + ["{tmp}/no_languages.json"], "holds no languages"),
        "analyze into a file": (["analyze", "--neurons", "{lape}", "--out", "{tmp}/a_file"], "existing file"),
        "plot into a file": (["plot", "--neurons", "{lape}", "--out", "{tmp}/a_file"], "existing file"),
        "analyze stats missing": (analyze + ["{lape}", "--stats", "{tmp}/nowhere"], "no statistics"),
        "analyze stats of another model": (analyze + ["{lape}", "--stats", "{tmp}/other_model"], "different models"),
        "analyze stats of another site": (analyze + ["{lape}", "--stats", "{tmp}/other_site"], "different sites"),
        "analyze unknown metric": (analyze + ["{lape}", "--metric", "cosine"], "unknown overlap metric"),
        "analyze zero permutations": (analyze + ["{lape}", "--permutations", "0"], "n_permutations"),
        "plot neurons missing": (plot + ["{tmp}/nowhere.json"], "no neuron set"),
        "plot stats of another model": (plot + ["{lape}", "--stats", "{tmp}/other_model"], "different models"),
        "plot stats of another site": (plot + ["{lape}", "--stats", "{tmp}/other_site"], "different sites"),
        "unknown benchmark": (["bench", "nope"], "unknown benchmark 'nope'; allowed: record, identify, steer, hash"),
        "unknown command": (["frobnicate"], "unknown command 'frobnicate'; allowed: record, identify,"),
        "mistyped command": (["identfy"], "unknown command 'identfy' (did you mean 'identify'?)"),
        "mistyped option": (ident + ["lape", "--top-rtae", "0.1"],
                            "unrecognized option --top-rtae (did you mean '--top-rate'?)"),
    }


@pytest.mark.parametrize("case", list(_mistake_table()))
def test_user_mistake_is_one_line_exit_2(case, mistakes, stats_dir, lape_json, capsys):
    argv, expected = _mistake_table()[case]
    fill = {"tmp": str(mistakes), "stats": str(stats_dir), "lape": str(lape_json)}
    assert main([a.format(**fill) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("tl-langneurons: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (mistakes / "a").exists() and not (mistakes / "f").exists() and not (mistakes / "n.json").exists()
    assert not (mistakes / "d").exists()


def _options():
    """Every (command, option) of the command line, walked from the parser."""
    import argparse

    from tl_langneurons.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                yield name, command, action


def test_every_option_has_help_that_states_its_default():
    """No option without help text; every option with a default shows its value, read from
    argparse or the library (never a name like DEFAULT_MODE)."""
    import argparse

    missing, silent, commands = [], [], {}
    for name, command, action in _options():
        commands[name] = command
        if not action.help:
            missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
        has_default = getattr(action, "shown_default", None) is not None or (
            action.default not in (None, False, True, argparse.SUPPRESS) and not action.required)
        text = command._get_formatter()._get_help_string(action)
        if has_default and action.option_strings and "default" not in text:
            silent.append(f"{name} {action.option_strings[0]}")
    assert not missing, f"options without help: {missing}"
    assert not silent, f"options whose help does not say their default: {silent}"
    helps = {name: command.format_help() for name, command in commands.items()}
    assert not [n for n, h in helps.items() if "DEFAULT_" in h]
    steer = " ".join(helps["steer"].split())
    for shown in (f"(default: {evaluate.DEFAULT_MODE})", f"(default: {evaluate.DEFAULT_FACTOR:g})",
                  f"(default: {evaluate.DEFAULT_GENERATION.temperature})",
                  f"(default: {evaluate.DEFAULT_GENERATION.max_new_tokens})", "--dtype DTYPE the weights' dtype"):
        assert shown in steer, shown
    demo = " ".join(helps["demo"].split())
    assert "(default: builtin 300; gemma-3-270m 100)" in demo and "(default: demo_out)" in demo


# ---------------------------------------------------------------------------------------------
# End to end on statistics recorded from a tiny model, and the demo on the built-in one


def test_record_identify_analyze_plot_tiny_model(tiny_llama_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang, sents in SENTENCES.items():
        (corpus / f"{lang}.txt").write_text("\n".join(sents) + "\n", encoding="utf-8")
    stats, n, a, f = (str(tmp_path / x) for x in ("stats", "neurons.json", "analysis", "figures"))
    assert main(["record", "--model", tiny_llama_dir, "--corpus", str(corpus), "--sentence-means",
                 "--batch-size", "3", "--out", stats]) == 0
    assert main(["identify", "--stats", stats, "--method", "lape", "--top-rate", "0.1", "--out", n]) == 0
    recorded = NeuronStats.load(stats)
    neurons = LanguageNeurons.load(n)
    assert neurons == identify.lape(recorded, top_rate=0.1)
    assert neurons.model == recorded.meta["model"] and neurons.n_layers == 3 and neurons.d_mlp == 48
    assert main(["analyze", "--neurons", n, "--stats", stats, "--permutations", "100", "--out", a]) == 0
    assert main(["plot", "--neurons", n, "--stats", stats, "--out", f]) == 0
    summary = json.loads(Path(a, "summary.json").read_text())
    assert summary["statistics"]["languages"] == sorted(SENTENCES)  # a folder corpus sorts its files
    assert len(list(Path(f).glob("*.pdf"))) == 5
    # AP works on the same recording (sentence means were kept)
    assert main(["identify", "--stats", stats, "--method", "ap", "--n", "6", "--out", n, "--overwrite"]) == 0
    assert LanguageNeurons.load(n).counts() == dict.fromkeys(SENTENCES, 6)


@pytest.mark.slow
def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    langs = ["en", "de", "fr", "ru", "uk", "ja"]
    assert main(["demo", "--out", str(out), "--languages", ",".join(langs), "--max-sentences", "12",
                 "--eval-sentences", "6", "--n-samples", "2", "--factors", "4,16", "--betas", "0,2",
                 "--bench-targets", "de,ru", "--bench-tune", "1", "--bench-eval", "2", "--calibration-pairs", "12"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    for f in ("stats/stats.json", "neurons.json", "analysis/summary.json", "analysis/counts.csv",
              "figures/layer_placement.png", "figures/entropy_distribution.pdf", "summary.json",
              "ppl/ppl.csv", "ppl/summary.json", "ppl/ppl_change.png", "steer/steer.csv", "steer/summary.json",
              "steer/steer_rate_vs_factor.png", "steer_diffmean/steer.csv", "steer_diffmean/summary.json",
              "steer_diffmean/steer_rate_vs_factor.png", "report.md"):
        assert (out / f).is_file(), f
    neurons = LanguageNeurons.load(out / "neurons.json")
    assert neurons.method == "lape" and neurons.params["top_rate"] == 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lape"]["top_rate"] == 0.05 and set(summary["lape"]["counts"]) == set(neurons.languages)
    assert str(out / "figures") in err and str(out / "neurons.json") in err and str(out / "report.md") in err
    # the perplexity matrix: every ablated x evaluated language under three conditions, on held-out text
    ppl = pd.read_csv(out / "ppl" / "ppl.csv")
    assert set(ppl["condition"]) == {"baseline", "intervention", "control"}
    assert len(ppl) == 3 * len(langs) ** 2 and set(ppl["ablated"]) == set(langs)
    assert json.loads((out / "ppl" / "summary.json").read_text())["run"]["split"] == "eval"
    assert summary["ppl"]["diag_delta_nll"] == pytest.approx(
        evaluate.perplexity_summary(ppl)["diag_delta_nll"])
    # steering: every language with neurons, both factors, 2 BOS-only generations per condition
    steer = pd.read_csv(out / "steer" / "steer.csv", keep_default_na=False)
    found = [k for k in langs if neurons.counts()[k] > 0]
    assert set(steer["target"]) == set(found) and set(steer["factor"]) == {4.0, 16.0}
    assert (steer["prompt"] == "").all() and len(steer) == len(found) * 2 * 3 * 2
    # the diffmean baseline: beta 0 changes nothing, on the same BOS-only prompts
    dm = pd.read_csv(out / "steer_diffmean" / "steer.csv", keep_default_na=False)
    assert set(dm["mode"]) == {"diffmean"} and set(dm["factor"]) == {0.0, 2.0} and set(dm["layer"]) == {1}
    zero = dm[dm.factor == 0.0]
    by = {c: list(g.generation) for c, g in zero.groupby("condition")}
    assert by["intervention"] == by["baseline"] == by["control"]
    assert summary["steer_diffmean"]["layer"] == 1
    # the steering benchmark: every method the demo's statistics can build (AP and PLND from its
    # sentence means and importance, SAE rows from the shipped SAEs), in the report
    board = pd.read_csv(out / "steer_bench" / "leaderboard.csv")
    from tl_langneurons.steerbench import METHODS

    assert set(board.method) == set(METHODS) and set(board.target) == {"de", "ru", "all"}
    assert (board[board.target == "all"]["n"] == 4).all()
    assert summary["steer_bench"]["targets"] == ["de", "ru"] and summary["steer_bench"]["leaderboard"]
    report = (out / "report.md").read_text()
    assert "## Every steering method on one footing" in report and "steer_bench_scatter.png" in report
    assert "steering benchmark (de, ru; 2 prompts each): best" in captured.out + err
    # fluency: every generation scored; thresholds from the held-out text of every language; the
    # sweep's best cell chosen by the fluent target-language rate
    for frame in (steer, dm):
        assert {"n_new_tokens", "nll", "rep", "fluent"} <= set(frame.columns)
    assert set(summary["fluency"]["max_nll"]) == set(langs) and summary["fluency"]["max_rep"] == 0.2
    assert "fluent" in summary["steer"]["best"] and "target_fluent_rate" in summary["steer"]["mean"]
    assert summary["plan"]["max_sentences"] == 12 and summary["model"] == "builtin"
    report = (out / "report.md").read_text()
    assert "fluent target" in report
    for part in ("## Switching neurons off: perplexity", "## Switching neurons on: steering",
                 "## The baseline: residual-stream difference-of-means steering",
                 "ppl/ppl_change.png", "steer/steer_rate_vs_factor.png", "figures/layer_placement.png"):
        assert part in report, part


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECORD_MISTAKES)
def test_record_mistake_subprocess_exits_2(name, record_processes):
    p = record_processes[name]
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, (name, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tl-langneurons: error: "), err
    assert "Traceback" not in err
