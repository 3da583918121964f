"""The measurement commands (ppl, steer, lss, bench steer) end to end on the built-in model, tiny sizes:
exact CSV columns and row counts, summary keys, figures, baseline NLL equal to a separately
batched computation, no hook left on the model, and every user mistake one line with exit 2
before the model is loaded.

The commands run in-process through ``cli.main``; ``load_model`` is replaced by one that hands out
the session's built-in model (checked at the site asked for), so that the model is loaded once for
the module and the tests can see whether a hook was left on it.
"""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import n_hooks

from tl_langneurons import evaluate as ev
from tl_langneurons import models, progress
from tl_langneurons.cli import main
from tl_langneurons.corpus import load_corpus
from tl_langneurons.identify import lape
from tl_langneurons.outputs.measurements import PPL_COLUMNS, STEER_FIRST
from tl_langneurons.record import record

LANGS = ["en", "de", "ru"]
STEER_COLUMNS = STEER_FIRST + ["mode", "factor", "statistic", "positions", "prompt_id", "prompt_language", "sample",
                               "n_new_tokens", "nll", "rep", "fluent"]  # the fluency of every generation
RATES = {f"{c}_{p}" for c in ("target", "baseline", "control")
         for p in ("rate", "low", "high", "fluent_rate", "fluent_low", "fluent_high", "nll", "rep")} | {"n"}


@pytest.fixture(scope="module")
def inputs(builtin_model, tmp_path_factory):
    """LAPE neurons and their statistics for three languages of the built-in model (a few seconds)."""
    d = tmp_path_factory.mktemp("measure_inputs")
    corpus = load_corpus("builtin", languages=LANGS, split="stats", max_sentences=12)
    stats = record(builtin_model, corpus, site="act", batch_size=16, progress=False)
    stats.save(d / "stats")
    lape(stats, top_rate=0.05).save(d / "neurons.json")
    return {"neurons": str(d / "neurons.json"), "stats": str(d / "stats"), "dir": d}


@pytest.fixture
def loads(builtin_model, monkeypatch):
    """``load_model`` handing out the session's built-in model; returns the sites asked for."""
    calls = []

    def load(model="builtin", device="cpu", dtype="float32", site="act"):
        assert model == "builtin" and device == "cpu" and dtype == "float32"
        models.check_site(builtin_model, site)
        calls.append(site)
        return builtin_model

    monkeypatch.setattr(models, "load_model", load)
    assert n_hooks(builtin_model) == 0
    return calls


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())  # strict JSON: no NaN


def _figure(out: Path, name: str) -> None:
    for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        f = out / f"{name}.{ext}"
        assert f.is_file() and f.read_bytes()[:4] == magic, f


# ---------------------------------------------------------------------------------------------


