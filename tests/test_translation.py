"""Translation tasks: corpus-level sacreBLEU metrics, their signatures, and the tlln_translate and
tlln_flores lm-eval tasks on the built-in model (FLORES+ from a local fixture in its schema)."""

import json
import math
import urllib.error
import warnings
from pathlib import Path

import pytest
import sacrebleu

from tl_langneurons import LangNeuronsError, LanguageNeurons
from tl_langneurons.tasks import TASKS_DIR, evaluate_tasks, translation
from tl_langneurons.tasks.translation import SpBleuUnavailableWarning

FLORES = Path(__file__).parent / "fixtures" / "tasks" / "flores_plus"
FLORES_FILES = {"en": str(FLORES / "eng_Latn.jsonl"), "de": str(FLORES / "deu_Latn.jsonl")}
PROMPT = "Translate from English to German.\n\nEnglish: {src}\nGerman:"

REFS = ["The cat sat on the mat.", "It is raining again today.", "We will meet at the station at noon.",
        "Please close the window before you leave."]
HYPS = ["The cat sat on a mat.", "Today it is raining again.", "We meet at the station at noon.",
        "Close the window, please."]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def offline_spm(tmp_path, monkeypatch):
    """sacreBLEU with an empty cache whose download of the FLORES-200 SentencePiece model fails,
    as on a machine without network, whatever this machine's cache or network holds."""
    from sacrebleu.tokenizers import tokenizer_spm

    def no_network(url, path, *a, **k):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tmp_path / "sacrebleu"))
    monkeypatch.setattr(tokenizer_spm, "download_file", no_network)
    return tmp_path / "sacrebleu"


def _spm_warnings(caught) -> list:
    return [w for w in caught if issubclass(w.category, SpBleuUnavailableWarning)]


# ---------------------------------------------------------------------------------------------
# Metrics


def test_corpus_metrics_are_sacrebleus():
    items = list(zip(REFS, HYPS))
    bleu = sacrebleu.corpus_bleu(HYPS, [REFS]).score
    chrfpp = sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score
    assert translation.corpus_bleu(items) == pytest.approx(bleu, abs=1e-12)
    assert translation.corpus_chrfpp(items) == pytest.approx(chrfpp, abs=1e-12)
    # chrF++ is not lm-eval's chrf (chrF2, no word n-grams), and the pair order matters
    assert abs(chrfpp - sacrebleu.corpus_chrf(HYPS, [REFS]).score) > 0.5
    assert translation.corpus_bleu([(h, r) for r, h in items]) != pytest.approx(bleu)
    assert translation.corpus_bleu([(r, r) for r in REFS]) == pytest.approx(100.0)


def test_metric_errors_name_the_bad_value():
    with pytest.raises(LangNeuronsError, match="reference, hypothesis"):
        translation.corpus_bleu(["just a string"])
    with pytest.raises(LangNeuronsError, match="at least one"):
        translation.corpus_chrfpp([])
    with pytest.raises(LangNeuronsError, match="'ter'.*allowed"):
        translation.signatures(["ter"])


