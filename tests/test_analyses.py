"""The paper reproductions in analyses/ run end to end on the built-in model (small settings)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import analysis_script

from tl_langneurons import LangNeuronsError, LanguageNeurons

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"




def _outputs(out: Path, n_figures: int) -> None:
    for f in ("stats/stats.json", "neurons.json", "analysis/summary.json", "analysis/overlap.csv"):
        assert (out / f).is_file(), f
    assert len(list((out / "figures").glob("*.png"))) == len(list((out / "figures").glob("*.pdf"))) == n_figures


@pytest.mark.slow
def test_tang2024_lape(tmp_path, capsys):
    out = tmp_path / "tang"
    assert analysis_script("tang2024_lape").main(["--max-sentences", "24", "--permutations", "200", "--out", str(out)]) == 0
    _outputs(out, 5)
    result = json.loads((out / "tang2024.json").read_text())
    assert result["ours"]["model"] == "builtin" and result["ours"]["share_of_neurons"] == pytest.approx(0.05, abs=1e-3)
    assert json.loads(capsys.readouterr().out) == result


@pytest.mark.slow
def test_kojima2024_experts(tmp_path, capsys):
    out = tmp_path / "kojima"
    assert analysis_script("kojima2024_experts").main(["--max-sentences", "16", "--n", "40", "--permutations", "200",
                                               "--out", str(out)]) == 0
    _outputs(out, 4)
    result = json.loads((out / "kojima2024.json").read_text())
    assert result["ours"]["n_units_per_language"] == 40
    assert result["ours"]["sentences_used"]["de"] == {"positive": 16, "negative": 80}
    # Kojima's unit set: every linear output, BOS counted in sentence means
    assert result["ours"]["site"] == "linear" and result["ours"]["bos_in_sentence_means"] is True
    assert sum(result["ours"]["experts_per_part"]["de"].values()) == 40
    assert list(result["ours"]["experts_per_part"]["de"]) == ["q", "k", "v", "o", "gate", "up", "down"]
    # reusing the statistics gives the same sets
    first = (out / "neurons.json").read_text()
    assert analysis_script("kojima2024_experts").main(["--stats", str(out / "stats"), "--n", "40", "--permutations", "200",
                                               "--out", str(out)]) == 0
    assert (out / "neurons.json").read_text() == first


# -- interventions: tiny settings on the built-in model (a few seconds each) -------------------------

PPL_COLUMNS = ["ablated", "evaluated", "condition", "nll", "ppl", "n_tokens"]


def _check_ppl(ppl: pd.DataFrame, languages: list[str]) -> pd.DataFrame:
    """A complete deactivation matrix read on the same tokens in every condition; its NLL cells,
    one column per condition."""
    assert list(ppl.columns) == PPL_COLUMNS and len(ppl) == len(languages) ** 2 * 3
    assert set(ppl.condition) == {"baseline", "intervention", "control"} and set(ppl.evaluated) == set(languages)
    # baseline, intervention and control of an evaluated language read exactly the same tokens
    assert (ppl.groupby("evaluated").n_tokens.nunique() == 1).all() and (ppl.n_tokens > 0).all()
    assert np.allclose(ppl.ppl, np.exp(ppl.nll))
    cells = ppl.set_index(["ablated", "evaluated", "condition"]).nll.unstack()
    assert (cells.baseline.groupby("evaluated").nunique() == 1).all()  # one baseline per evaluated language
    assert (cells.intervention != cells.baseline).any() and (cells.control != cells.baseline).any()
    assert (cells.control != cells.intervention).any()
    return cells


def _differs_from_baseline(df: pd.DataFrame, keys: list[str], condition: str) -> bool:
    """Some generation under ``condition`` differs from the baseline's for the same prompt and sample."""
    on = keys + ["prompt_id", "sample"]
    both = df[df.condition == condition].merge(df[df.condition == "baseline"], on=on, suffixes=("", "_base"))
    assert len(both) == (df.condition == condition).sum()
    return bool((both.generation.fillna("") != both.generation_base.fillna("")).any())


