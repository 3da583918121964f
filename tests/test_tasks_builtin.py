"""The package's own lm-eval tasks (tlln_cloze), the task summary and figure, the `tasks` command and
the Rahmanisa downstream script, on the built-in model; the cloze on Gemma 3 270M (`real`)."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import analysis_script

from tl_langneurons import LangNeuronsError
from tl_langneurons.cli import main
from tl_langneurons.neurons import LanguageNeurons
from tl_langneurons.tasks import TASKS_DIR, builtin_tasks, evaluate_tasks, task_language
from tl_langneurons.tasks.summary import change_matrix, headline_metric, tasks_summary

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"




def _neurons(model, langs=("de", "ru"), per_layer=6) -> LanguageNeurons:
    L, D = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    sets = {k: sorted((layer, (7 * layer + 13 * i + 5 * j) % D) for layer in range(L) for i in range(per_layer))
            for j, k in enumerate(langs)}
    return LanguageNeurons(sets, "manual", {}, "act", {}, L, D)


# -- the shipped cloze ------------------------------------------------------------------------------


def test_cloze_files_are_what_the_build_script_writes(tmp_path):
    build = analysis_script("build_builtin_tasks")
    counts = build.write_cloze(200, 0, tmp_path)
    shipped = TASKS_DIR / "tlln_cloze"
    assert len(counts) == 27
    for lang in counts:
        for name in (f"{lang}.jsonl", f"{lang}.train.jsonl"):
            assert (tmp_path / "data" / name).read_text() == (shipped / "data" / name).read_text()
        assert (tmp_path / f"tlln_cloze_{lang}.yaml").read_text() == (shipped / f"tlln_cloze_{lang}.yaml").read_text()


def test_cloze_items_are_true_halves_against_other_sentences():
    from tl_langneurons import load_corpus

    build = analysis_script("build_builtin_tasks")
    sents = load_corpus("builtin", split="eval")["de"]
    for item in build.cloze_items(sents, "de", 30, 0):
        s = " ".join(sents[item["id"]].split())
        assert len(item["endings"]) == 4 == len(set(item["endings"]))
        assert s == item["context"] + " " + item["endings"][item["label"]]  # the sentence, cut at a space
        others = [e for i, e in enumerate(item["endings"]) if i != item["label"]]
        halves = {build.cut(x, "de")[1] for j, x in enumerate(sents) if j != item["id"] and build.cut(x, "de")}
        assert all(e in halves for e in others)  # distractors are second halves of other sentences
    train = {json.loads(x)["context"] for x in (TASKS_DIR / "tlln_cloze" / "data" / "de.train.jsonl").open()}
    test = {json.loads(x)["context"] for x in (TASKS_DIR / "tlln_cloze" / "data" / "de.jsonl").open()}
    assert len(train) > 150 and not train & test  # the train split is other text
    assert build.cut("一二三四五六七八九十一二三", "zh") == ("一二三四五六", "七八九十一二三")
    assert build.cut("too short", "en") is None


def test_lm_eval_finds_the_shipped_tasks():
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert {"tlln_cloze_de", "tlln_cloze_zh", "tlln_cloze"} <= set(tm.all_tasks)
    assert "tlln_cloze_de" in builtin_tasks()


def test_task_language_from_names():
    cases = {"xcopa_it": "it", "xnli_de": "de", "xwinograd_jp": "ja", "belebele_deu_Latn": "de",
             "include_base_44_german": "de", "include_base_44_german_stem": "de", "xquad_zh": "zh", "tlln_cloze_ru": "ru",
             "tlln_translate_en_de": "de", "tlln_flores_de_en": "en", "hellaswag": None}
    for name, want in cases.items():
        assert task_language(name) == want, name


# -- the runner on the built-in tasks ---------------------------------------------------------------


@pytest.mark.slow
def test_cloze_runs_under_interventions(builtin_model):
    from conftest import n_hooks

    neurons = _neurons(builtin_model)
    before = n_hooks(builtin_model)
    run = evaluate_tasks(builtin_model, ["tlln_cloze_de", "tlln_cloze_ru"], neurons, ["de"], "scale", factor=0.0,
                         limit=12, progress=False)
    assert n_hooks(builtin_model) == before
    f = run.frame
    assert set(f.condition) == {"baseline", "intervention", "control"}
    assert set(f.metric) == {"acc", "acc_norm"} and set(f.n) == {12}
    assert f.loc[f.condition == "baseline", "intervened"].isna().all()
    # the intervention changed the log-likelihoods of both languages (zeroing neurons in every layer)
    ll = lambda cond, label: [r["resps"] for r in run.samples[(cond, label)]["tlln_cloze_de"]]
    assert ll("intervention", "de") != ll("baseline", None)
    assert ll("control", "de") != ll("intervention", "de")
    # accuracy is the share of documents whose true ending has the highest log-likelihood
    for r in run.samples[("baseline", None)]["tlln_cloze_de"]:
        scores = [x[0][0] for x in r["resps"]]
        assert r["acc"] == float(max(range(4), key=scores.__getitem__) == r["target"])


@pytest.mark.slow
def test_scale_by_one_is_the_baseline(builtin_model):
    run = evaluate_tasks(builtin_model, ["tlln_cloze_de"], _neurons(builtin_model), ["de", "ru"], "scale",
                         factor=1.0, control=None, limit=8, progress=False)
    base = run.samples[("baseline", None)]["tlln_cloze_de"]
    for label in ("de", "ru"):
        assert [r["resps"] for r in run.samples[("intervention", label)]["tlln_cloze_de"]] == [r["resps"] for r in base]
    assert change_matrix(run.frame).abs().to_numpy().max() == 0


def test_runner_argument_errors(builtin_model):
    n = _neurons(builtin_model)
    with pytest.raises(LangNeuronsError, match="unknown lm-eval task 'tlln_cloze_xx'"):
        evaluate_tasks(builtin_model, ["tlln_cloze_xx"], progress=False)
    with pytest.raises(LangNeuronsError, match="unknown target language 'fr'"):
        evaluate_tasks(builtin_model, ["tlln_cloze_de"], n, ["fr"], progress=False)
    with pytest.raises(LangNeuronsError, match="unknown mode 'double'"):
        evaluate_tasks(builtin_model, ["tlln_cloze_de"], n, ["de"], "double", progress=False)
    with pytest.raises(LangNeuronsError, match="not among the tasks run"):
        evaluate_tasks(builtin_model, ["tlln_cloze_de"], sources={"tlln_cloze_ru": {"test": "x.jsonl"}},
                       progress=False)
    with pytest.raises(LangNeuronsError, match="does not exist"):
        evaluate_tasks(builtin_model, ["tlln_cloze_de"], sources={"tlln_cloze_de": {"test": "/nonexistent.jsonl"}},
                       progress=False)
    with pytest.raises(LangNeuronsError, match="limit"):
        evaluate_tasks(builtin_model, ["tlln_cloze_de"], limit=0, progress=False)
    with pytest.raises(LangNeuronsError, match="not both"):
        evaluate_tasks(builtin_model, ["tlln_cloze_de"], n, ["de"], interventions={"de": []}, progress=False)


# -- summary and figure, on a hand-made frame -------------------------------------------------------


def _frame() -> pd.DataFrame:
    rows = []
    base = {"t_de": 0.60, "t_ru": 0.50, "t_zh": 0.70}
    langs = {"t_de": "de", "t_ru": "ru", "t_zh": "zh"}
    delta = {("t_de", "de"): -0.30, ("t_ru", "de"): -0.05, ("t_zh", "de"): 0.00,
             ("t_de", "ru"): -0.02, ("t_ru", "ru"): -0.20, ("t_zh", "ru"): 0.01}
    for t, v in base.items():
        rows.append((t, langs[t], "baseline", None, "acc", v))
        rows.append((t, langs[t], "baseline", None, "acc_norm", v + 0.1))
        for lab in ("de", "ru"):
            rows.append((t, langs[t], "intervention", lab, "acc", v + delta[(t, lab)]))
            rows.append((t, langs[t], "control", lab, "acc", v - 0.01))
    return pd.DataFrame([dict(task=t, language=lg, condition=c, intervened=i, metric=m, filter="none", value=v,
                              stderr=0.05, n=40) for t, lg, c, i, m, v in rows])


def test_summary_against_hand_computation():
    f = _frame()
    assert headline_metric(f, "t_de") == "acc" and headline_metric(f, "t_de", "acc_norm") == "acc_norm"
    m = change_matrix(f)
    assert list(m.columns) == ["de", "ru"] and list(m.index) == ["t_de", "t_ru", "t_zh"]
    assert m.loc["t_ru", "ru"] == pytest.approx(-0.20)
    s = tasks_summary(f)
    assert s["own_delta"] == pytest.approx((-0.30 - 0.20) / 2)
    assert s["other_delta"] == pytest.approx((-0.05 + 0.00 - 0.02 + 0.01) / 4)
    assert s["control_own_delta"] == pytest.approx(-0.01)
    assert s["own_most_changed"] == 1.0
    assert s["baseline"]["t_zh"] == {"metric": "acc", "value": 0.70, "stderr": 0.05, "n": 40, "language": "zh"}
    with pytest.raises(LangNeuronsError, match="no metric 'chrf'"):
        tasks_summary(f, "chrf")


def test_task_change_heatmap_outlines_own_language():
    from tl_langneurons.outputs import plot

    fig = plot.task_change_heatmap(_frame())
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["intervention", "random control"]
    main_ax = next(ax for ax in fig.axes if ax.get_title() == "intervention")
    assert len(main_ax.patches) == 2  # t_de × de and t_ru × ru; zh was not intervened on


# -- the command line and the analysis script -------------------------------------------------------


@pytest.mark.slow
def test_tasks_command(tmp_path, builtin_model, capsys):
    npath = _neurons(builtin_model).save(tmp_path / "n.json")
    out = tmp_path / "t"
    assert main(["tasks", "--tasks", "tlln_cloze_de,tlln_cloze_ru", "--neurons", str(npath), "--target", "de,ru",
                 "--mode", "zero", "--limit", "6", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    df = pd.read_csv(out / "tasks.csv")
    assert len(df) == 2 * 2 * 5  # 2 tasks × 2 metrics × (baseline + 2 × (intervention, control))
    assert summary["run"]["positions"] == "all" and summary["n_intervened"] == 2
    assert (out / "tasks_change.png").is_file() and (out / "samples" / "control_ru" / "tlln_cloze_de.jsonl").is_file()
    assert len((out / "samples" / "baseline" / "tlln_cloze_de.jsonl").read_text().splitlines()) == 6
    printed = capsys.readouterr().out
    assert "tlln_cloze_de: acc" in printed and "own-language change" in printed
    # baseline only, without neurons
    assert main(["tasks", "--tasks", "tlln_cloze_de", "--limit", "4", "--out", str(tmp_path / "b")]) == 0
    assert set(pd.read_csv(tmp_path / "b" / "tasks.csv").condition) == {"baseline"}


def test_tasks_command_errors(tmp_path, capsys, monkeypatch):
    from tl_langneurons import models

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_model", no_load)
    assert main(["tasks", "--tasks", "tlln_clozee_de", "--out", str(tmp_path / "o")]) == 2
    assert "unknown lm-eval task 'tlln_clozee_de'" in capsys.readouterr().err
    for argv, msg in ((["--target", "de"], "--target needs --neurons"),
                      (["--neurons", "n.json"], "--neurons needs --target"),
                      (["--limit", "0"], "--limit"),
                      (["--sources", "{not json"], "--sources")):
        assert main(["tasks", "--tasks", "tlln_cloze_de", "--out", str(tmp_path / "o"), *argv]) == 2
        assert msg in capsys.readouterr().err


@pytest.mark.slow
def test_rahmanisa_downstreamanalysis_script(tmp_path, capsys):
    out = tmp_path / "r"
    assert analysis_script("rahmanisa2025_downstream").main(
        ["--model", "builtin", "--languages", "de,ru", "--max-sentences", "16", "--top-rate", "0.05",
         "--tasks", "tlln_cloze_{lang},xcopa_{lang}", "--limit", "5", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == ["tlln_cloze_de", "tlln_cloze_ru"]  # lm-eval has no XCOPA in de or ru
    assert summary["run"]["targets"] == ["de", "ru"] and summary["run"]["mode"] == "scale"
    assert "skipped (no such lm-eval task): xcopa_de, xcopa_ru" in capsys.readouterr().err
    assert (out / "neurons.json").is_file() and (out / "tasks_change.pdf").is_file()


# -- Gemma 3 270M -----------------------------------------------------------------------------------


@pytest.mark.real
def test_gemma_cloze_above_chance(gemma):
    run = evaluate_tasks(gemma, ["tlln_cloze_en", "tlln_cloze_de"], limit=30, batch_size=16, progress=False)
    f = run.frame
    for task in ("tlln_cloze_en", "tlln_cloze_de"):
        acc = f[(f.task == task) & (f.metric == "acc_norm")].iloc[0]
        # chance is 0.25; 0.45 is 2.5 standard errors (of chance at n = 30) above it
        assert acc.value > 0.25 + 2.5 * math.sqrt(0.25 * 0.75 / 30), (task, acc.value)


def test_paired_stderr_by_hand():
    from tl_langneurons.tasks.summary import paired_stderr

    base = [{"doc_hash": h, "acc": a} for h, a in zip("abcd", (1, 0, 1, 0))]
    other = [{"doc_hash": h, "acc": a} for h, a in zip("dcba", (1, 0, 0, 0))]  # another order: matched by hash
    d = [0 - 1, 0 - 0, 0 - 1, 1 - 0]  # per document a, b, c, d
    mean = sum(d) / 4
    want = math.sqrt(sum((x - mean) ** 2 for x in d) / 3 / 4)
    assert paired_stderr(base, other, "acc") == pytest.approx(want)
    assert math.isnan(paired_stderr(base, other, "chrf")) and math.isnan(paired_stderr(base[:1], other[:1], "acc"))


@pytest.mark.slow
def test_a_tag_runs_its_tasks(builtin_model):
    # lm-eval expands the tag tlln_cloze to the 27 tasks; each row knows its language
    f = evaluate_tasks(builtin_model, ["tlln_cloze"], limit=1, progress=False).frame
    assert f.task.nunique() == 27 and f.language.notna().all() and set(f.n) == {1}
