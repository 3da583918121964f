"""lm-eval tasks under interventions (``tl_langneurons.tasks``), on the built-in model and the
handwritten fixtures of ``tests/fixtures/tasks`` (each dataset's Hub schema; see its README).

Every fixture runs through its real lm-eval 0.4.13 task definition (``sources=`` only redirects the
data). One module: lm-eval's first ``TaskManager`` indexes ~15,000 YAML files, once per process.
What is checked against what:

* the baseline against lm-eval's own ``simple_evaluate`` of the plain Hugging Face model (values
  and per-sample log-likelihoods);
* lm-eval's per-sample log-likelihoods against a hand computation from one forward pass of the
  model (tokenize context + continuation together, split as lm-eval does, sum the continuation's
  log-softmax), with and without an intervention;
* a scale-1 intervention against the baseline (identical), a zeroing one against it (different).
"""

import json
from pathlib import Path

import pytest
import torch

from conftest import n_hooks
from tl_langneurons.errors import LangNeuronsError
from tl_langneurons.intervene import Intervention, intervene
from tl_langneurons.models import backend
from tl_langneurons.neurons import LanguageNeurons

FIX = Path(__file__).parent / "fixtures" / "tasks"
SOURCES = {
    "xcopa_it": {"test": FIX / "xcopa_it" / "test.jsonl"},
    "xwinograd_en": {"test": FIX / "xwinograd_en" / "test.jsonl"},
    "xwinograd_fr": {"test": FIX / "xwinograd_fr" / "test.jsonl"},
    "xnli_de": {"validation": FIX / "xnli_de" / "validation.jsonl"},
    "xstorycloze_ru": {"train": FIX / "xstorycloze_ru" / "train.jsonl", "eval": FIX / "xstorycloze_ru" / "eval.jsonl"},
    "belebele_deu_Latn": {"test": FIX / "belebele_deu_Latn" / "test.jsonl"},
    "include_base_44_albanian": {"test": FIX / "include_base_44_albanian" / "test.jsonl"},
    "xquad_de": {"validation": FIX / "xquad_de" / "validation.jsonl"},
}
TASKS = list(SOURCES)
# the scored split's file of each task (xstorycloze scores `eval`; `train` is its few-shot pool)
SCORED = {t: next(iter(v.values())) if len(v) == 1 else v["eval"] for t, v in SOURCES.items()}
# a short generation budget for XQuAD: its YAML stops at "\n" only, with lm-eval's 256-token default
SHORT_GEN = {"xquad_de": {"generation_kwargs": {"until": ["\n"], "do_sample": False, "temperature": 0.0,
                                                 "max_gen_toks": 12}}}
# the INCLUDE base group's members: the categories its process_docs keep
INCLUDE_DOMAINS = {"STEM", "Arts & Humanities", "Business & Commerce", "Social Science", "Health oriented education"}

bridge_only = pytest.mark.skipif(backend() != "bridge", reason="TransformerBridge back end (TL 4)")
hooked_only = pytest.mark.skipif(backend() != "hooked", reason="needs TransformerLens 3.9's HookedTransformer")


def rows(task):
    return [json.loads(line) for line in SCORED[task].read_text(encoding="utf-8").splitlines() if line.strip()]


def expected_n(task):
    if task.startswith("include_base_44"):
        return sum(r["domain"] in INCLUDE_DOMAINS for r in rows(task))
    return len(rows(task))


def of(samples: dict, task: str) -> list:
    """A task's per-sample log; for a group, its members' logs in order (lm-eval logs by task)."""
    if task in samples:
        return samples[task]
    return [s for t in sorted(samples) if t.startswith(task + "_") for s in samples[t]]


def lls(samples):
    """Every log-likelihood of a task's per-sample log, in order (generation tasks have none)."""
    return [float(r[0]) for s in samples for r in s["filtered_resps"] if isinstance(r, (list, tuple))]


def some_neurons(model, per_layer: int) -> LanguageNeurons:
    """A neuron set on the model's real dimensions: ``per_layer`` random MLP neurons per layer for
    each of two languages (which neurons does not matter here; their count does)."""
    L, d = model.cfg.n_layers, model.cfg.d_mlp
    g = torch.Generator().manual_seed(0)
    sets = {lang: [(layer, int(i)) for layer in range(L) for i in torch.randperm(d, generator=g)[:per_layer]]
            for lang in ("de", "fr")}
    return LanguageNeurons(sets, "manual", {}, "act", {}, L, d)