def test_ppl(inputs, loads, builtin_model, tmp_path, capsys):
    out = tmp_path / "ppl"
    assert main(["ppl", "--neurons", inputs["neurons"], "--languages", ",".join(LANGS), "--max-sentences", "3",
                 "--batch-size", "4", "--out", str(out)]) == 0
    assert loads == ["act"] and n_hooks(builtin_model) == 0
    printed = capsys.readouterr()

    df = pd.read_csv(out / "ppl.csv", keep_default_na=False)
    assert list(df.columns) == PPL_COLUMNS and len(df) == 3 * 3 * 3
    assert not df.duplicated(["ablated", "evaluated", "condition"]).any()
    assert set(df.condition) == {"baseline", "intervention", "control"}
    assert set(df.ablated) == set(df.evaluated) == set(LANGS)

    # the baseline on the same held-out sentences, batched differently (one sentence per batch)
    corpus = load_corpus("builtin", languages=LANGS, split="eval", max_sentences=3)
    naive = ev.nll_per_language(builtin_model, corpus, batch_size=1, progress=False).set_index("language")
    for r in df[df.condition == "baseline"].itertuples():
        assert r.n_tokens == naive.loc[r.evaluated, "n_tokens"]
        assert r.nll == pytest.approx(naive.loc[r.evaluated, "nll"], abs=1e-5)
    assert (df.groupby("evaluated").n_tokens.nunique() == 1).all()  # same tokens in every condition

    summary = _summary(out)
    assert {"diag_delta_nll", "offdiag_delta_nll", "control_diag_delta_nll", "control_offdiag_delta_nll",
            "diag_over_offdiag", "diag_over_control", "frac_most_hurt", "n_ablated", "n_evaluated",
            "per_language", "ablated", "evaluated", "conditions", "run", "files"} <= set(summary)
    assert summary["run"]["split"] == "eval" and summary["conditions"] == ["baseline", "intervention", "control"]
    # a short summary: three headline lines (every number is in summary.json), where, and the time taken
    lines = printed.out.splitlines()
    assert len(lines) == 3 and f"{summary['diag_delta_nll']:+.4f} nats/token" in lines[0]
    assert f"{summary['control_diag_delta_nll']:+.4f}" in lines[1] and f"{summary['frac_most_hurt']:.0%}" in lines[2]
    assert re.fullmatch(rf"wrote \d+ files to {re.escape(str(out))} \(every number: .*summary.json\); took \S+",
                        printed.err.strip().splitlines()[-1])
    nll = df.set_index(["ablated", "evaluated", "condition"]).nll
    for lang, per in summary["per_language"].items():
        assert set(per) == {"n_neurons", "baseline_nll", "delta_nll", "offdiag_delta_nll", "control_delta_nll",
                            "diag_over_offdiag", "diag_over_control", "most_hurt"}
        assert per["delta_nll"] == pytest.approx(nll[lang, lang, "intervention"] - nll[lang, lang, "baseline"])
        assert per["control_delta_nll"] == pytest.approx(nll[lang, lang, "control"] - nll[lang, lang, "baseline"])
    assert summary["diag_delta_nll"] == pytest.approx(
        sum(p["delta_nll"] for p in summary["per_language"].values()) / 3)
    _figure(out, "ppl_change")
    assert sorted(summary["files"]) == sorted(p.name for p in out.iterdir())


