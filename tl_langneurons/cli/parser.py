"""The argument parser: every command, its options and their help."""

import argparse

from ..errors import LangNeuronsError
from ..units import site_help
from .find import METHOD_OPTIONS, cmd_analyze, cmd_bench, cmd_demo, cmd_identify, cmd_models, cmd_plot, cmd_record
from .measure import cmd_diffmean, cmd_lss, cmd_ppl, cmd_steer, cmd_tasks
from .tune import cmd_finetune

class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error: raised, printed by
    :func:`main`, exit status 2 (argparse would print the whole usage block first)."""

    def error(self, message):
        raise LangNeuronsError(f"{message} (see '{self.prog} --help')")



def placement_options(c) -> None:
    c.add_argument("--device", default=None, help="the device of the whole model (default cpu)")
    c.add_argument("--device-map", default=None,
                   help="instead of --device, dispatch one copy of the model over several devices (a model too large "
                        "for one): auto, balanced, balanced_low_0, sequential, or a JSON object {module: device} "
                        "inline or in a file")
    c.add_argument("--max-memory", default=None, help='with --device-map: a JSON object of the most each device may '
                   'hold, e.g. {"0": "70GiB", "1": "70GiB"}')
    c.add_argument("--offload-folder", default=None, help="with --device-map: where weights mapped to disk are written")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tl-langneurons", description="Language-specific neurons in multilingual LMs.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("record", help="record per-language neuron statistics")
    r.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory")
    r.add_argument("--corpus", default="builtin", help="'builtin', a folder of <lang>.txt, or hf:NAME[:CONFIG][:SPLIT]")
    r.add_argument("--split", default=None, help="built-in corpus split (train/stats/eval/parallel); default stats")
    r.add_argument("--languages", default=None, help="comma-separated language codes (default: all)")
    r.add_argument("--site", default="act", help="where units are read (default act): " + site_help())
    r.add_argument("--max-sentences", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=32)
    placement_options(r)
    r.add_argument("--dtype", default="float32")
    r.add_argument("--sentence-means", action="store_true", help="keep each sentence's mean activation")
    r.add_argument("--bos-in-sentence-means", action="store_true",
                   help="count BOS in each sentence's mean, as Kojima et al. did (implies --sentence-means)")
    r.add_argument("--histograms", action="store_true", help="keep per-neuron histograms (quantiles)")
    r.add_argument("--pack", type=int, default=None, help="pack sentences into windows of N tokens")
    r.add_argument("--checkpoint-every", type=int, default=50, help="batches between checkpoints")
    r.add_argument("--resume", action="store_true", help="continue an interrupted recording in --out")
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_record)

    i = sub.add_parser("identify", help="find language-specific neurons in recorded statistics",
                       description="Find language-specific neurons in recorded statistics. Each method option "
                                   "belongs to one method; the defaults are the papers'.")
    i.add_argument("--stats", required=True, help="directory written by 'record'")
    i.add_argument("--method", required=True, choices=list(METHOD_OPTIONS),
                   help="lape (Tang et al. 2024), ap (Kojima et al. 2024; needs --sentence-means "
                        "statistics) or threshold (non-contrastive baseline)")
    i.add_argument("--out", required=True, help="neurons.json to write (or a directory to write it in)")
    g = i.add_argument_group("lape")
    g.add_argument("--top-rate", type=float, default=None, help="share of all neurons kept (default 0.01)")
    g.add_argument("--filter-rate", type=float, default=None, help="quantile of p for the eligibility threshold (0.95)")
    g.add_argument("--activation-bar-ratio", type=float, default=None,
                   help="quantile of p a language must exceed to own a neuron (0.95)")
    g.add_argument("--normalize-entropy", action="store_true", default=None, help="divide the entropy by log K")
    g.add_argument("--per-layer", action="store_true", default=None, help="keep top-rate of each layer")
    g = i.add_argument_group("ap")
    g.add_argument("--n", type=int, default=None, help="units per language, half top and half bottom (2000)")
    g.add_argument("--n-positive", type=int, default=None, help="sentences of the language (500)")
    g.add_argument("--n-negative", type=int, default=None, help="sentences of the other languages together (2500)")
    g.add_argument("--languages", default=None, help="comma-separated languages to find units for (default: all)")
    g = i.add_argument_group("threshold (give exactly one)")
    g.add_argument("--top-m", type=int, default=None, help="each language's m neurons of highest p (Mondal et al.)")
    g.add_argument("--min-probability", type=float, default=None, help="each language's neurons with p >= this")
    g.add_argument("--all-sentences", action="store_true", default=None,
                   help="neurons whose sentence mean is > 0 in every sentence (Rahmanisa et al.)")
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
            a.add_argument("--seed", type=int, default=0)
        a.add_argument("--out", required=True, help="output directory")
        a.set_defaults(func=func)

    def run_options(c, control: str, seed: str) -> None:
        placement_options(c)
        c.add_argument("--dtype", default="float32")
        c.add_argument("--control", default="random", choices=["random", "none"], help=control)
        c.add_argument("--seed", type=int, default=0, help=seed)

    def model_options(c) -> None:
        c.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory "
                       "(the one the neurons were found on; loaded at the neurons' site)")
        c.add_argument("--neurons", required=True, help="neurons.json written by 'identify'")
        run_options(c, "random (default): the same intervention on random neurons of the same layer profile",
                    "seeds the random control (and sampling)")

    def steer_options(c) -> None:
        c.add_argument("--stats", default=None, help="statistics at the neurons' site ('record'); needed by "
                       "--mode set and add, which write a statistic of the target language")
        c.add_argument("--mode", default=None, help="set (a := factor x statistic), scale (a := factor x a) or add "
                       "(a := a + factor x statistic); default: the library's DEFAULT_MODE")
        c.add_argument("--factor", type=float, default=None, help="default: the library's DEFAULT_FACTOR")
        c.add_argument("--statistic", default=None, help="mean (over tokens), median/max/min (of sentence means, "
                       "needs --sentence-means statistics) or q0.9; default: the library's DEFAULT_STATISTIC")
        c.add_argument("--positions", default=None, help="all (default), prompt, generated, last, or a comma-"
                       "separated list of positions")

    def generation_options(c) -> None:
        c.add_argument("--prompts", default=None, help="a UTF-8 file with one prompt per line (an empty line = BOS "
                       "only); default: neutral prompts from the built-in parallel split in the other languages")
        c.add_argument("--bos-only", action="store_true", help="generate from BOS alone (unconditional, the "
                       "neutral prompt of the built-in model's steering figures); --n-samples generations per target")
        c.add_argument("--source", default=None, help="languages of the default prompts, comma-separated "
                       "(default: every language but the target, in turn)")
        c.add_argument("--n-prompts", type=int, default=None, help="default prompts per target")
        c.add_argument("--n-samples", type=int, default=None, help="continuations per prompt (one with --greedy)")
        c.add_argument("--max-new-tokens", type=int, default=None)
        c.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
        c.add_argument("--temperature", type=float, default=None)
        c.add_argument("--top-k", type=int, default=None)
        c.add_argument("--repetition-penalty", type=float, default=None)
        c.add_argument("--batch-size", type=int, default=None, help="generations per generate call")
        c.add_argument("--fluency-sentences", type=int, default=60,
                       help="held-out built-in 'eval' sentences per language that set the fluency thresholds "
                            "(the fluent target-language rate); 0 = no thresholds, only each generation's NLL and "
                            "repetition (default 60)")

    def measurement(name: str, func, **texts) -> argparse.ArgumentParser:
        """A measurement command: it writes into --out."""
        c = sub.add_parser(name, **texts)
        c.add_argument("--out", required=True, help="output directory")
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
    c.add_argument("--batch-size", type=int, default=16)

    c = measurement("steer", cmd_steer, help="generate under an intervention and identify the output language",
                       description="Steer generation towards a target language by intervening on its neurons; "
                                   "the same prompts are also generated without intervention and under the random "
                                   "control, with the same seed. Writes steer.csv, summary.json and, for a "
                                   "--factors sweep, the steer_rate_vs_factor figure. Defaults are the library's "
                                   "(evaluate.DEFAULT_*).")
    model_options(c)
    c.add_argument("--target", required=True, help="language to steer towards; a comma-separated list or 'all'")
    steer_options(c)
    c.add_argument("--factors", default=None, help="a sweep over factors instead of --factor, e.g. 4,16,64")
    generation_options(c)

    c = measurement("diffmean", cmd_diffmean, help="steer with a residual difference-of-means direction (the baseline)",
                       description="The baseline neuron steering is compared with: add beta x (the target's mean "
                                   "residual - the other languages') after block --layer, read from --corpus; the same "
                                   "prompts are also generated without it and with a random direction of the same "
                                   "norm, with the same seed. Writes steer.csv, summary.json and, for several "
                                   "--betas, the steer_rate_vs_factor figure (factor = beta).")
    c.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory")
    c.add_argument("--corpus", default="builtin", help="text the directions are read from: 'builtin', a folder of "
                   "<lang>.txt, or hf:NAME[:CONFIG][:SPLIT]")
    c.add_argument("--split", default=None, help="built-in corpus split; default stats (the neurons' text)")
    c.add_argument("--languages", default=None, help="languages of the corpus, comma-separated (default: all); "
                   "a target's direction is taken against all the others")
    c.add_argument("--max-sentences", type=int, default=None, help="the first N sentences of each language")
    c.add_argument("--target", required=True, help="language to steer towards; a comma-separated list or 'all'")
    c.add_argument("--layer", type=int, required=True, help="block after which the direction is added")
    c.add_argument("--betas", default="2", help="strengths, comma-separated (default 2)")
    c.add_argument("--positions", default=None, help="all (default), prompt, generated, last, or positions")
    run_options(c, "random (default): a random direction of the same norm", "seeds the random direction and sampling")
    generation_options(c)

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
    c.add_argument("--batch-size", type=int, default=None)

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
    c.add_argument("--mode", default="zero", help="zero (default), set (a := factor x statistic), scale "
                   "(a := factor x a) or add (a := a + factor x statistic)")
    c.add_argument("--factor", type=float, default=None, help="the factor of set/scale/add")
    c.add_argument("--stats", default=None, help="statistics at the neurons' site; needed by --mode set and add")
    c.add_argument("--statistic", default="mean", help="which statistic set/add write (default mean)")
    c.add_argument("--limit", type=int, default=None, help="the first N documents of each task")
    c.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    c.add_argument("--batch-size", type=int, default=8)
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
    c.add_argument("--method", default="masked-lora", help="masked-lora (default), selected-rows, attention-only "
                   "or full-lora")
    c.add_argument("--random-control", action="store_true", help="train --method on random neurons (same count "
                   "per layer) instead of the language's")
    c.add_argument("--controls", default="random,attention-only,full-lora", help="the control runs, comma-separated "
                   "(default all: random, attention-only, full-lora), or none")
    c.add_argument("--train", required=True, help="training data: an lm-eval task name (its train split, e.g. "
                   "tlln_cloze_en) or text:<lang> (the built-in corpus's train sentences, causal LM)")
    c.add_argument("--train-limit", type=int, default=None, help="the first N training examples")
    c.add_argument("--matrices", default=None, help="MLP projections updated, comma-separated (default: gate_proj "
                   "for the LoRA methods, gate_proj,up_proj,down_proj for selected-rows)")
    c.add_argument("--no-attention", action="store_true", help="masked-lora/full-lora without the attention LoRA")
    c.add_argument("--r", type=int, default=8, help="LoRA rank (8)")
    c.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (16)")
    c.add_argument("--lr", type=float, default=1e-4, help="learning rate (1e-4)")
    c.add_argument("--epochs", type=int, default=1)
    c.add_argument("--batch-size", type=int, default=8, help="training batch size")
    c.add_argument("--max-length", type=int, default=128, help="tokens per training example")
    c.add_argument("--merged", action="store_true", help="also write each run's merged model folder")
    c.add_argument("--eval-tasks", default=None, help="lm-eval tasks scored on the base and every fine-tuned model "
                   "(e.g. tlln_cloze_en,tlln_cloze_de,...): the transfer table")
    c.add_argument("--eval-limit", type=int, default=None, help="documents per evaluation task")
    c.add_argument("--eval-batch-size", type=int, default=8)
    c.add_argument("--metric", default="acc", help="metric of the transfer summary and figure (default acc)")
    c.add_argument("--dtype", default="float32")
    c.add_argument("--seed", type=int, default=0, help="seeds LoRA's initialisation, the example order and the "
                   "random mask")
    placement_options(c)

    m = sub.add_parser("models", help="list the built-in models")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="benchmarks that print their figures")
    b.add_argument("what", choices=["record", "identify", "steer", "hash"],
                   help="record: recorder vs bare forward pass; identify: LAPE on a 21 x 80 x 28,672 table, "
                        "AP on 200,000 units x 3,000 sentences, AP vs scikit-learn; steer: generation under "
                        "the default steering intervention on LAPE neurons vs without; hash: the full weights "
                        "hash on 2^28 bf16 parameters, extrapolated to an 8B model")
    b.add_argument("--json", action="store_true")
    b.add_argument("--model", default="builtin", help="record and steer")
    b.add_argument("--max-sentences", type=int, default=None,
                   help="record: sentences per language timed (200); steer: per language of the statistics (100)")
    b.add_argument("--batch-size", type=int, default=32, help="record only")
    b.add_argument("--repeats", type=int, default=None, help="record (3) and steer (5)")
    b.add_argument("--target", default="de", help="steer only")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="run the pipeline on a built-in model and the built-in corpus",
                       description="Record, LAPE, analysis, figures, perplexity matrix, neuron and diffmean steering "
                                   "with fluency, and a one-page report. Sizes and settings default to the model's "
                                   "plan (pipeline.DEMO_PLANS: builtin about 5 minutes, gemma-3-270m about 15 "
                                   "on 2 CPU cores); each option below overrides one.")
    d.add_argument("--model", default="builtin", help="builtin (default) or gemma-3-270m")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--languages", default=None)
    d.add_argument("--max-sentences", type=int, default=None, help="sentences per language to record")
    d.add_argument("--eval-sentences", type=int, default=None,
                   help="held-out sentences per language for the perplexity matrix and the fluency thresholds")
    d.add_argument("--top-rate", type=float, default=None, help="LAPE top rate")
    d.add_argument("--factors", default=None, help="steering factors, comma-separated")
    d.add_argument("--diffmean-layer", type=int, default=None, help="block after which the diffmean direction is added")
    d.add_argument("--betas", default=None, help="diffmean strengths, comma-separated")
    d.add_argument("--n-samples", type=int, default=None, help="steering: generations per language, factor and condition")
    d.set_defaults(func=cmd_demo)
    return p

