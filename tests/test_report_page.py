"""The one-page report: numbers computed from hand-made CSVs, sections present only when their files are."""

import json

import pandas as pd
import pytest

from tl_langneurons.errors import LangNeuronsError
from tl_langneurons.evaluate import perplexity_summary
from tl_langneurons.outputs.report import ppl_table, write_report


def _ppl_frame() -> pd.DataFrame:
    base = {"de": 3.0, "fr": 2.0}
    # ablating de: de +0.5, fr +0.1 ; control de +0.05, fr +0.0
    # ablating fr: de +0.2, fr +0.1 (the own language is NOT the most hurt)
    delta = {("de", "de"): 0.5, ("de", "fr"): 0.1, ("fr", "de"): 0.2, ("fr", "fr"): 0.1}
    ctrl = {("de", "de"): 0.05, ("de", "fr"): 0.0, ("fr", "de"): 0.0, ("fr", "fr"): 0.02}
    rows = []
    for a in ("de", "fr"):
        for e in ("de", "fr"):
            for cond, nll in (("baseline", base[e]), ("intervention", base[e] + delta[a, e]),
                              ("control", base[e] + ctrl[a, e])):
                rows.append({"ablated": a, "evaluated": e, "condition": cond, "nll": nll, "ppl": 2.718 ** nll,
                             "n_tokens": 100})
    return pd.DataFrame(rows)


def test_ppl_table_by_hand():
    t = ppl_table(_ppl_frame()).set_index("ablated")
    assert t.loc["de", "own_delta"] == pytest.approx(0.5)
    assert t.loc["de", "others_delta"] == pytest.approx(0.1)
    assert t.loc["de", "control_own_delta"] == pytest.approx(0.05)
    assert bool(t.loc["de", "own_most_hurt"]) is True
    assert t.loc["fr", "own_delta"] == pytest.approx(0.1)
    assert t.loc["fr", "others_delta"] == pytest.approx(0.2)
    assert bool(t.loc["fr", "own_most_hurt"]) is False


def test_ppl_table_agrees_with_the_summary_on_ties():
    """A row whose own ΔNLL ties another language's is not "most hurt" — in the page as in summary.json."""
    df = _ppl_frame()
    tie = (df.ablated == "de") & (df.evaluated == "fr") & (df.condition == "intervention")
    df.loc[tie, "nll"] = 2.0 + 0.5  # de's ΔNLL on fr = 0.5 = its own
    t = ppl_table(df).set_index("ablated")
    assert bool(t.loc["de", "own_most_hurt"]) is False and bool(t.loc["fr", "own_most_hurt"]) is False
    assert perplexity_summary(df)["frac_most_hurt"] == pytest.approx(t.own_most_hurt.mean()) == 0.0


def test_ppl_table_rejects_other_frames():
    with pytest.raises(LangNeuronsError, match="ppl.csv"):
        ppl_table(pd.DataFrame({"a": [1]}))


def _steer_frame() -> pd.DataFrame:
    rows = []
    # target de at factor 4: 1/4 de under intervention; at factor 16: 3/4; baseline 0/4; control 1/4
    for factor, hits in ((4.0, 1), (16.0, 3)):
        for cond, k in (("intervention", hits), ("baseline", 0), ("control", 1)):
            for i in range(4):
                rows.append({"target": "de", "condition": cond, "prompt": "p", "generation": "g",
                             "detected": "de" if i < k else "en", "mode": "set", "factor": factor,
                             "statistic": "mean", "positions": "all"})
    return pd.DataFrame(rows)


