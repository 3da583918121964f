"""The argument parser: every command, its options and their help."""

import argparse

from ..errors import LangNeuronsError
from ..intervene.modes import ZERO, get_mode, mode_names, modes_help
from ..units import site_help
from .compare import add_compare_parser
from .find import cmd_analyze, cmd_bench, cmd_browse, cmd_demo, cmd_identify, cmd_models, cmd_plot, cmd_record
from .lens import add_lens_parser
from .measure import cmd_diffmean, cmd_lss, cmd_ppl, cmd_steer, cmd_tasks
from .steerbench import add_parser as add_steer_bench
from .tune import cmd_finetune

class _Formatter(argparse.HelpFormatter):
    """Help that states every default as its value: argparse's own default (``%(default)s``), or,
    for an option whose ``None`` means "the library's default", that value, read from the library
    only when help is shown (:func:`shows_default`); never when the help text already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.required or not action.option_strings:
            return text
        shown = getattr(action, "shown_default", None)
        if shown is not None:
            return f"{text} (default: {shown()})".replace("%", "%%")
        if action.default in (None, False, True, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error: raised, printed by
    :func:`main`, exit status 2 (argparse would print the whole usage block first); a mistyped
    command, choice or option gets "did you mean"."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise LangNeuronsError(f"{message} (see '{self.prog} --help')")

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            what = ("command" if isinstance(action, argparse._SubParsersAction)
                    else "/".join(action.option_strings) or action.metavar or action.dest)
            allowed = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(None, f"unknown {what} {value!r}{did_you_mean(value, action.choices)}; "
                                               f"allowed: {allowed}")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for x in extras:  # this (sub)parser's options are the ones a mistyped one was meant to be
            if x.startswith("--"):
                options = [o for o in self._option_string_actions if o.startswith("--")]
                hint = did_you_mean(x.split("=")[0], options)
                if hint:
                    self.error(f"unrecognized option {x}{hint}")
        return namespace, extras


def did_you_mean(value: str, allowed) -> str:
    """``" (did you mean 'x'?)"`` for the closest allowed value, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def shows_default(action, value) -> None:
    """Show ``value()`` as the default of an option whose ``None`` default means "the library's"
    (read when help is shown, so that parsing imports nothing)."""
    action.shown_default = value


def _top_context_default() -> str:
    from ..examples import DEFAULT_CONTEXT

    return ",".join(map(str, DEFAULT_CONTEXT))


def _needing_stats(names, sep: str = " and ") -> str:
    """Those of the modes ``names`` that write a statistic (need --stats), for the help."""
    return sep.join(n for n in names if get_mode(n).needs_stats) or "none of them"


def identify_methods(c) -> None:
    """``--method`` and each registered method's options (:mod:`..identify.methods`), one group per
    method; an option two methods share is listed under the first, its help naming both."""
    from ..identify.methods import METHODS, STATISTICS_NEEDED

    c.add_argument("--method", required=True, choices=list(METHODS),
                   help="; ".join(f"{m.name}: {m.help}" + "".join(f" (needs {STATISTICS_NEEDED[n][2]} statistics)"
                                                                  for n in m.needs)
                                  for m in METHODS.values()))
    seen: set[str] = set()
    for m in METHODS.values():
        g = c.add_argument_group(m.name + (" (give exactly one)" if m.exactly_one else ""))
        for o in m.options:
            if o.name in seen:
                continue
            seen.add(o.name)
            owners = [x for x in METHODS.values() if any(p.name == o.name for p in x.options)]
            text = o.help + (f" (--method {', '.join(x.name for x in owners)})" if len(owners) > 1 else "")
            if o.type is bool:
                action = g.add_argument(o.flag, action="store_true", default=None, help=text)
            else:
                action = g.add_argument(o.flag, type=o.type if o.type in (int, float) else str, default=None,
                                        choices=o.choices, help=text)
            defaults = {x.name: x.default(o.name) for x in owners}
            if any(v is not None and v is not False for v in defaults.values()):
                shown = (f"{next(iter(defaults.values()))}" if len(set(map(repr, defaults.values()))) == 1
                         else "; ".join(f"{k} {v}" for k, v in defaults.items()))
                shows_default(action, lambda shown=shown: shown)


