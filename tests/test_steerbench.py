"""The steering benchmark: the relevance judge (calibrated, identical vs scrambled), the
directions, strength 0 = no intervention, controls on the same prompts and seed, resume, the
command line. On the built-in model at tiny sizes."""

import random

import numpy as np
import pandas as pd
import pytest
import torch

from tl_langneurons import LangNeuronsError
from tl_langneurons.corpus import load_corpus
from tl_langneurons.evaluate.relevance import E5Judge, calibrate, cosines
from tl_langneurons.intervene import Intervention
from tl_langneurons.record import record
from tl_langneurons.steerbench import METHODS, Arm, SteerMethod, bench_prompts, leaderboard, register_method, steer_bench
from tl_langneurons.steerbench.directions import fit_direction

from conftest import n_hooks

LANGS = ["en", "de", "ru"]


@pytest.fixture(scope="module")
def judge():
    return E5Judge()


@pytest.fixture(scope="module")
def calibration(judge):
    return calibrate(judge, ["de", "ru", "zh"], n_pairs=24)


@pytest.fixture(scope="module")
def bench_stats(builtin_model):
    texts = load_corpus("builtin", split="stats", languages=LANGS, max_sentences=40).texts
    return record(builtin_model, texts, sentence_means=True, plnd=True, progress=False), texts


def test_calibration_separates_translations(calibration):
    table = pd.DataFrame(calibration.table).set_index("language")
    assert (table["aligned_mean"] > table["random_mean"]).all()
    assert (table["auc"] >= 0.9).all(), table
    assert set(calibration.trusted) == {"de", "ru", "zh"}


def test_identical_scores_one_scrambled_far_lower(judge, calibration):
    par = load_corpus("builtin", split="parallel", languages=["de"])
    sents = [s for s in par["de"] if len(s.split()) >= 8][:12]
    rng = random.Random(0)
    scrambled = ["".join(rng.sample(s, len(s))) for s in sents]
    same = calibration.score(cosines(judge, sents, sents), "de")
    scr = calibration.score(cosines(judge, sents, scrambled), "de")
    assert np.allclose(same, 1.0)
    assert scr.mean() < 0.3 and same.mean() - scr.mean() > 0.7
    assert np.isnan(calibration.score([0.9], "th")).all()  # an uncalibrated language is not scored


def test_prompts_tune_and_eval_never_share_a_sentence():
    p = bench_prompts(["de", "ru"], ["en", "de", "ru", "zh"], n_tune=5, n_eval=12, seed=3)
    for _, g in p.groupby("target"):
        assert not set(g[g.split == "tune"].sentence) & set(g[g.split == "eval"].sentence)
        assert (g.source != g.target).all()
    assert p.equals(bench_prompts(["de", "ru"], ["en", "de", "ru", "zh"], n_tune=5, n_eval=12, seed=3))
    # questions: whole sentences whose English side is a question, split the same way
    q = bench_prompts(["de"], ["en", "de", "fr"], n_tune=4, n_eval=10, seed=3, kind="questions")
    assert len(q) == 14 and not set(q[q.split == "tune"].sentence) & set(q[q.split == "eval"].sentence)
    assert q[q.source == "en"].prompt.str.endswith("?").all() and q.reference.str.endswith("?").all()
    with pytest.raises(LangNeuronsError, match="67 questions"):
        bench_prompts(["de"], ["en", "de"], n_tune=8, n_eval=60, kind="questions")
    with pytest.raises(LangNeuronsError, match="'answers'"):
        bench_prompts(["de"], ["en", "de"], kind="answers")


def test_prompting_instructions_in_three_phrasings():
    """English, the target's own words, and the prompt's language naming the target (CLDR names);
    the source template applied to its own language gives the target phrasing wherever the
    nominative fits the sentence (all but pl/ru/uk), which checks the templates against each other."""
    from tl_langneurons.steerbench.prompts import INSTRUCTIONS, SOURCE_TEMPLATES, instruction

    assert instruction("de", "english") == "Continue in German:"
    assert instruction("de", "target") == "Weiter auf Deutsch:"
    assert instruction("ru", "source", "de") == "Weiter auf Russisch:"
    assert instruction("de", "source", "ru") == "Продолжи (язык: немецкий):"
    assert instruction("de", "source", "el") == "Συνέχισε στα γερμανικά:"
    assert instruction("zh", "source", "ja") == "中国語で続けてください："
    assert set(SOURCE_TEMPLATES) == set(INSTRUCTIONS)
    same = [lang for lang in INSTRUCTIONS if instruction(lang, "source", lang) == INSTRUCTIONS[lang][1]]
    assert sorted(set(INSTRUCTIONS) - set(same)) == ["pl", "ru", "uk"]
    arm = METHODS["prompt-source"].build(None, "fr", "ru", None, None)
    assert METHODS["prompt-source"].per_source and arm.instruction == "Continuez en russe :"
    with pytest.raises(LangNeuronsError, match="'xx'"):
        instruction("de", "source", "xx")
    with pytest.raises(LangNeuronsError, match="phrasing"):
        instruction("de", "native")