def test_corpus_bleu_is_not_a_mean_of_sentence_or_batch_bleu():
    """Averaging per-sentence BLEU, or corpus BLEU per batch of 32 (what Gurgurov et al. and
    Rahmanisa et al. report), is another number than the corpus BLEU of the same translations."""
    refs = [r["text"] for r in _rows(TASKS_DIR / "tlln_translate" / "data" / "de.jsonl")][:80]
    # hypotheses whose quality drifts along the test set, as a model's does between easy and hard
    # stretches: exact, then a word dropped, then only the first half; 80 segments make batches
    # of 32, 32 and 16, which a mean of batch scores weighs alike
    hyps = []
    for i, ref in enumerate(refs):
        words = ref.split()
        hyps.append([ref, " ".join(words[:-1]), " ".join(words[:max(len(words) // 2, 1)])][min(i // 30, 2)])
    items = list(zip(refs, hyps))
    corpus = translation.corpus_bleu(items)
    assert corpus == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    sentence_mean = sum(sacrebleu.sentence_bleu(h, [r]).score for r, h in items) / len(items)
    batches = [items[i:i + 32] for i in range(0, len(items), 32)]
    batch_mean = sum(translation.corpus_bleu(b) for b in batches) / len(batches)
    print(f"corpus BLEU {corpus:.2f}, mean sentence BLEU {sentence_mean:.2f}, mean batch-of-32 BLEU {batch_mean:.2f}")
    assert abs(sentence_mean - corpus) > 2.0, (corpus, sentence_mean)
    assert abs(batch_mean - corpus) > 2.0, (corpus, batch_mean)


def test_signatures_name_the_metric_and_tokenizer():
    sig = translation.signatures(["bleu", "chrf++"])
    assert "tok:13a" in sig["bleu"] and "nrefs:1" in sig["bleu"]
    assert "nw:2" in sig["chrf++"] and "nc:6" in sig["chrf++"]
    assert sig["chrf++"].endswith(f"version:{sacrebleu.__version__}")


def test_spbleu_offline_is_nan_with_one_warning(offline_spm):
    items = list(zip(REFS, HYPS))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert math.isnan(translation.corpus_spbleu(items))
        assert math.isnan(translation.corpus_spbleu(items))
        assert translation.signatures(["spbleu"]) == {"spbleu": None}
    (w,) = _spm_warnings(caught)
    message = str(w.message)
    assert "one-time download" in message and str(offline_spm) in message


# ---------------------------------------------------------------------------------------------
# Tasks


def test_task_manager_finds_the_translation_tasks():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    for name in ("tlln_translate_en_de", "tlln_translate_th_en", "tlln_flores_en_de", "tlln_flores_zh_en",
                 "tlln_translate", "tlln_flores"):
        assert name in manager.all_tasks, name
    translate = [t for t in manager.all_tasks if t.startswith("tlln_translate_")]
    assert len(translate) == 32


def test_flores_fixture_runs_through_the_task(builtin_model, offline_spm):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = evaluate_tasks(builtin_model, ["tlln_flores_en_de"], sources={"tlln_flores_en_de": FLORES_FILES},
                             limit=3, batch_size=3, progress=False)
    assert len(_spm_warnings(caught)) == 1
    values = run.frame.set_index("metric")["value"]
    assert set(values.index) == {"bleu", "spbleu", "chrf++"}
    assert math.isnan(values["spbleu"])
    assert 0.0 <= values["bleu"] <= 100.0 and 0.0 < values["chrf++"] <= 100.0
    assert (run.frame["n"] == 3).all() and (run.frame["language"] == "de").all()
    en = {r["id"]: r["text"] for r in _rows(FLORES / "eng_Latn.jsonl")}
    de = {r["id"]: r["text"] for r in _rows(FLORES / "deu_Latn.jsonl")}
    samples = run.samples[("baseline", None)]["tlln_flores_en_de"]
    assert len(samples) == 3
    for s in samples:
        prompt, gen_kwargs = s["arguments"][0]
        assert prompt == PROMPT.format(src=s["doc"]["source"])
        assert s["doc"]["source"] == en[s["doc"]["id"]] and s["target"] == de[s["doc"]["id"]]
        assert gen_kwargs["until"] == ["\n"] and gen_kwargs["do_sample"] is False
    # the score is the corpus chrF++ of exactly the logged generations
    refs = [s["chrf++"][0] for s in samples]
    hyps = [s["chrf++"][1] for s in samples]
    assert values["chrf++"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    sig = run.signatures["tlln_flores_en_de"]
    assert "nw:2" in sig["chrf++"] and "tok:13a" in sig["bleu"] and sig["spbleu"] is None


def test_flores_loader_rejects_swapped_files(builtin_model):
    swapped = {"en": FLORES_FILES["de"], "de": FLORES_FILES["en"]}
    with pytest.raises(LangNeuronsError, match=r"deu_Latn.jsonl' should hold FLORES\+ 'eng_Latn' rows but has deu_Latn"):
        evaluate_tasks(builtin_model, ["tlln_flores_en_de"], sources={"tlln_flores_en_de": swapped}, limit=1,
                       progress=False)


def test_builtin_translate_task(builtin_model):
    run = evaluate_tasks(builtin_model, ["tlln_translate_en_de"], limit=3, batch_size=3, progress=False)
    values = run.frame.set_index("metric")["value"]
    assert 0.0 < values["chrf++"] <= 100.0 and 0.0 <= values["bleu"] <= 100.0
    samples = run.samples[("baseline", None)]["tlln_translate_en_de"]
    en = {r["id"]: r["text"] for r in _rows(TASKS_DIR / "tlln_translate" / "data" / "en.jsonl")}
    for s in samples:
        assert s["arguments"][0][0] == PROMPT.format(src=en[s["doc"]["id"]])
        assert "\n" not in s["filtered_resps"][0]
    refs = [s["bleu"][0] for s in samples]
    hyps = [s["bleu"][1] for s in samples]
    assert values["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert "nw:2" in run.signatures["tlln_translate_en_de"]["chrf++"]


def test_x_to_english_prompt_names_the_source_language(builtin_model):
    run = evaluate_tasks(builtin_model, ["tlln_translate_ru_en"], limit=1, progress=False)
    (s,) = run.samples[("baseline", None)]["tlln_translate_ru_en"]
    assert s["arguments"][0][0] == f"Translate from Russian to English.\n\nRussian: {s['doc']['source']}\nEnglish:"


def test_scale_by_one_changes_no_translation(builtin_model):
    """Scaling neurons by 1 leaves every generation and score as it was; zeroing the same neurons
    does change the generation (so the intervention does reach lm-eval's generate)."""
    from tl_langneurons import Intervention

    L, I = builtin_model.cfg.n_layers, builtin_model.cfg.d_mlp
    neurons = LanguageNeurons({"de": [(l, i) for l in range(L) for i in range(0, I, 3)]}, "manual", {}, "act", {},
                              L, I)
    run = evaluate_tasks(builtin_model, ["tlln_translate_de_en"], progress=False, limit=1, control=None,
                         interventions={"x1": Intervention(neurons, "scale", factor=1.0),
                                        "zero": Intervention(neurons, "zero")})
    frame = run.frame.set_index(["condition", "intervened", "metric"])["value"]
    for metric in ("bleu", "chrf++"):
        assert frame[("intervention", "x1", metric)] == frame[("baseline", None, metric)]
    gens = {label: [s["filtered_resps"] for s in v["tlln_translate_de_en"]] for (_, label), v in run.samples.items()}
    assert gens[None][0][0].strip(), "the check needs a document the model translates to something"
    assert gens["x1"] == gens[None]
    assert gens["zero"] != gens[None]