def test_steer_single_setting_with_a_prompts_file(inputs, loads, builtin_model, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The weather today\n\n", encoding="utf-8")  # second line empty: BOS only
    out = tmp_path / "steer"
    assert main(["steer", "--neurons", inputs["neurons"], "--stats", inputs["stats"], "--target", "de",
                 "--prompts", str(prompts), "--greedy", "--max-new-tokens", "6", "--out", str(out)]) == 0
    assert loads == ["act"] and n_hooks(builtin_model) == 0
    assert "de:" in capsys.readouterr().out

    df = pd.read_csv(out / "steer.csv", keep_default_na=False)
    assert list(df.columns) == STEER_COLUMNS
    assert len(df) == 3 * 2  # conditions × prompts (greedy: one sample each)
    assert list(df[df.condition == "intervention"].prompt) == ["The weather today", ""]
    assert set(df.target) == {"de"} and set(df.factor) == {ev.DEFAULT_FACTOR} and set(df["mode"]) == {ev.DEFAULT_MODE}
    assert not (out / "steer_rate_vs_factor.png").exists()

    summary = _summary(out)
    assert summary["sweep"] is False and len(summary["cells"]) == 1
    assert summary["settings"] == {"mode": ev.DEFAULT_MODE, "factor": ev.DEFAULT_FACTOR,
                                   "statistic": ev.DEFAULT_STATISTIC, "positions": "all"}
    assert set(summary["targets"]) == {"de"} and set(summary["targets"]["de"]) == RATES
    assert summary["targets"]["de"]["n"] == 2
    rate = (df[df.condition == "intervention"].detected == "de").mean()
    assert summary["targets"]["de"]["target_rate"] == pytest.approx(rate)
    assert summary["mean"]["target_rate"] == pytest.approx(rate) and summary["mean"]["n_targets"] == 1
    assert summary["run"]["greedy"] is True and summary["n_generations"] == 6


def test_steer_bos_only(inputs, loads, builtin_model, tmp_path, capsys):
    out = tmp_path / "bos"
    assert main(["steer", "--neurons", inputs["neurons"], "--stats", inputs["stats"], "--target", "de", "--bos-only",
                 "--n-samples", "3", "--max-new-tokens", "4", "--control", "none", "--out", str(out)]) == 0
    df = pd.read_csv(out / "steer.csv", keep_default_na=False)
    assert len(df) == 2 * 3 and (df.prompt == "").all() and set(df["sample"]) == {0, 1, 2}
    assert _summary(out)["run"]["prompts"] == "BOS only"


def test_diffmean_command(builtin_model, loads, tmp_path, capsys):
    out = tmp_path / "dm"
    assert main(["diffmean", "--languages", "en,de,ru", "--max-sentences", "5", "--target", "de", "--layer", "1",
                 "--betas", "0,2", "--bos-only", "--n-samples", "2", "--max-new-tokens", "4", "--out", str(out)]) == 0
    assert n_hooks(builtin_model) == 0
    assert "diffmean beta 2 after block 1" in capsys.readouterr().out
    df = pd.read_csv(out / "steer.csv", keep_default_na=False)
    assert len(df) == 2 * 3 * 2 and set(df["mode"]) == {"diffmean"} and set(df.layer) == {1}
    zero = {c: list(g.generation) for c, g in df[df.factor == 0.0].groupby("condition")}
    assert zero["intervention"] == zero["baseline"] == zero["control"]  # beta 0 changes nothing
    summary = _summary(out)
    assert summary["run"]["method"] == "diffmean" and summary["run"]["split"] == "stats"
    assert summary["run"]["languages"] == ["en", "de", "ru"] and summary["sweep"] is True
    _figure(out, "steer_rate_vs_factor")
    # the layer is checked against the loaded model, before any reading or generating
    assert main(["diffmean", "--languages", "en,de", "--target", "de", "--layer", "6", "--out", str(tmp_path / "x")]) == 2
    assert "--layer must be in [0, 6), got 6" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_steer_sweep_over_all_targets(inputs, loads, builtin_model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # progress on, as a user sees it in a log file
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    out = tmp_path / "sweep"
    assert main(["steer", "--neurons", inputs["neurons"], "--stats", inputs["stats"], "--target", "all",
                 "--factors", "4,16", "--n-prompts", "2", "--n-samples", "1", "--max-new-tokens", "5",
                 "--batch-size", "8", "--out", str(out)]) == 0
    assert n_hooks(builtin_model) == 0
    df = pd.read_csv(out / "steer.csv", keep_default_na=False)
    assert list(df.columns) == STEER_COLUMNS
    assert len(df) == 3 * 2 * 3 * 2  # targets × factors × conditions × prompts
    summary = _summary(out)
    assert summary["sweep"] is True and summary["best"]
    assert [(c["mode"], c["factor"]) for c in summary["cells"]] == [(ev.DEFAULT_MODE, 4.0), (ev.DEFAULT_MODE, 16.0)]
    for cell in summary["cells"]:
        assert set(cell["targets"]) == set(LANGS)
        assert all(set(t) == RATES for t in cell["targets"].values())
        assert cell["mean"]["target_rate"] == pytest.approx(
            sum(t["target_rate"] for t in cell["targets"].values()) / 3)
        assert cell["mean"]["pooled_target_low"] <= cell["mean"]["target_rate"] <= cell["mean"]["pooled_target_high"]
    # the best cell by the fluent target-language rate (ties: the first)
    cells = summary["cells"]
    best = cells[max(range(len(cells)), key=lambda i: (cells[i]["mean"]["target_fluent_rate"], -i))]
    assert "fluent" in summary["best"] and summary["run"]["fluency"]["max_rep"] == 0.2
    assert summary["settings"]["factor"] == best["factor"] and summary["targets"] == best["targets"]
    _figure(out, "steer_rate_vs_factor")
    # one progress bar over the whole sweep (3 targets x 2 prompts x (baseline + 2 factors x 2 conditions)),
    # as plain lines in a log: no nested bars, no carriage returns or cursor codes
    err = capsys.readouterr().err
    bars = [line for line in err.splitlines() if re.match(r"^[^:]+: \d+/\d+ ", line)]
    assert bars and all(line.startswith("steer: ") for line in bars), bars
    assert bars[-1].startswith("steer: 30/30 generations (100%)") and "\r" not in err and "\x1b[" not in err


def test_lss_with_scale_needs_no_stats(inputs, loads, builtin_model, tmp_path, capsys):
    facts = {"format": "tl_langneurons.facts/1", "languages": ["en", "de"],
             "items": ev.load_facts(languages=["en", "de"])[:4]}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "lss"
    assert main(["lss", "--neurons", inputs["neurons"], "--source", "en", "--target", "de", "--facts", str(path),
                 "--mode", "scale", "--factor", "4", "--out", str(out)]) == 0
    assert n_hooks(builtin_model) == 0
    assert "LSS en->de (scale x4, intervention)" in capsys.readouterr().out
    df = pd.read_csv(out / "lss.csv")
    assert list(df.columns) == ["item", "relation", "source", "target", "condition", "mode", "factor",
                                "object_source", "object_target", "logp_source", "logp_target", "delta",
                                "delta_baseline", "shifted"]
    n_items = df.item.nunique()
    assert 1 <= n_items <= 4 and len(df) == 3 * n_items
    summary = _summary(out)
    assert set(summary) == {"pairs", "n_items", "conditions", "run", "files"}
    (pair,) = summary["pairs"]
    assert (pair["source"], pair["target"], pair["mode"], pair["factor"]) == ("en", "de", "scale", 4.0)
    for cond in ("intervention", "control"):
        assert set(pair[cond]) == {"lss", "low", "high", "n_items", "mean_delta_shift"}
        sub = df[df.condition == cond]
        assert pair[cond]["lss"] == pytest.approx(sub.shifted.mean()) and pair[cond]["n_items"] == n_items


def test_bench_steer_prints_json(loads, builtin_model, monkeypatch, capsys):
    from tl_langneurons import bench

    real = bench.bench_steer
    monkeypatch.setattr(bench, "bench_steer", lambda **kw: real(**kw, languages=["en", "de"], n_prompts=2,
                                                                n_samples=1, max_new_tokens=3))
    assert main(["bench", "steer", "--json", "--max-sentences", "4", "--repeats", "1"]) == 0
    assert n_hooks(builtin_model) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert {"with_s", "without_s", "ratio", "intervention", "neurons", "max_new_tokens", "repeats"} <= set(result)
    assert result["intervention"] == {"mode": ev.DEFAULT_MODE, "factor": ev.DEFAULT_FACTOR,
                                      "statistic": ev.DEFAULT_STATISTIC, "positions": "all"}
    assert result["ratio"] == pytest.approx(result["with_s"] / result["hf_s"], rel=1e-2)
    assert result["intervention_ratio"] == pytest.approx(result["with_s"] / result["without_s"], rel=1e-2)
    assert result["target"] == "de" and result["repeats"] == 1


# ---------------------------------------------------------------------------------------------
# User mistakes: one line, status 2, before the model is loaded, nothing written


def _mistakes():
    ppl = ["ppl", "--neurons", "{neurons}", "--out", "{out}"]
    steer = ["steer", "--neurons", "{neurons}", "--stats", "{stats}", "--target", "de", "--out", "{out}"]
    lss = ["lss", "--neurons", "{neurons}", "--stats", "{stats}", "--source", "en", "--target", "de",
           "--out", "{out}"]
    return {
        "ppl unknown language": (ppl + ["--languages", "en,xx"], "'xx'"),
        "steer bos-only and prompts": (steer + ["--bos-only", "--prompts", "{tmp}/empty.txt"], "not both"),
        "diffmean unknown target": (["diffmean", "--languages", "en,de", "--target", "xx", "--layer", "1",
                                     "--out", "{out}"], "'xx'"),
        "diffmean bad betas": (["diffmean", "--target", "de", "--layer", "1", "--betas", "2,big", "--out", "{out}"],
                               "'big'"),
        "diffmean zero samples": (["diffmean", "--target", "de", "--layer", "1", "--n-samples", "0", "--out", "{out}"],
                                  "--n-samples"),
        "ppl unknown split": (ppl + ["--split", "dev"], "'dev'"),
        "ppl unknown control": (ppl + ["--control", "shuffled"], "'shuffled'"),
        "ppl zero sentences": (ppl + ["--max-sentences", "0"], "--max-sentences"),
        "ppl neurons missing": (["ppl", "--neurons", "{tmp}/nowhere.json", "--out", "{out}"], "nowhere.json"),
        "ppl unknown model": (ppl + ["--model", "./no_model"], "'./no_model'"),
        "ppl into a file": (["ppl", "--neurons", "{neurons}", "--out", "{tmp}/a_file"], "existing file"),
        "steer unknown target": (steer[:-4] + ["--target", "de,xx", "--out", "{out}"], "'xx'"),
        "steer unknown mode": (steer + ["--mode", "boost"], "'boost'"),
        "steer set without stats": (["steer", "--neurons", "{neurons}", "--target", "de", "--mode", "set",
                                     "--out", "{out}"], "--stats"),
        "steer bad factor list": (steer + ["--factors", "4,lots"], "'lots'"),
        "steer factor and factors": (steer + ["--factor", "2", "--factors", "4,16"], "not both"),
        "steer infinite factor": (steer + ["--factor", "inf"], "--factor"),
        "steer unknown positions": (steer + ["--positions", "middle"], "'middle'"),
        "steer prompts missing": (steer + ["--prompts", "{tmp}/no_prompts.txt"], "no_prompts.txt"),
        "steer prompts empty": (steer + ["--prompts", "{tmp}/empty.txt"], "is empty"),
        "steer unknown statistic": (steer + ["--statistic", "average"], "'average'"),
        "steer zero temperature": (steer + ["--temperature", "0"], "--temperature"),
        "steer zero samples": (steer + ["--n-samples", "0"], "--n-samples"),
        "steer target without statistics": (["steer", "--neurons", "{tmp}/ja.json", "--stats", "{stats}",
                                             "--target", "ja", "--out", "{out}"], "'ja'"),
        "lss same languages": (lss[:-6] + ["--source", "de", "--target", "de", "--out", "{out}"], "'de'"),
        "lss unknown target": (lss[:-4] + ["--target", "xx", "--out", "{out}"], "'xx'"),
        "lss facts missing": (lss + ["--facts", "{tmp}/no_facts.json"], "no_facts.json"),
        "bench steer zero repeats": (["bench", "steer", "--repeats", "0"], "--repeats"),
        # artifacts and languages checked before any model is loaded
        "ppl languages without neurons": (ppl + ["--languages", "ja"], "--languages ja: none has neurons"),
        "ppl neurons of another built-in model": (["ppl", "--neurons", "{tmp}/gemma.json", "--out", "{out}"],
                                                  "made on 'gemma-3-270m', not on --model 'builtin'"),
        "ppl neurons of another shape": (["ppl", "--neurons", "{tmp}/deeper.json", "--out", "{out}"],
                                         "(18 layers), not on --model 'builtin' (6 layers)"),
        "steer neurons of another built-in model": (["steer", "--neurons", "{tmp}/gemma.json", "--target", "de",
                                                     "--mode", "scale", "--out", "{out}"], "made on 'gemma-3-270m'"),
        "steer target without neurons": (["steer", "--neurons", "{tmp}/no_de.json", "--target", "de", "--mode",
                                          "scale", "--out", "{out}"], "--target de: no neurons"),
        "steer statistic not recorded": (steer + ["--statistic", "median"], "record with --sentence-means"),
        "steer quantile not recorded": (steer + ["--statistic", "q0.9"], "record with --histograms"),
        "diffmean layer past the last": (["diffmean", "--target", "de", "--layer", "6", "--out", "{out}"],
                                         "--layer must be in [0, 6), got 6"),
        "steer mistyped option": (steer + ["--max-new-tokns", "3"], "(did you mean '--max-new-tokens'?)"),
    }


@pytest.mark.parametrize("case", list(_mistakes()))
def test_user_mistake_is_one_line_exit_2(case, inputs, monkeypatch, tmp_path, capsys):
    from tl_langneurons.neurons import LanguageNeurons

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_model", no_load)
    (tmp_path / "a_file").write_text("not a directory", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    n = LanguageNeurons.load(inputs["neurons"])  # a language the statistics do not have
    LanguageNeurons({"ja": n.neurons["de"]}, n.method, n.params, n.site, n.model, n.n_layers,
                    n.d_mlp).save(tmp_path / "ja.json")
    LanguageNeurons(n.neurons, n.method, n.params, n.site, {**n.model, "name": "gemma-3-270m"}, n.n_layers,
                    n.d_mlp).save(tmp_path / "gemma.json")
    LanguageNeurons(n.neurons, n.method, n.params, n.site, {**n.model, "name": "other", "n_layers": 18}, n.n_layers,
                    n.d_mlp).save(tmp_path / "deeper.json")
    LanguageNeurons({**n.neurons, "de": []}, n.method, n.params, n.site, n.model, n.n_layers,
                    n.d_mlp).save(tmp_path / "no_de.json")
    argv, expected = _mistakes()[case]
    fill = {"neurons": inputs["neurons"], "stats": inputs["stats"], "tmp": str(tmp_path), "out": str(tmp_path / "out")}
    assert main([a.format(**fill) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("tl-langneurons: error: ") and expected in lines[0], lines[0]
    assert captured.out == "" and not (tmp_path / "out").exists()


def test_ppl_says_which_languages_have_no_neurons_before_loading(inputs, monkeypatch, tmp_path, capsys):
    class Loaded(Exception):
        pass

    def load(*a, **k):
        raise Loaded

    monkeypatch.setattr(models, "load_model", load)
    with pytest.raises(Loaded):  # the note comes before the model is loaded
        main(["ppl", "--neurons", inputs["neurons"], "--languages", "en,ja", "--out", str(tmp_path / "out")])
    assert capsys.readouterr().err.strip().splitlines() == [
        f"note: no neurons for ja in {inputs['neurons']}: evaluated only (nothing to switch off)"]


# ---------------------------------------------------------------------------------------------
# The writers on synthetic frames: figures without a control or across modes, refused frames


def _ppl_frame(control: bool = True) -> pd.DataFrame:
    rows = []
    for a in LANGS:
        for e in LANGS:
            conds = {"baseline": 3.0, "intervention": 3.0 + (0.2 if a == e else 0.01)}
            if control:
                conds["control"] = 3.0 + 0.005
            for c, nll in conds.items():
                rows.append({"ablated": a, "evaluated": e, "condition": c, "nll": nll, "ppl": 2.718281828 ** nll,
                             "n_tokens": 100, "n_neurons": 7})
    return pd.DataFrame(rows)


def test_write_ppl_without_control_and_refused_frames(tmp_path):
    from tl_langneurons import LangNeuronsError
    from tl_langneurons.outputs.measurements import write_ppl

    summary = write_ppl(_ppl_frame(control=False), tmp_path / "a", run={"why": "test"})
    assert summary["conditions"] == ["baseline", "intervention"] and summary["run"] == {"why": "test"}
    assert summary["control_diag_delta_nll"] is None and summary["diag_over_control"] is None  # NaN → null
    assert summary["per_language"]["de"]["delta_nll"] == pytest.approx(0.2)
    assert summary["per_language"]["de"]["diag_over_offdiag"] == pytest.approx(20.0)
    assert summary["per_language"]["de"]["most_hurt"] is True and summary["frac_most_hurt"] == 1.0
    assert len(pd.read_csv(tmp_path / "a" / "ppl.csv")) == 3 * 3 * 2
    _figure(tmp_path / "a", "ppl_change")
    full = _ppl_frame()
    for bad, match in ((full.iloc[1:], "incomplete"), (pd.concat([full, full.iloc[:1]]), "more than one row"),
                       (full.drop(columns="n_tokens"), "'n_tokens'"),
                       (full.assign(condition=full.condition.replace("control", "random")), "'random'")):
        with pytest.raises(LangNeuronsError, match=match):
            write_ppl(bad, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_write_steer_sweep_across_modes_and_a_zero_factor(tmp_path):
    from tl_langneurons.outputs.measurements import write_steer

    rows = []
    for t in ("de", "ru"):
        for mode, stat in (("scale", None), ("set", "mean")):
            for f in (0.0, 2.0, 8.0):
                for c in ("baseline", "intervention", "control"):
                    for i in range(4):
                        hit = c == "intervention" and i < f / 2
                        rows.append({"target": t, "condition": c, "mode": mode, "factor": f, "statistic": stat,
                                     "positions": "all", "prompt_id": i, "prompt": f"p{i}", "sample": 0,
                                     "generation": "…", "detected": t if hit else "en"})
    df = pd.DataFrame(rows)
    summary = write_steer(df, tmp_path)
    assert summary["sweep"] and len(summary["cells"]) == 6
    assert [c["statistic"] for c in summary["cells"]][:3] == [None] * 3  # scale has none: null, not NaN
    assert summary["settings"] == {"mode": "scale", "factor": 8.0, "statistic": None, "positions": "all"}
    assert summary["mean"]["target_rate"] == 1.0 and summary["mean"]["baseline_rate"] == 0.0
    assert list(pd.read_csv(tmp_path / "steer.csv").columns[:5]) == STEER_FIRST
    _figure(tmp_path, "steer_rate_vs_factor")  # symlog axis: the factors include 0

    # a frame of hand-built interventions has no mode or factor: one cell, settings = its positions
    plain = df[(df["mode"] == "set") & (df.factor == 8.0)].drop(columns=["mode", "factor", "statistic"])
    summary = write_steer(plain, tmp_path / "plain")
    assert summary["sweep"] is False and summary["settings"] == {"positions": "all"}
    assert summary["mean"]["target_rate"] == 1.0 and set(summary["targets"]) == {"de", "ru"}


def test_progress_is_one_bar_per_stage_and_survives_an_error(capsys, monkeypatch):
    """Loops inside a stage advance its one bar; an error inside a stage or a loop leaves no stage
    running that would silence the bars after it."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress, "LOG_EVERY", 1e9)  # the closing line only
    with progress.stage("outer", 6, "item"):
        for _ in progress.track(range(3), "inner", unit="item", size=lambda i: 2):
            for _ in progress.track(range(5), "other units", unit="token"):
                pass
    with pytest.raises(ZeroDivisionError):
        with progress.stage("failing", 2, "item"):
            1 / 0
    with pytest.raises(ZeroDivisionError):
        for i in progress.track(range(3), "failing loop", unit="item"):
            1 / i
    for _ in progress.track(range(2), "after", unit="item"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "outer: 6/6 items (100%), 0s" and lines[1].startswith("failing: 0/2 items")
    assert lines[-1] == "after: 2/2 items (100%), 0s" and not any(line.startswith("inner") for line in lines)