def placement_options(c) -> None:
    c.add_argument("--device", default=None, help="the device of the whole model, e.g. cuda or cuda:1 (default cpu)")
    c.add_argument("--device-map", default=None,
                   help="instead of --device, dispatch one copy of the model over several devices (a model too large "
                        "for one): auto, balanced, balanced_low_0, sequential, or a JSON object {module: device} "
                        "inline or in a file")
    c.add_argument("--max-memory", default=None, help='with --device-map: a JSON object of the most each device may '
                   'hold, e.g. {"0": "70GiB", "1": "70GiB"}')
    c.add_argument("--offload-folder", default=None, help="with --device-map: where weights mapped to disk are written")


def contract_options(c, resume: bool = True) -> None:
    """--overwrite / --resume of a command writing --out (docs/outputs.md)."""
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out whole (its old files are "
                   "removed when the new result is complete), or discard an interrupted run")
    if resume:
        c.add_argument("--resume", action="store_true", help="continue an interrupted run into --out from its last "
                       "completed unit of work; refused if the inputs or options changed")


def library(name: str):
    """A default of :mod:`tl_langneurons.evaluate` (``DEFAULT_MODE``...)."""
    from .. import evaluate

    return getattr(evaluate, name)


def signature_default(function: str, parameter: str):
    """The default of ``parameter`` of :mod:`tl_langneurons.evaluate`'s ``function``."""
    import inspect

    return inspect.signature(library(function)).parameters[parameter].default


def generation_default(name: str):
    return getattr(library("DEFAULT_GENERATION"), name)


def _pipeline():
    from .. import pipeline

    return pipeline


def plan_default(field: str) -> str:
    """A demo setting's value in each model's plan: ``builtin 300, gemma-3-270m 100``."""
    def show(v):
        if isinstance(v, tuple):
            return ",".join(x if isinstance(x, str) else f"{x:g}" for x in v) or "none"
        return f"{v:g}"

    return "; ".join(f"{m} {show(getattr(plan, field))}" for m, plan in _pipeline().DEMO_PLANS.items())