@pytest.fixture(scope="module")
def model():
    from tl_langneurons import load_model

    return load_model("builtin")


@pytest.fixture(scope="module")
def neurons(model):
    return some_neurons(model, per_layer=8)


@pytest.fixture(scope="module")
def zero_items(model):
    # a quarter of every layer's MLP neurons zeroed: large enough to move every log-likelihood
    big = some_neurons(model, per_layer=model.cfg.d_mlp // 4)
    return [Intervention(big, "zero", language="de")]


@pytest.fixture(scope="module")
def run(model, neurons, zero_items):
    """All fixture tasks, once: baseline, a scale-1 intervention (must change nothing) with its
    random control, and a zeroing intervention (must change the scores)."""
    from tl_langneurons.tasks import evaluate_tasks

    out = evaluate_tasks(model, TASKS, interventions={"one": Intervention(neurons, "scale", factor=1.0, language="de"),
                                                      "zero": zero_items},
                         controls={"one": [Intervention(some_neurons(model, 8), "scale", factor=1.0, language="fr")],
                                   "zero": [Intervention(neurons, "zero", language="fr")]},
                         sources=SOURCES, task_config=SHORT_GEN, batch_size=16, bootstrap_iters=0, progress=False)
    assert n_hooks(model) == 0
    return out


@pytest.fixture(scope="module")
def lm_eval_own(model):
    """lm-eval's own numbers for the plain Hugging Face model from the same folder, on the same
    task specifications (so the same documents and requests)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tl_langneurons.sources import local_folder
    from tl_langneurons.tasks.registry import load_specs, task_manager, task_specs

    folder = local_folder("builtin")[1]
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    lm = HFLM(pretrained=hf, tokenizer=AutoTokenizer.from_pretrained(folder), batch_size=16)
    manager = task_manager(TASKS)
    specs = task_specs(TASKS, manager, SOURCES, None, SHORT_GEN)
    return simple_evaluate(model=lm, tasks=load_specs(specs, manager), task_manager=manager, log_samples=True,
                           cache_requests=False, bootstrap_iters=0)


# (a) every fixture through its real definition -------------------------------------------------

@bridge_only
@pytest.mark.parametrize("task", TASKS)
def test_fixture_runs_through_its_lm_eval_task(run, task):
    f = run.frame[(run.frame.condition == "baseline")]
    base = f[f.task == task]
    want = {"xquad_de": {"exact_match", "f1"}, "belebele_deu_Latn": {"acc", "acc_norm"}}.get(task, {"acc"})
    assert want <= set(base.metric), (task, set(base.metric))
    assert (base.n == expected_n(task)).all(), (task, list(base.n))
    if task.startswith("include_base_44"):
        members = {t for t in f.task if t.startswith(task + "_")}
        assert len(members) == 5
        # every row of a kept category is scored in exactly one member
        assert sum(f[(f.task.isin(members)) & (f.metric == "acc")].n) == expected_n(task)


@bridge_only
def test_limit_caps_the_documents(model):
    from tl_langneurons.tasks import evaluate_tasks

    got = evaluate_tasks(model, ["xnli_de"], sources={"xnli_de": SOURCES["xnli_de"]}, limit=2, progress=False)
    assert list(got.frame.n) == [2] and len(got.samples[("baseline", None)]["xnli_de"]) == 2


# (b) scale 1 changes nothing; zeroing changes the log-likelihoods ------------------------------

@bridge_only
@pytest.mark.parametrize("task", TASKS)
def test_scale_one_is_the_baseline_and_zeroing_is_not(run, task):
    base = of(run.samples[("baseline", None)], task)
    one = of(run.samples[("intervention", "one")], task)
    zero = of(run.samples[("intervention", "zero")], task)
    if task == "xquad_de":  # generation: the answers themselves
        assert [s["resps"] for s in one] == [s["resps"] for s in base]
    else:
        assert lls(one) == lls(base) and lls(base)
        assert all(a != b for a, b in zip(lls(zero), lls(base)))
    f = run.frame[run.frame.task == task].set_index(["condition", "intervened", "metric"]).value
    b = f.xs("baseline", level="condition")
    o = f.xs(("intervention", "one"), level=("condition", "intervened"))
    assert list(o.values) == list(b.values)


@bridge_only
def test_zeroing_changes_generated_answers_or_their_scores(run):
    # a quarter of all MLP neurons zeroed changes what the model generates for some question
    base = [s["resps"] for s in run.samples[("baseline", None)]["xquad_de"]]
    zero = [s["resps"] for s in run.samples[("intervention", "zero")]["xquad_de"]]
    assert base != zero


# (c) the baseline is what lm-eval itself reports for the Hugging Face model -----------------------

@bridge_only
@pytest.mark.parametrize("task", TASKS)
def test_baseline_equals_lm_eval_on_the_hugging_face_model(run, lm_eval_own, task):
    ours = of(run.samples[("baseline", None)], task)
    theirs = of(lm_eval_own["samples"], task)
    assert [s["doc_hash"] for s in ours] == [s["doc_hash"] for s in theirs]
    if task == "xquad_de":
        assert [s["resps"] for s in ours] == [s["resps"] for s in theirs]
    else:
        # not bit-for-bit: the bridge's components (its attention among them) are its own code
        # running the Hugging Face weights, so the float rounding differs (measured: ~1e-7 relative)
        assert lls(ours) == pytest.approx(lls(theirs), abs=1e-4, rel=1e-6)
    base = run.frame[(run.frame.condition == "baseline") & (run.frame.task == task)]
    assert len(base)
    for r in base.itertuples():
        assert r.value == pytest.approx(lm_eval_own["results"][r.task][f"{r.metric},{r.filter}"], abs=1e-12)


# (d) oracle: the log-likelihoods from one forward pass, by hand --------------------------------

def hand_loglikelihood(model, context: str, continuation: str) -> float:
    """log P(continuation | context) as lm-eval defines it for a causal model, computed here:
    trailing spaces of the context belong to the continuation; context + continuation are tokenized
    together (with the tokenizer's own BOS, as HFLM's default does) and the continuation is what
    follows the context's own tokens; the score is the sum of those tokens' log-softmax."""
    tok = model.tokenizer
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tok(context + continuation)["input_ids"]
    ctx = tok(context)["input_ids"]
    assert whole[0] == tok.bos_token_id and whole[:len(ctx)] == ctx
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).float(), dim=-1)[0]
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


def xcopa_requests(doc):
    """XCOPA-it's requests, from the dataset row: premise without its final period + the
    connective; each choice with a lower-case first letter after a space."""
    conn = {"cause": "perché", "effect": "quindi"}[doc["question"]]
    ctx = doc["premise"].strip()[:-1] + f" {conn}"
    return [(ctx, " " + c[0].lower() + c[1:]) for c in (doc["choice1"], doc["choice2"])]


def xwinograd_requests(doc):
    """XWinograd's partial scoring: the sentence up to `_` with each option filled in is a context;
    the rest of the sentence after `_` is one shared continuation."""
    i = doc["sentence"].index("_")
    cont = " " + doc["sentence"][i + 1:].strip()
    return [(doc["sentence"][:i] + opt, cont) for opt in (doc["option1"], doc["option2"])]


@bridge_only
@pytest.mark.parametrize("task,build", [("xcopa_it", xcopa_requests), ("xwinograd_fr", xwinograd_requests)])
@pytest.mark.parametrize("condition", [("baseline", None), ("intervention", "zero")])
def test_log_likelihoods_are_a_hand_computation(run, model, zero_items, task, build, condition):
    samples = run.samples[condition][task][:3]
    for s in samples:
        reqs = build(s["doc"])
        assert [tuple(a) for a in s["arguments"]] == reqs
        if condition[0] == "baseline":
            got = [hand_loglikelihood(model, c, x) for c, x in reqs]
        else:
            with intervene(model, zero_items):
                got = [hand_loglikelihood(model, c, x) for c, x in reqs]
        # lm-eval batches (right-padded) requests: the same numbers up to float summation order
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(got, abs=1e-4, rel=1e-5)
    assert n_hooks(model) == 0


# (e) XWinograd: two contexts, one continuation ---------------------------------------------------

@bridge_only
@pytest.mark.parametrize("task", ["xwinograd_en", "xwinograd_fr"])
def test_xwinograd_is_partially_scored(run, task):
    for s, doc in zip(of(run.samples[("baseline", None)], task), rows(task)):
        (c1, x1), (c2, x2) = s["arguments"]
        blank = doc["sentence"].index("_")
        assert x1 == x2 == " " + doc["sentence"][blank + 1:].strip()
        assert (c1, c2) == (doc["sentence"][:blank] + doc["option1"], doc["sentence"][:blank] + doc["option2"])


# (f) the same documents in every condition ---------------------------------------------------------

@bridge_only
def test_every_condition_holds_the_same_documents(run):
    keys = list(run.samples)
    assert len(keys) == 5  # baseline, two interventions, their controls
    for task in TASKS:
        hashes = {k: [s["doc_hash"] for s in of(run.samples[k], task)] for k in keys}
        first = hashes[keys[0]]
        assert len(first) == expected_n(task)
        assert all(h == first for h in hashes.values()), task


# (g) no hook left behind ----------------------------------------------------------------------

@bridge_only
def test_no_hook_remains_after_a_task_fails_mid_run(model, neurons, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from tl_langneurons.tasks import evaluate_tasks

    calls = []

    def boom(self, *a, **k):
        calls.append(n_hooks(model))
        raise RuntimeError("scoring failed inside lm-eval")

    monkeypatch.setattr(HFLM, "loglikelihood", boom)
    with pytest.raises(RuntimeError, match="scoring failed inside lm-eval"):
        evaluate_tasks(model, ["xwinograd_fr"], neurons, "de", "zero", sources={"xwinograd_fr": SOURCES["xwinograd_fr"]},
                       progress=False)
    assert calls == [0]  # the baseline raised: no hooks were on
    calls.clear()

    # now the intervention's run raises (the baseline's second call), with its hooks on
    monkeypatch.undo()
    original = HFLM.loglikelihood

    def second(self, *a, **k):
        calls.append(n_hooks(model))
        if len(calls) > 1:
            raise RuntimeError("scoring failed inside lm-eval")
        return original(self, *a, **k)

    monkeypatch.setattr(HFLM, "loglikelihood", second)
    with pytest.raises(RuntimeError, match="scoring failed inside lm-eval"):
        evaluate_tasks(model, ["xwinograd_fr"], neurons, "de", "zero", sources={"xwinograd_fr": SOURCES["xwinograd_fr"]},
                       progress=False)
    assert calls[0] == 0 and calls[1] > 0
    assert n_hooks(model) == 0
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())


@bridge_only
def test_no_hook_remains_after_a_bad_fixture(model, neurons, tmp_path):
    from tl_langneurons.tasks import evaluate_tasks

    bad = tmp_path / "test.jsonl"  # an XCOPA row with no `question`: lm-eval's doc_to_text raises KeyError
    bad.write_text(json.dumps({"premise": "Piove.", "choice1": "A.", "choice2": "B.", "label": 0, "idx": 1,
                               "changed": False}) + "\n", encoding="utf-8")
    with pytest.raises(KeyError):
        evaluate_tasks(model, ["xcopa_it"], neurons, "de", sources={"xcopa_it": {"test": bad}}, progress=False)
    assert n_hooks(model) == 0


# (h) argument errors name the bad value --------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(tasks=["xcopa_itt"]), "unknown lm-eval task 'xcopa_itt'"),
    (dict(tasks=["xcopa_it"], sources={"xnli_de": {"validation": "x.jsonl"}}), "sources names 'xnli_de'"),
    (dict(tasks=["xcopa_it"], sources={"xcopa_it": {"test": "/nonexistent/xcopa.jsonl"}}), "/nonexistent/xcopa.jsonl"),
    (dict(tasks=["xcopa_it"], sources={"xcopa_it": {"validation": str(SOURCES["xnli_de"]["validation"])}}),
     "no 'test' split"),
    (dict(tasks=["xnli_de"], sources={"xnli_de": {"validation": str(SOURCES["xnli_de"]["validation"])}},
          num_fewshot=2), "'train' split"),
    (dict(tasks=["xcopa_it"], sources={"xcopa_it": {"test": str(FIX / "README.md")}}), "README.md"),
    (dict(tasks=["xcopa_it"], sources={"xcopa_it": "x.jsonl"}), "sources\\['xcopa_it'\\] must map split names"),
    (dict(tasks=["xcopa_it"], task_config={"xnli_de": {"num_fewshot": 1}}), "task_config names 'xnli_de'"),
    (dict(tasks=["xcopa_it"], task_config={"xcopa_it": {"dataset_path": "json"}}), "'dataset_path'"),
    (dict(tasks=["xcopa_it"], controls={"de": []}), "controls= goes with interventions="),
    (dict(tasks=["xcopa_it"], mode="scale", targets="xx", neurons="N"), "unknown target language 'xx'"),
    (dict(tasks=[]), "non-empty list"),
    (dict(tasks=["xcopa_it"], limit=0), "limit"),
])
def test_argument_errors_name_the_bad_value(model, neurons, kwargs, match):
    from tl_langneurons.tasks import evaluate_tasks

    if kwargs.get("neurons") == "N":
        kwargs["neurons"] = neurons
    tasks = kwargs.pop("tasks")
    with pytest.raises(LangNeuronsError, match=match):
        evaluate_tasks(model, tasks, progress=False, **kwargs)


def test_squad_metrics_are_squads():
    """The XQuAD scoring functions the shim provides, on answers scored by hand (SQuAD's rule:
    lower case, no punctuation, no a/an/the; F1 over the remaining tokens)."""
    from tl_langneurons.tasks import compat

    assert compat.compute_exact("Nordsee", "die nordsee.") == 0
    assert compat.compute_exact("The Nordsee!", "nordsee") == 1
    # gold {in, den, schweizer, alpen}, prediction {den, alpen}: precision 1, recall 1/2
    assert compat.compute_f1("in den Schweizer Alpen", "den Alpen") == pytest.approx(2 / 3)
    assert compat.compute_f1("1386", "") == 0 and compat.compute_f1("", "") == 1
    import importlib

    compat.install_squad_metrics()  # what XQuAD's utils.py imports is importable afterwards
    mod = importlib.import_module("transformers.data.metrics.squad_metrics")
    assert mod.compute_f1("in den Schweizer Alpen", "den Alpen") == pytest.approx(2 / 3)


# TransformerLens 3.9: a HookedTransformer through the same runner --------------------------------

@hooked_only
def test_hooked_baseline_equals_lm_eval_on_the_hugging_face_model(model, neurons):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tl_langneurons.sources import local_folder
    from tl_langneurons.tasks import evaluate_tasks
    from tl_langneurons.tasks.registry import load_specs, task_manager, task_specs

    src = {"xcopa_it": SOURCES["xcopa_it"]}
    got = evaluate_tasks(model, ["xcopa_it"], neurons, "de", "scale", factor=1.0, control=None, sources=src,
                         batch_size=4, progress=False)
    folder = local_folder("builtin")[1]
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    lm = HFLM(pretrained=hf, tokenizer=AutoTokenizer.from_pretrained(folder), batch_size=4)
    manager = task_manager(["xcopa_it"])
    theirs = simple_evaluate(model=lm, tasks=load_specs(task_specs(["xcopa_it"], manager, src), manager),
                             task_manager=manager, log_samples=True, cache_requests=False, bootstrap_iters=0)
    ours = got.samples[("baseline", None)]["xcopa_it"]
    # a HookedTransformer computes the same function with its own kernels (folded layer norms,
    # its own attention): equal up to float error, and the same accuracy
    assert lls(ours) == pytest.approx(lls(theirs["samples"]["xcopa_it"]), abs=1e-3, rel=1e-4)
    base = got.frame[got.frame.condition == "baseline"].set_index("metric").value
    assert base["acc"] == theirs["results"]["xcopa_it"]["acc,none"]
    # scale 1 on the HookedTransformer's hooks changes nothing
    assert lls(got.samples[("intervention", "de")]["xcopa_it"]) == lls(ours)
    assert n_hooks(model) == 0


@hooked_only
def test_hooked_generation_task_runs(model, zero_items):
    from tl_langneurons.tasks import evaluate_tasks

    got = evaluate_tasks(model, ["xquad_de"], interventions={"zero": zero_items}, control=None,
                         sources={"xquad_de": SOURCES["xquad_de"]}, task_config=SHORT_GEN, progress=False)
    assert {"exact_match", "f1"} <= set(got.frame.metric)
    assert set(got.frame.n) == {expected_n("xquad_de")}
    answers = [s["resps"][0][0] for s in got.samples[("baseline", None)]["xquad_de"]]
    assert all(isinstance(a, str) and "\n" not in a for a in answers)
    assert n_hooks(model) == 0