@pytest.mark.parametrize("kind", ["probe", "pca", "lda"])
def test_directions_find_a_planted_axis(kind):
    g = torch.Generator().manual_seed(0)
    axis = torch.zeros(16, dtype=torch.float64)
    axis[3] = 1.0
    noise = lambda n: torch.randn(n, 16, generator=g, dtype=torch.float64) * torch.linspace(0.2, 1.0, 16)  # noqa: E731
    res = {"t": noise(200) + 3 * axis, "a": noise(200), "b": noise(200) - 0.1 * axis}
    w = fit_direction(kind, res, "t")
    assert abs(float(w.norm()) - 1) < 1e-9
    assert float(w @ axis) > 0.9  # signed towards the target, along the planted axis


def _zero_add(ctx, source, target, s, layer):
    item = lambda sets: Intervention(sets, "add", factor=s, stats=ctx.stats, statistic="mean", language=target)  # noqa: E731
    return Arm([item(ctx.lape)], [item(ctx.lape_random)])


@pytest.fixture
def toy_method():
    register_method(SteerMethod("toy-add-zero", "neurons", _zero_add, (0.0,), controlled=True))
    try:
        yield "toy-add-zero"
    finally:
        METHODS.pop("toy-add-zero")


def test_strength_zero_and_controls(builtin_model, bench_stats, judge, calibration, toy_method, tmp_path):
    """A registered toy method at strength 0 generates exactly what no intervention does (and so
    does its control); diffmean at β = 0 likewise; every control runs on the same prompts."""
    stats, texts = bench_stats
    kw = dict(texts=texts, judge=judge, calibration=calibration, n_tune=2, n_eval=6, layers=[1], top_rate=0.05,
              fluency_sentences=12, progress=False)
    before = n_hooks(builtin_model)
    res = steer_bench(builtin_model, stats, ["de"], LANGS, ["none", toy_method, "diffmean"], work_dir=tmp_path, **kw)
    assert n_hooks(builtin_model) == before
    g = res.generations
    none = g[g.method == "none"].generation.tolist()
    assert g[(g.method == toy_method) & (g.condition == "intervention")].generation.tolist() == none
    assert g[(g.method == toy_method) & (g.condition == "control")].generation.tolist() == none
    for m in (toy_method, "diffmean"):
        iv, ct = g[(g.method == m) & (g.condition == "intervention")], g[(g.method == m) & (g.condition == "control")]
        assert iv.prompt.tolist() == ct.prompt.tolist() and len(iv) == 6
    # diffmean's tuning tried every β on the tuning prompts; the reported row uses the chosen one
    t = res.tuning[res.tuning.method == "diffmean"]
    assert sorted(t.strength) == [1.0, 2.0, 4.0] and t.chosen.sum() == 1
    kw["fluency"] = res.fluency  # the same criterion: no second pass over held-out text
    zero = steer_bench(builtin_model, stats, ["de"], LANGS, ["none"], **kw).generations
    assert zero.generation.tolist() == none
    board = leaderboard(g, n_boot=200)
    assert {"method", "target", "target_rate", "fluent_rate", "relevance", "score"} <= set(board.columns)
    row = board[(board.method == "none") & (board.target == "de")].iloc[0]
    assert row.relevance_unsteered == pytest.approx(1.0)  # "none" against itself
    # resume: a lost cell is regenerated to the same rows; other settings are refused, naming them
    cells = sorted(tmp_path.rglob("*.jsonl"))
    cells[-1].unlink()
    again = steer_bench(builtin_model, stats, ["de"], LANGS, ["none", toy_method, "diffmean"], work_dir=tmp_path, **kw)
    pd.testing.assert_frame_equal(again.generations, g)
    with pytest.raises(LangNeuronsError, match="n_eval"):
        steer_bench(builtin_model, stats, ["de"], LANGS, ["none", toy_method, "diffmean"], work_dir=tmp_path,
                    **{**kw, "n_eval": 5})