def dtype_option(c) -> None:
    c.add_argument("--dtype", default="float32", help="the weights' dtype: float32, bfloat16 or float16")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tl-langneurons", description="Language-specific neurons in multilingual LMs.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("record", help="record per-language neuron statistics")
    r.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory")
    r.add_argument("--corpus", default="builtin", help="'builtin', a folder of <lang>.txt, or hf:NAME[:CONFIG][:SPLIT]")
    r.add_argument("--split", default=None, help="built-in corpus split (train/stats/eval/parallel); default stats")
    r.add_argument("--languages", default=None, help="comma-separated language codes (default: all)")
    r.add_argument("--site", default="act", help="where units are read (docs/methods.md#sites, docs/units.md): "
                   + site_help())
    r.add_argument("--max-sentences", type=int, default=None, help="the first N sentences of each language "
                   "(default: all)")
    r.add_argument("--batch-size", type=int, default=32, help="sentences (or packed windows) per forward pass")
    placement_options(r)
    dtype_option(r)
    r.add_argument("--sentence-means", action="store_true", help="keep each sentence's mean activation")
    r.add_argument("--bos-in-sentence-means", action="store_true",
                   help="count BOS in each sentence's mean, as Kojima et al. did (implies --sentence-means)")
    r.add_argument("--histograms", action="store_true", help="keep per-neuron histograms (quantiles)")
    r.add_argument("--pack", type=int, default=None, help="pack sentences into windows of N tokens")
    r.add_argument("--top-examples", type=int, default=None, metavar="K",
                   help="also keep each unit's K top-activating tokens per language, with their sentence, position "
                        "and context (for 'browse'); memory K x units x languages x 68 bytes, not growing with the corpus")
    r.add_argument("--top-units", default=None, help="with --top-examples: only the units of this neurons.json "
                   "(the union of its languages' sets) instead of every unit")
    shows_default(r.add_argument("--top-context", default=None, help="with --top-examples: tokens of activation "
                                 "context kept before,after each example"), _top_context_default)
    r.add_argument("--checkpoint-every", type=int, default=50, help="batches between checkpoints")
    r.add_argument("--plnd", action="store_true", help="also record PLND importance |post_j| x ||W_down[:, j]|| "
                   "(Zhao et al. 2024), read at hook_post whatever --site is")
    r.add_argument("--plnd-top-rate", type=float, default=0.14, help="with --plnd: the share of each layer's "
                   "neurons counted as activated by a document (0.14)")
    r.add_argument("--out", required=True, help="directory the statistics are written to (and a --resume reads)")
    contract_options(r)
    r.set_defaults(func=cmd_record)

    i = sub.add_parser("identify", help="find language-specific neurons in recorded statistics",
                       description="Find language-specific neurons in recorded statistics with a registered method. "
                                   "Each option belongs to the method it is listed under; the defaults are the papers'.")
    i.add_argument("--stats", required=True, help="directory written by 'record'")
    identify_methods(i)
    i.add_argument("--out", required=True, help="neurons.json to write (or a directory to write it in)")
    contract_options(i, resume=False)
    i.set_defaults(func=cmd_identify)

    for name, func, what in (("analyze", cmd_analyze, "CSV tables and summary.json (with the relatedness tests)"),
                             ("plot", cmd_plot, "figures as PNG and PDF")):
        a = sub.add_parser(name, help=f"{what} of a neuron set")
        a.add_argument("--neurons", required=True, help="neurons.json written by 'identify'")
        a.add_argument("--stats", default=None, help="the statistics the neurons came from (optional; "
                       + ("adds the activation probability of each set" if name == "analyze"
                          else "adds the entropy distribution") + ")")
        a.add_argument("--metric", default="jaccard",
                       help="overlap measure: jaccard, overlap_coefficient or intersection")
        if name == "analyze":
            a.add_argument("--permutations", type=int, default=10000, help="permutations of the relatedness tests")
            a.add_argument("--seed", type=int, default=0, help="seeds the permutations")
        a.add_argument("--out", required=True, help="output directory")
        contract_options(a, resume=False)
        a.set_defaults(func=func)

    w = sub.add_parser("browse", help="a static HTML neuron browser (opens from disk)",
                       description="Write a self-contained static site: an index of the neurons (sortable, "
                                   "filterable by language, layer, specificity) and, per neuron, its top-activating "
                                   "examples in every language (record with --top-examples), its activation "
                                   "probability across languages, its histograms (record with --histograms) and its "
                                   "language's ΔNLL (--ppl). Open OUT/index.html in a browser.")
    w.add_argument("--stats", required=True, help="directory written by 'record' (ideally with --top-examples)")
    w.add_argument("--neurons", required=True, help="neurons.json written by 'identify'")
    w.add_argument("--ppl", default=None, help="ppl.csv written by 'ppl' (or its folder): each neuron's page shows "
                   "its language's ΔNLL")
    w.add_argument("--title", default=None, help="the site's title (default: 'Language neurons of MODEL')")
    w.add_argument("--max-neurons", type=int, default=None, help="pages for at most N neurons, the most specific "
                   "first (default all)")
    w.add_argument("--out", required=True, help="output directory (index.html and neurons/)")
    w.set_defaults(func=cmd_browse)

    def run_options(c, control: str, seed: str) -> None:
        placement_options(c)
        dtype_option(c)
        c.add_argument("--control", default="random", choices=["random", "none"], help=control)
        c.add_argument("--seed", type=int, default=0, help=seed)

    def model_options(c) -> None:
        c.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory "
                       "(the one the neurons were found on; loaded at the neurons' site)")
        c.add_argument("--neurons", required=True, help="neurons.json written by 'identify'")
        run_options(c, "random (default): the same intervention on random neurons of the same layer profile",
                    "seeds the random control (and sampling)")

    def steer_options(c) -> None:
        steering = mode_names(steers=True)
        c.add_argument("--stats", default=None, help="statistics at the neurons' site ('record'); needed by "
                       f"--mode {_needing_stats(steering)}, which write a statistic of the target language")
        shows_default(c.add_argument("--mode", default=None, choices=steering, help=modes_help(steering)),
                      lambda: library("DEFAULT_MODE"))
        shows_default(c.add_argument("--factor", type=float, default=None, help="the factor of --mode"),
                      lambda: f"{library('DEFAULT_FACTOR'):g}")
        shows_default(c.add_argument("--statistic", default=None, help="mean (over tokens), median/max/min (of "
                                     "sentence means, needs --sentence-means statistics) or q0.9"),
                      lambda: library("DEFAULT_STATISTIC"))
        c.add_argument("--positions", default=None, help="all (default), prompt, generated, last, or a comma-"
                       "separated list of positions")

    def generation_options(c, sweep: str) -> None:
        """Prompts and decoding of steer/diffmean; ``sweep`` names the library function whose
        defaults apply to the options not given."""
        c.add_argument("--prompts", default=None, help="a UTF-8 file with one prompt per line (an empty line = BOS "
                       "only); default: neutral prompts from the built-in parallel split in the other languages")
        c.add_argument("--bos-only", action="store_true", help="generate from BOS alone (unconditional, the "
                       "neutral prompt of the built-in model's steering figures); --n-samples generations per target")
        c.add_argument("--source", default=None, help="languages of the default prompts, comma-separated "
                       "(default: every language but the target, in turn)")
        for opt, name, text in (("--n-prompts", "n_prompts", "prompts per target from the built-in parallel split"),
                                ("--n-samples", "n_samples", "continuations per prompt (one with --greedy)"),
                                ("--batch-size", "batch_size", "generations per generate call")):
            shows_default(c.add_argument(opt, type=int, default=None, help=text),
                          lambda name=name: signature_default(sweep, name))
        for opt, name, typ, text in (("--max-new-tokens", "max_new_tokens", int, "tokens generated per continuation"),
                                     ("--temperature", "temperature", float, "sampling temperature (> 0)"),
                                     ("--top-k", "top_k", int, "sample from the k most likely tokens"),
                                     ("--repetition-penalty", "repetition_penalty", float,
                                      "Hugging Face's repetition penalty (1 = none)")):
            shows_default(c.add_argument(opt, type=typ, default=None, help=text),
                          lambda name=name: generation_default(name))
        c.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling (--temperature "
                       "and --top-k unused)")
        c.add_argument("--fluency-sentences", type=int, default=60,
                       help="held-out built-in 'eval' sentences per language that set the fluency thresholds "
                            "(the fluent target-language rate); 0 = no thresholds, only each generation's NLL and "
                            "repetition")

    def measurement(name: str, func, **texts) -> argparse.ArgumentParser:
        """A measurement command: it writes into --out."""
        c = sub.add_parser(name, **texts)
        c.add_argument("--out", required=True, help="output directory")
        contract_options(c)
        c.set_defaults(func=func)
        return c

    c = measurement("ppl", cmd_ppl, help="perplexity change when each language's neurons are switched off",
                       description="Tang et al.'s deactivation matrix: zero each language's neurons and measure "
                                   "every language's NLL on the same held-out tokens, with a random-neuron control. "
                                   "Writes ppl.csv, summary.json and the ppl_change figure.")
    model_options(c)
    c.add_argument("--corpus", default="builtin", help="'builtin', a folder of <lang>.txt, or hf:NAME[:CONFIG][:SPLIT]")
    c.add_argument("--split", default=None, help="built-in corpus split; default eval (held out)")
    c.add_argument("--languages", default=None, help="evaluated languages, comma-separated (default: the "
                   "neuron set's languages the corpus has); each of them in the set is also switched off")
    c.add_argument("--max-sentences", type=int, default=None, help="the first N sentences of each language")
    c.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass")

    c = measurement("steer", cmd_steer, help="generate under an intervention and identify the output language",
                       description="Steer generation towards a target language by intervening on its neurons; "
                                   "the same prompts are also generated without intervention and under the random "
                                   "control, with the same seed. Writes steer.csv, summary.json and, for a "
                                   "--factors sweep, the steer_rate_vs_factor figure. Each option's default is the library's "
                                   "(tl_langneurons.evaluate).")
    model_options(c)
    c.add_argument("--target", required=True, help="language to steer towards; a comma-separated list or 'all'")
    steer_options(c)
    c.add_argument("--factors", default=None, help="a sweep over factors instead of --factor, e.g. 4,16,64")
    generation_options(c, "steer_sweep")

    c = measurement("diffmean", cmd_diffmean, help="steer with a residual difference-of-means direction (the baseline)",
                       description="The baseline neuron steering is compared with: add beta x (the target's mean "
                                   "residual - the other languages') after block --layer, read from --corpus; the same "
                                   "prompts are also generated without it and with a random direction of the same "
                                   "norm, with the same seed. Writes steer.csv, summary.json and, for several "
                                   "--betas, the steer_rate_vs_factor figure over beta.")
    c.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory")
    c.add_argument("--corpus", default="builtin", help="text the directions are read from: 'builtin', a folder of "
                   "<lang>.txt, or hf:NAME[:CONFIG][:SPLIT]")
    c.add_argument("--split", default=None, help="built-in corpus split; default stats (the neurons' text)")
    c.add_argument("--languages", default=None, help="languages of the corpus, comma-separated (default: all); "
                   "a target's direction is taken against all the others")
    c.add_argument("--max-sentences", type=int, default=None, help="the first N sentences of each language")
    c.add_argument("--target", required=True, help="language to steer towards; a comma-separated list or 'all'")
    c.add_argument("--layer", type=int, required=True, help="block after which the direction is added")
    c.add_argument("--betas", default="2", help="strengths beta, comma-separated")
    c.add_argument("--positions", default=None, help="all (default), prompt, generated, last, or positions")
    run_options(c, "random (default): a random direction of the same norm", "seeds the random direction and sampling")
    generation_options(c, "diffmean_sweep")

    c = measurement("lss", cmd_lss, help="Language Steering Shift on parallel facts (Rahmanisa et al. 2025)",
                       description="Per fact with its prompt in --source: does the intervention on --target's "
                                   "neurons raise log P(object in target) - log P(object in source)? Writes lss.csv "
                                   "and summary.json.")
    model_options(c)
    c.add_argument("--source", required=True, help="language of the prompts")
    c.add_argument("--target", required=True, help="language whose neurons are amplified")
    c.add_argument("--facts", default=None, help="a facts JSON file (format tl_langneurons.facts/1); "
                   "default: the bundled fixture (en, de, fr, es, ru)")
    steer_options(c)
    shows_default(c.add_argument("--batch-size", type=int, default=None, help="facts per forward pass"),
                  lambda: signature_default("lss", "batch_size"))

    c = measurement("tasks", cmd_tasks, help="lm-eval tasks under interventions (XCOPA, XNLI, ..., the built-in tlln_*)",
                    description="Score lm-eval tasks without intervention, with each --target language's neurons "
                                "intervened on (at every position of every request), and under the random control, "
                                "on the same documents. Writes tasks.csv, summary.json, lm-eval's per-sample log "
                                "(samples/) and the tasks_change figure. Needs the [tasks] extra.")
    c.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory")
    c.add_argument("--tasks", required=True, help="comma-separated lm-eval task or group names, e.g. "
                   "xcopa_it,xnli_de or the built-in tlln_cloze_de,tlln_translate_en_de")
    c.add_argument("--neurons", default=None, help="neurons.json written by 'identify' (without it: baseline only)")
    c.add_argument("--target", default=None, help="whose neurons to intervene on: a language, a comma-separated "
                   "list or 'all'")
    under_tasks = mode_names(tasks=True)
    c.add_argument("--mode", default=ZERO.name, choices=under_tasks, help=modes_help(under_tasks))
    c.add_argument("--factor", type=float, default=None, help="the factor of "
                   + "/".join(n for n in under_tasks if "factor" in get_mode(n).takes))
    c.add_argument("--stats", default=None, help=f"statistics at the neurons' site; needed by --mode "
                   f"{_needing_stats(under_tasks)}")
    c.add_argument("--statistic", default="mean", help=f"which statistic {_needing_stats(under_tasks, '/')} write")
    c.add_argument("--limit", type=int, default=None, help="the first N documents of each task")
    c.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    c.add_argument("--batch-size", type=int, default=8, help="requests per forward pass")
    c.add_argument("--sources", default=None, help='local data for tasks, a JSON object inline or in a file: '
                   '{"xcopa_it": {"test": "xcopa_it.jsonl"}} (the task definition stays lm-eval\'s)')
    c.add_argument("--include-path", default=None, help="a folder of further lm-eval task YAML files")
    c.add_argument("--metric", default=None, help="the metric of the summary and figure (default: each task's "
                   "headline metric: acc, chrf, exact_match, ...)")
    run_options(c, "random (default): the same intervention on random neurons of the same layer profile",
                "seeds the random control")

    c = measurement("finetune", cmd_finetune, help="neuron-restricted fine-tuning with its controls, and transfer",
                    description="Train LoRA restricted to a language's neurons (masked-lora, Mondal et al. 2025) or "
                                "those neurons' rows/columns (selected-rows, Gurgurov et al. 2025), with the controls "
                                "(the same method on random neurons with the same count per layer, attention-only "
                                "LoRA, unmasked LoRA) on by default. Writes each run's adapter (adapter.safetensors, "
                                "adapter.json, peft/) into DIR/<run>/ and the loss figure; with --merged a Hugging "
                                "Face model folder DIR/<run>/merged/; with --eval-tasks the transfer table "
                                "(transfer.csv, summary.json, the transfer figure): every task scored on each "
                                "fine-tuned model against the base model on the same documents.")
    c.add_argument("--model", default="builtin", help="'builtin', gemma-3-270m, a hub id or a local model directory "
                   "(the one the neurons were found on)")
    c.add_argument("--neurons", required=True, help="neurons.json written by 'identify'")
    c.add_argument("--language", required=True, help="whose neurons the update is restricted to (a comma-separated "
                   "list: their union)")
    c.add_argument("--method", default="masked-lora", help="masked-lora, selected-rows, attention-only "
                   "or full-lora")
    c.add_argument("--random-control", action="store_true", help="train --method on random neurons (same count "
                   "per layer) instead of the language's")
    c.add_argument("--controls", default="random,attention-only,full-lora", help="the control runs, comma-separated "
                   "(random, attention-only, full-lora), or none")
    c.add_argument("--train", required=True, help="training data: an lm-eval task name (its train split, e.g. "
                   "tlln_cloze_en) or text:<lang> (the built-in corpus's train sentences, causal LM)")
    c.add_argument("--train-limit", type=int, default=None, help="the first N training examples")
    c.add_argument("--matrices", default=None, help="MLP projections updated, comma-separated (default: gate_proj "
                   "for the LoRA methods, gate_proj,up_proj,down_proj for selected-rows)")
    c.add_argument("--no-attention", action="store_true", help="masked-lora/full-lora without the attention LoRA")
    c.add_argument("--r", type=int, default=8, help="LoRA rank")
    c.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha")
    c.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    c.add_argument("--epochs", type=int, default=1, help="passes over the training examples")
    c.add_argument("--batch-size", type=int, default=8, help="training batch size")
    c.add_argument("--max-length", type=int, default=128, help="tokens per training example")
    c.add_argument("--merged", action="store_true", help="also write each run's merged model folder")
    c.add_argument("--eval-tasks", default=None, help="lm-eval tasks scored on the base and every fine-tuned model "
                   "(e.g. tlln_cloze_en,tlln_cloze_de,...): the transfer table")
    c.add_argument("--eval-limit", type=int, default=None, help="documents per evaluation task")
    c.add_argument("--eval-batch-size", type=int, default=8, help="requests per forward pass of the evaluation")
    c.add_argument("--metric", default="acc", help="metric of the transfer summary and figure")
    dtype_option(c)
    c.add_argument("--seed", type=int, default=0, help="seeds LoRA's initialisation, the example order and the "
                   "random mask")
    c.add_argument("--checkpoint-every", type=int, default=10, help="optimizer steps between the training "
                   "checkpoints --resume continues from (10)")
    placement_options(c)

    add_lens_parser(sub, placement_options)
    add_compare_parser(sub, placement_options)
    add_steer_bench(sub, placement_options)

    m = sub.add_parser("models", help="list the built-in models")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="benchmarks that print their figures")
    b.add_argument("what", metavar="benchmark", choices=["record", "identify", "steer", "hash", "gpu"],
                   help="record: recorder vs bare forward pass; identify: LAPE on a 21 x 80 x 28,672 table, "
                        "AP on 200,000 units x 3,000 sentences, AP vs scikit-learn; steer: generation under "
                        "the default steering intervention on LAPE neurons vs without; hash: the full weights "
                        "hash on 2^28 bf16 parameters, extrapolated to an 8B model; gpu: recording, steered "
                        "generation and the perplexity matrix vs plain Hugging Face on a random "
                        "Llama-3.1-8B-shaped model in bfloat16 (tl_langneurons.bench_gpu)")
    b.add_argument("--json", action="store_true", help="print the result as one line of JSON")
    b.add_argument("--model", default="builtin", help="the model of record and steer")
    b.add_argument("--max-sentences", type=int, default=None,
                   help="record: sentences per language timed (200); steer: per language of the statistics (100)")
    b.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass (record only)")
    b.add_argument("--repeats", type=int, default=None, help="record (3) and steer (5)")
    b.add_argument("--target", default="de", help="the steering target (steer only)")
    b.add_argument("--shape", default="llama-3.1-8b", choices=["llama-3.1-8b", "tiny"],
                   help="the model shape of gpu (tiny: a 2-layer model of the same family, for a CPU)")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="run the pipeline on a built-in model and the built-in corpus",
                       description="Record, LAPE, analysis, figures, perplexity matrix, neuron and diffmean steering "
                                   "with fluency, and a one-page report. Sizes and settings default to the model's "
                                   "plan (pipeline.DEMO_PLANS: builtin about 5 minutes, gemma-3-270m about 15 "
                                   "on 2 CPU cores); each option below overrides one.")
    d.add_argument("--model", default="builtin", help="builtin or gemma-3-270m")
    d.add_argument("--out", default="demo_out", help="directory everything is written to (the report: "
                   "OUT/report.md)")
    contract_options(d)
    shows_default(d.add_argument("--languages", default=None, help="languages of the built-in corpus, "
                                 "comma-separated"), lambda: ",".join(_pipeline().DEMO_LANGUAGES))
    for opt, field, text in (("--max-sentences", "max_sentences", "sentences per language to record"),
                             ("--eval-sentences", "eval_sentences", "held-out sentences per language for the "
                              "perplexity matrix"),
                             ("--top-rate", "top_rate", "LAPE top rate"),
                             ("--factors", "factors", "steering factors (set to factor x the mean activation), "
                              "comma-separated"),
                             ("--diffmean-layer", "diffmean_layer", "block after which the diffmean direction is "
                              "added"),
                             ("--betas", "betas", "diffmean strengths beta, comma-separated"),
                             ("--n-samples", "n_samples", "steering: generations per language, factor and "
                              "condition"),
                             ("--bench-targets", "bench_targets", "the steering benchmark's targets, comma-separated "
                              "('none' skips it; it runs only with the steerbench extra installed)"),
                             ("--bench-tune", "bench_tune", "the steering benchmark's tuning prompts per target"),
                             ("--bench-eval", "bench_eval", "the steering benchmark's evaluation prompts per target"),
                             ("--calibration-pairs", "calibration_pairs", "translation pairs per language calibrating "
                              "the benchmark's relevance judge")):
        typ = {"max_sentences": int, "eval_sentences": int, "diffmean_layer": int, "n_samples": int,
               "top_rate": float, "bench_tune": int, "bench_eval": int, "calibration_pairs": int}.get(field, str)
        shows_default(d.add_argument(opt, type=typ, default=None, help=text), lambda field=field: plan_default(field))
    d.set_defaults(func=cmd_demo)
    return p