def _rates_are_intervals(summary: pd.DataFrame, names=("target", "baseline", "control")) -> None:
    for name in names:
        assert ((summary[f"{name}_low"] <= summary[f"{name}_rate"])
                & (summary[f"{name}_rate"] <= summary[f"{name}_high"])).all()
        assert summary[f"{name}_rate"].between(0, 1).all()


def _figure(path: Path) -> None:
    assert path.with_suffix(".png").stat().st_size > 0 and path.with_suffix(".pdf").stat().st_size > 0


@pytest.mark.slow
def test_tang2024_ppl(tmp_path, capsys):
    out = tmp_path / "tang_ppl"
    script = analysis_script("tang2024_ppl")
    assert script.main(["--languages", "en,de,ru", "--max-sentences", "16", "--eval-sentences", "6",
                        "--out", str(out)]) == 0
    ppl = pd.read_csv(out / "ppl.csv")
    cells = _check_ppl(ppl, ["en", "de", "ru"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_ablated"] == summary["n_evaluated"] == 3 and 0 <= summary["frac_most_hurt"] <= 1
    diag = [cells.intervention[(k, k)] - cells.baseline[(k, k)] for k in ("en", "de", "ru")]
    assert summary["diag_delta_nll"] == pytest.approx(np.mean(diag))
    assert summary["run"]["languages"] == "en,de,ru"
    _figure(out / "figures" / "ppl_change")
    tang = json.loads((out / "tang2024_ppl.json").read_text())
    assert set(tang["bar_issue_4"]) == {"diag_delta_nll", "diag_over_offdiag", "diag_over_control", "frac_most_hurt"}
    assert tang["n_neurons"] == LanguageNeurons.load(out / "neurons.json").counts()
    assert tang["eval_tokens"] == {k: int(ppl[ppl.evaluated == k].n_tokens.iloc[0]) for k in ("en", "de", "ru")}
    printed = capsys.readouterr().out
    assert "diagonal" in printed and "ratio" in printed
    # reusing the statistics and the set, without the control, gives the same rows
    again = tmp_path / "tang_ppl_again"
    assert script.main(["--stats", str(out / "stats"), "--neurons", str(out / "neurons.json"), "--control", "none",
                        "--eval-sentences", "6", "--out", str(again)]) == 0
    ppl2 = pd.read_csv(again / "ppl.csv")
    pd.testing.assert_frame_equal(ppl2, ppl[ppl.condition != "control"].reset_index(drop=True))


@pytest.mark.slow
def test_gurgurov2025_arithmetic(tmp_path):
    out = tmp_path / "gurgurov"
    script = analysis_script("gurgurov2025_arithmetic")
    assert script.main(["--languages", "en,de,ru", "--max-sentences", "16", "--pairs", "en-de,de-ru",
                        "--factors", "1,16", "--deactivate", "none,0", "--n-prompts", "3", "--max-new-tokens", "8",
                        "--out", str(out)]) == 0
    gens = pd.read_csv(out / "steer.csv", keep_default_na=False)
    assert list(gens.columns[:5]) == ["source", "target", "deactivate", "factor", "condition"]
    assert set(gens.condition) == {"baseline", "intervention", "control"}
    assert len(gens) == 2 * 2 * 2 * 3 * 3  # pairs × δ × α × conditions × prompts (greedy: one sample each)
    assert (gens.prompt_language == gens.source).all()  # prompts in the source language
    base = gens[gens.condition == "baseline"]  # one baseline per pair, the same in every cell
    assert (base.groupby(["source", "prompt_id"]).generation.nunique() == 1).all()
    keys = ["source", "target", "deactivate", "factor"]
    assert _differs_from_baseline(gens, keys, "intervention") and _differs_from_baseline(gens, keys, "control")
    summary = pd.read_csv(out / "steer_summary.csv", keep_default_na=False)
    assert len(summary) == 8 and list(summary.columns[:4]) == keys
    _rates_are_intervals(summary)
    result = json.loads((out / "summary.json").read_text())
    assert result["n_pairs"] == 2 and len(result["mean_over_pairs"]) == 4
    assert result["best"]["factor"] in (1.0, 16.0) and result["best"]["deactivate"] in ("none", "0")
    _figure(out / "figures" / "steer_rate_vs_factor")
    with pytest.raises(LangNeuronsError, match="'xx' is not among the recorded languages"):
        script.parse_pairs("en-xx", ["en", "de"])
    with pytest.raises(LangNeuronsError, match="not source-target"):
        script.parse_pairs("en", ["en", "de"])


@pytest.mark.slow
def test_rahmanisa2025_amplification(tmp_path):
    out = tmp_path / "rahmanisa"
    assert analysis_script("rahmanisa2025_amplification").main([
        "--languages", "en,de", "--max-sentences", "16", "--factors", "1,8", "--n-prompts", "2", "--n-samples", "2",
        "--max-new-tokens", "8", "--max-facts", "10", "--out", str(out)]) == 0
    gens = pd.read_csv(out / "steer" / "steer.csv", keep_default_na=False)
    keys = ["target", "mode", "factor"]
    scale1 = gens[(gens["mode"] == "scale") & (gens.factor == 1.0)]
    assert not _differs_from_baseline(scale1, keys, "intervention")  # α = 1 changes nothing
    assert _differs_from_baseline(gens, keys, "intervention") and _differs_from_baseline(gens, keys, "control")
    assert set(gens[gens["mode"] == "set"].statistic) == {"max"}  # set reads the max of the sentence means
    cells = json.loads((out / "steer" / "summary.json").read_text())["cells"]
    assert len(cells) == 2 * 2 and all(set(c["targets"]) == {"en", "de"} for c in cells)
    _figure(out / "figures" / "steer_rate_vs_factor")
    facts = pd.read_csv(out / "lss" / "lss.csv")
    assert {"item", "source", "target", "condition", "delta", "delta_baseline", "shifted"} <= set(facts.columns)
    pairs = json.loads((out / "lss" / "summary.json").read_text())["pairs"]
    assert {(p["source"], p["target"]) for p in pairs} == {("en", "de"), ("de", "en")} and len(pairs) == 2 * 2 * 2
    for p in pairs:
        for cond in ("intervention", "control"):
            assert 0 <= p[cond]["lss"] <= 1 and p[cond]["n_items"] > 0
            if p["mode"] == "scale" and p["factor"] == 1.0:
                assert p[cond]["lss"] == 0  # nothing shifts under α = 1
    table = json.loads((out / "summary.json").read_text())["per_factor"]
    assert len(table) == 4 and set(table[0]) >= {"mode", "factor", "target_rate", "baseline_rate", "control_rate",
                                                 "lss", "lss_control"}
    scale1 = next(r for r in table if r["mode"] == "scale" and r["factor"] == 1.0)
    assert scale1["target_rate"] == scale1["baseline_rate"] and scale1["lss"] == 0


@pytest.mark.slow
def test_kojima2024_forcing(tmp_path):
    out = tmp_path / "kojima_forcing"
    assert analysis_script("kojima2024_forcing").main([
        "--languages", "en,de,ru", "--max-sentences", "16", "--n", "20,40", "--factors", "1,4", "--n-samples", "3",
        "--max-new-tokens", "8", "--eval-sentences", "4", "--out", str(out)]) == 0
    for n in (20, 40):
        sets = LanguageNeurons.load(out / f"n{n}" / "neurons.json")
        assert sets.method == "ap_experts" and set(sets.counts().values()) == {n}
        gens = pd.read_csv(out / f"n{n}" / "steer" / "steer.csv", keep_default_na=False)
        assert set(gens.prompt) == {""}  # unconditional, from BOS, as Kojima
        assert set(gens.statistic) == {"median"} and set(gens["mode"]) == {"set"}
        assert len(gens) == 3 * 2 * 3 * 3  # targets × factors × conditions × samples
        assert _differs_from_baseline(gens, ["target", "factor"], "intervention")
        assert _differs_from_baseline(gens, ["target", "factor"], "control")
        _check_ppl(pd.read_csv(out / f"n{n}" / "ppl" / "ppl.csv"), ["en", "de", "ru"])
        _figure(out / f"n{n}" / "ppl" / "ppl_change")
    result = json.loads((out / "summary.json").read_text())
    assert set(result["deactivation"]) == {"20", "40"} and len(result["steering"]) == 4
    assert {(r["n"], r["factor"]) for r in result["steering"]} == {(20, 1.0), (20, 4.0), (40, 1.0), (40, 4.0)}
