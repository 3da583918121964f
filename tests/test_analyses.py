"""The paper reproductions in analyses/ run end to end on the built-in model (small settings)."""

import importlib.util
import json
from pathlib import Path

import pytest

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ANALYSES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(out: Path, n_figures: int) -> None:
    for f in ("stats/stats.json", "neurons.json", "analysis/summary.json", "analysis/overlap.csv"):
        assert (out / f).is_file(), f
    assert len(list((out / "figures").glob("*.png"))) == len(list((out / "figures").glob("*.pdf"))) == n_figures


@pytest.mark.slow
def test_tang2024_lape(tmp_path, capsys):
    out = tmp_path / "tang"
    assert _script("tang2024_lape").main(["--max-sentences", "24", "--permutations", "200", "--out", str(out)]) == 0
    _outputs(out, 5)
    result = json.loads((out / "tang2024.json").read_text())
    assert result["ours"]["model"] == "builtin" and result["ours"]["share_of_neurons"] == pytest.approx(0.05, abs=1e-3)
    assert json.loads(capsys.readouterr().out) == result


@pytest.mark.slow
def test_kojima2024_experts(tmp_path, capsys):
    out = tmp_path / "kojima"
    assert _script("kojima2024_experts").main(["--max-sentences", "16", "--n", "40", "--permutations", "200",
                                               "--out", str(out)]) == 0
    _outputs(out, 4)
    result = json.loads((out / "kojima2024.json").read_text())
    assert result["ours"]["n_units_per_language"] == 40
    assert result["ours"]["sentences_used"]["de"] == {"positive": 16, "negative": 80}
    # reusing the statistics gives the same sets
    first = (out / "neurons.json").read_text()
    assert _script("kojima2024_experts").main(["--stats", str(out / "stats"), "--n", "40", "--permutations", "200",
                                               "--out", str(out)]) == 0
    assert (out / "neurons.json").read_text() == first