def test_report_sections_from_files(tmp_path):
    (tmp_path / "ppl").mkdir()
    _ppl_frame().to_csv(tmp_path / "ppl" / "ppl.csv", index=False)
    (tmp_path / "steer").mkdir()
    _steer_frame().to_csv(tmp_path / "steer" / "steer.csv", index=False)
    (tmp_path / "summary.json").write_text(json.dumps({"model": "m", "site": "act", "languages": ["de", "fr"],
                                                      "tokens": {"de": 10, "fr": 20}}))
    text = write_report(tmp_path).read_text()
    assert "30 tokens" in text
    assert "## Switching neurons off" in text and "## Switching neurons on" in text
    assert "Language-specific neurons\n" in text and "## Language-specific neurons" not in text  # no analysis/
    # mean own ΔNLL (0.5 + 0.1) / 2; others (0.1 + 0.2) / 2; control (0.05 + 0.02) / 2
    assert "Mean own ΔNLL **0.300** nats; 2.0× the other languages' and 8.6× the control's" in text
    assert "most hurt in 1 of 2 rows" in text
    # the sweep table, and the per-target table at the best factor (16: 3 of 4)
    assert "| 16 | 0.750 | 0.000 | 0.250 |" in text and "| 4 | 0.250 | 0.000 | 0.250 |" in text
    assert "at the best setting by target rate (factor 16)" in text
    assert "| de | 4 | 0.75 [" in text
    assert "ppl_change.png" not in text  # figures are linked only when they exist


def test_report_needs_output(tmp_path):
    with pytest.raises(LangNeuronsError, match="no pipeline output"):
        write_report(tmp_path)
    with pytest.raises(LangNeuronsError, match="no such output directory"):
        write_report(tmp_path / "missing")


def test_report_diffmean_section(tmp_path):
    """steer_diffmean/ gets its own section, after the neurons', named as the baseline method."""
    df = _steer_frame().assign(mode="diffmean", statistic=None, layer=3)
    (tmp_path / "steer_diffmean").mkdir()
    df.to_csv(tmp_path / "steer_diffmean" / "steer.csv", index=False)
    text = write_report(tmp_path).read_text()
    assert "## The baseline: residual-stream difference-of-means steering" in text
    assert "## Switching neurons on" not in text  # no steer/
    assert "added after block 3 at every position" in text and "random direction of the same norm" in text
    assert "| 16 | 0.750 | 0.000 | 0.250 |" in text and "| de | 4 | 0.75 [" in text
    # diffmean's strength is β, never "factor"; its mode is not repeated as a setting
    assert "| β | target rate |" in text and "(β 16)" in text and "(β 16, positions all)" in text
    assert "factor" not in text.split("## The baseline")[1].replace("steer_rate_vs_factor", "")
    (tmp_path / "steer").mkdir()
    _steer_frame().to_csv(tmp_path / "steer" / "steer.csv", index=False)
    text = write_report(tmp_path).read_text()
    assert text.index("## Switching neurons on") < text.index("## The baseline: residual-stream")


def test_report_identification_section(tmp_path):
    """The method as a sentence (not a parameter dump), the layer figure captioned as what it
    shows (counts), and the clustermap the pipeline writes shown."""
    params = {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95, "normalize_entropy": False,
              "per_layer": False, "tau": 0.8628, "activation_bar": 0.8628, "n_kept": 369}
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "summary.json").write_text(json.dumps(
        {"method": "lape", "params": params, "site": "act", "union": 369, "union_share_of_model": 0.01,
         "share_shared_by_2_or_more": 0.3, "counts": {"de": 200, "ja": 169}}))
    (tmp_path / "figures").mkdir()
    for name in ("layer_placement", "overlap_clustermap"):
        (tmp_path / "figures" / f"{name}.png").write_bytes(b"\x89PNG")
    text = write_report(tmp_path).read_text()
    assert ("**LAPE** (Tang et al. 2024) kept the 1% of neurons of the model (369) with the lowest entropy of their "
            "activation probability over the languages, among those that fire on more than 0.863 of some language's "
            "tokens (the 95th percentile of all activation probabilities)") in text
    assert "top_rate" not in text and "n_kept" not in text
    assert "per layer (counts)" in text and "share per layer" not in text
    assert "](figures/overlap_clustermap.png)" in text


@pytest.mark.parametrize("method, params, expected", [
    ("threshold", {"top_m": 5}, "each language's 5 neurons with the highest activation probability"),
    ("threshold", {"all_sentences": True}, "above 0 in every one of its sentences"),
    ("ap_experts", {"n": 8, "n_positive": 6, "n_negative": 14}, "the 4 units whose sentence means best tell its 6"),
    ("plnd", {"top_k": 100, "batch_size": 8}, "Method **plnd** (top k 100; batch size 8)."),
])
def test_method_sentence(method, params, expected):
    from tl_langneurons.outputs.report import method_sentence

    assert expected in method_sentence(method, params)