def test_plnd_and_sae_rows(builtin_model, bench_stats, judge, calibration, tmp_path):
    """The PLND and SAE rows steer with their own sets (SAE features decoded into the residual),
    beside their random controls on the same prompts; a default run leaves out what it has nothing
    to build from, and a named one is refused before any generation, saying what to give."""
    stats, texts = bench_stats
    kw = dict(texts=texts, judge=judge, calibration=calibration, n_tune=2, n_eval=6, top_rate=0.05,
              fluency_sentences=12, progress=False)
    before = n_hooks(builtin_model)
    res = steer_bench(builtin_model, stats, ["de"], LANGS, ["none", "plnd-add", "sae-add"], sae="builtin", **kw)
    assert n_hooks(builtin_model) == before
    g = res.generations
    none = g[g.method == "none"].generation.tolist()
    for m in ("plnd-add", "sae-add"):
        iv, ct = g[(g.method == m) & (g.condition == "intervention")], g[(g.method == m) & (g.condition == "control")]
        assert iv.prompt.tolist() == ct.prompt.tolist() and len(iv) == 6
        assert iv.generation.tolist() != none  # the set is not empty and the edit reaches the output
    assert res.run["sae"]["saes"][0]["sha256"]  # the SAEs' identity is part of the resume key
    # what the rows steer with: PLND's set, and SAE-LAPE features at the SAE site
    from tl_langneurons.identify import lape, plnd
    from tl_langneurons.steerbench.context import BenchContext

    ctx = BenchContext(builtin_model, stats, texts, top_rate=0.05, sae="builtin", progress=False)
    assert ctx.plnd.neurons == plnd(stats).neurons
    assert ctx.sae_features.site == "sae:builtin"
    assert ctx.sae_features.neurons == lape(record(builtin_model, texts, site="sae:builtin", progress=False),
                                            top_rate=0.05).neurons
    assert ctx.sae_random.counts() == ctx.sae_features.counts()
    # without SAEs or PLND importance: left out of a default run, refused when named
    plain = record(builtin_model, texts, sentence_means=True, progress=False)
    assert not BenchContext(builtin_model, plain, texts, top_rate=0.05).has("plnd")
    with pytest.raises(LangNeuronsError, match="'sae-add' needs the model's SAEs"):
        steer_bench(builtin_model, stats, ["de"], LANGS, ["none", "sae-add"], **kw)
    with pytest.raises(LangNeuronsError, match="'plnd-add' needs statistics recorded with PLND importance"):
        steer_bench(builtin_model, plain, ["de"], LANGS, ["plnd-add"], **kw)
    from tl_langneurons.steerbench.run import buildable

    left = [m.name for m in buildable(list(METHODS.values()), BenchContext(builtin_model, plain, texts), named=False)]
    assert "sae-add" not in left and "plnd-add" not in left and "neurons-add" in left
    # and every method left in builds its arms without touching the missing PLND and SAE sets
    bare = BenchContext(builtin_model, plain, texts, top_rate=0.05, progress=False)
    for name in left:
        METHODS[name].build(bare, "en", "de", 1.0, bare.layers[0])
    assert n_hooks(builtin_model) == before


def test_cli_steer_bench(tmp_path, capsys):
    from tl_langneurons.cli import main

    out = tmp_path / "bench"
    argv = ["steer-bench", "--languages", "en,de", "--target", "de", "--methods", "none,neurons-scale,prompt-target",
            "--n-tune", "2", "--n-eval", "4", "--max-sentences", "20", "--top-rate", "0.05",
            "--calibration-pairs", "12", "--fluency-sentences", "8", "--max-new-tokens", "12", "--out", str(out)]
    assert main(argv) == 0
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board.method) == {"none", "neurons-scale", "prompt-target"}
    assert (out / "figures" / "steer_bench_scatter.png").is_file()
    assert "leaderboard.csv has intervals" in capsys.readouterr().out
    assert main(argv) == 2  # a finished result is not overwritten without --overwrite
    assert "already holds a result" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*partial"))  # nothing left beside it
    assert main(argv[:-2] + ["--methods", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown steering method 'nope'" in capsys.readouterr().err
    assert main(argv[:-2] + ["--sae", str(tmp_path / "none"), "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
