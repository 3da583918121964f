"""Steering: generate under an intervention (on a target's neurons, or any the caller builds, or a
residual diffmean direction), identify the continuation's language offline, and compare with no
intervention and a random control on the same prompts and seed (methods page:
[steering by generation](methods.md#steering), [fluency](methods.md#fluency),
[difference-of-means steering](methods.md#diffmean))."""

from dataclasses import replace

import pandas as pd
import torch

from .. import _checks, _smoke
from ..errors import LangNeuronsError, choices
from ..identify import random_like
from ..intervene import DiffMean, Intervention, as_items, check_positions, diffmeans
from ..intervene.modes import SET, get_mode, mode_names
from ..progress import stage
from ..tokens import encode
from .conditions import check_control, check_neurons
from .fluency import FluencyCriterion, fluency_columns
from .generation import GenerationConfig, check_generation, check_lengths, decode, generate_ids, prompt_list
from .intervals import wilson
from .._io import texts_hash
from ..progress import track
from ..resume import content_hash, open_store, run_unit
from .langid import detect

# Defaults of steer(): set the target's neurons to FACTOR × their mean activation on the target
# language (Kojima-style forcing); decoding is GenerationConfig's default. Measured on the
# built-in model with steer_sweep (LAPE on en de fr es ru zh ja ar hi th, 1,000 'stats' sentences
# each; BOS-only prompts; mean target-language rate over the 9 non-English targets; seed 0, 16-32
# generations per target): with the 5% sets, set × {4, 8, 12, 16, 20, 24, 32} gave 8%, 25%, 40%,
# 43–49%, 41%, 46%, 37% and add × 16 41–49%, so set × 16 is the default; the larger 10% sets need
# less. The README ("Steering the built-in model") has the commands of the fresh-seed checks:
# 5% sets at × 16 43%, 10% sets at × 8 52% (baseline 1%, random control 4–6%).
DEFAULT_MODE = SET.name
DEFAULT_FACTOR = 16.0
DEFAULT_STATISTIC = "mean"


def steer_item(neurons, target: str, mode: str, factor, stats, statistic: str) -> Intervention:
    m = get_mode(mode, mode_names(steers=True), "steering mode")
    if m.needs_stats and stats is None:
        free = [n for n in mode_names(steers=True) if not get_mode(n).needs_stats]
        raise LangNeuronsError(f"mode {mode!r} needs stats= (recorded statistics whose {statistic!r} of {target!r} "
                               f"is the value it writes); {choices(free) or 'no mode'} need none")
    given = {"factor": factor, "stats": stats, "statistic": statistic}  # what the mode takes of these
    return Intervention(neurons, mode, language=target,
                        **{k: v for k, v in given.items() if k in m.takes or (k == "statistic" and "stats" in m.takes)})


def check_target(neurons, target) -> str:
    if not isinstance(target, str) or target not in neurons:
        raise LangNeuronsError(f"unknown target language {target!r}; the neuron set has: {choices(neurons.languages)}")
    return target


def _positions_list(positions) -> list:
    if isinstance(positions, str) or positions is None:
        return [check_positions(positions or "all")]
    if isinstance(positions, (list, tuple)) and positions and all(isinstance(p, str) for p in positions):
        return [check_positions(p) for p in positions]
    return [check_positions(positions)]  # a list of absolute positions


def check_fluency(fluency) -> bool | FluencyCriterion:
    if isinstance(fluency, bool) or isinstance(fluency, FluencyCriterion):
        return fluency
    raise LangNeuronsError(f"fluency must be True, False or a FluencyCriterion, got {fluency!r}")


def _decoding(n_samples, batch_size, generation, fluency) -> tuple[int, int, GenerationConfig, bool | FluencyCriterion]:
    """The checked sampling, batching, decoding and fluency arguments of every steering function."""
    n_samples, batch_size = _checks.positive_int("n_samples", n_samples), _checks.positive_int("batch_size", batch_size)
    gen = check_generation(generation)
    if gen.greedy:
        n_samples = 1  # greedy decoding gives one continuation per prompt
    n_samples = _smoke.cap(n_samples, _smoke.SAMPLES)
    gen = replace(gen, max_new_tokens=_smoke.cap(gen.max_new_tokens, _smoke.NEW_TOKENS))
    return n_samples, batch_size, gen, check_fluency(fluency)


def _generations(model, toks, items, positions, gen, batch_size, seed, desc, progress, fluency, store=None,
                 unit: str = "") -> dict[str, list]:
    """Columns of one condition's generations: text, identified language and, unless ``fluency``
    is False, :func:`~.fluency.fluency_columns` — scored with no intervention on, by the model as
    it is outside the intervention (the unsteered model). One unit of work of ``store`` (its
    batches of generations are units too)."""
    if store is not None and unit in store:  # done before an interruption: counted on the stage's bar
        for _ in track([None], desc, progress, "generation", size=lambda _: len(toks)):
            pass

    def compute() -> dict[str, list]:
        ids = generate_ids(model, toks, items, positions if items else "all", gen, batch_size, seed, desc, progress,
                           store=store, unit=unit)
        texts = decode(model, ids)
        cols = {"generation": texts, "detected": detect(texts)}
        if fluency is not False:
            cols.update(fluency_columns(model, toks, ids, batch_size))
        return cols
    return run_unit(store, unit, compute)


def _store(checkpoint, name: str, model, **key):
    """The stage's section of a :class:`~..resume.Checkpointed` store (None without one), keyed by
    the model's weights and every argument of the stage."""
    if checkpoint is None:
        return None
    from ..identity import weights_hash

    return open_store(checkpoint, name, {"model": weights_hash(model), "arguments": content_hash(key)})


def _frame(records: list[dict], fluency) -> pd.DataFrame:
    df = pd.DataFrame(records)
    if isinstance(fluency, FluencyCriterion):
        df["fluent"] = fluency.fluent(df)
    return df


def steer_sweep(model, neurons, targets, factors, modes=(DEFAULT_MODE,), prompts=None,
                stats=None, statistic: str = DEFAULT_STATISTIC, n_samples: int = 4,
                generation: GenerationConfig | None = None, seed: int = 0, control: str | None = "random",
                positions="all", *, source=None, n_prompts: int = 16, prompt_words: int = 3,
                batch_size: int = 64, fluency=True, progress: bool = True, checkpoint=None) -> pd.DataFrame:
    """:func:`steer` over a grid of targets × modes × factors (× positions, if a list of names).

    The baseline generations (no intervention) of a target do not depend on the mode or factor,
    so they are generated once per target and repeated under every grid cell of that target.
    With ``checkpoint`` (a :class:`~..resume.Checkpointed` store) each condition of each target
    and cell, and each batch of its generations, is a unit of work: a killed sweep resumes from
    the last one completed and equals the uninterrupted sweep bit for bit.
    """
    neurons = check_neurons(neurons)
    check_control(control)
    targets = [targets] if isinstance(targets, str) else list(targets)
    for t in targets:
        check_target(neurons, t)
    modes = [modes] if isinstance(modes, str) else list(modes)
    if not targets or not modes:
        raise LangNeuronsError("targets and modes must each hold at least one value")
    factors = _checks.numbers_list("factor", factors)
    pos_list = _positions_list(positions)
    n_samples, batch_size, gen, fluency = _decoding(n_samples, batch_size, generation, fluency)
    ctrl_all = random_like(neurons.select(targets), seed) if control == "random" else None
    # build every intervention before generating anything: a bad argument fails fast
    cells = [(m, f, p) for m in modes for f in factors for p in pos_list]
    plan = {t: {c: (steer_item(neurons, t, c[0], c[1], stats, statistic),
                    steer_item(ctrl_all, t, c[0], c[1], stats, statistic) if ctrl_all is not None else None)
                for c in cells} for t in targets}

    plists = {t: prompt_list(prompts, t, n_prompts, prompt_words, source, seed) for t in targets}
    for t in targets:  # every prompt checked against the context before anything is generated
        check_lengths(model, [encode(model.tokenizer, p) for p, _ in plists[t]], gen)
    store = _store(checkpoint, "steer_sweep", model, neurons=neurons, stats=stats, targets=targets, factors=factors,
                   modes=modes, prompts=plists, statistic=statistic, n_samples=n_samples, generation=gen.as_dict(),
                   seed=seed, control=control, positions=[p if isinstance(p, str) else list(p) for p in pos_list],
                   batch_size=batch_size,
                   fluency=fluency.as_dict() if isinstance(fluency, FluencyCriterion) else fluency)
    if store is not None:
        store.announce([f"{t} baseline" for t in targets]
                       + [f"{t} {c!r} {cond}" for t in targets for c in cells
                          for cond in ("intervention", "control")[:1 + (ctrl_all is not None)]])
    # one bar over every generation of the sweep: each target's baseline, then each cell's
    # intervention (and control)
    per_prompt = n_samples * (1 + len(cells) * (2 if ctrl_all is not None else 1))
    with stage("steer", per_prompt * sum(len(p) for p in plists.values()), "generation", progress):
        return _sweep(model, targets, plists, cells, plan, statistic, n_samples, gen, batch_size, seed, progress,
                      fluency, store)


def _sweep(model, targets, plists, cells, plan, statistic, n_samples, gen, batch_size, seed, progress,
           fluency, store) -> pd.DataFrame:
    frames = []
    for t in targets:
        rows = [(i, s, p, lang) for i, (p, lang) in enumerate(plists[t]) for s in range(n_samples)]
        toks = [encode(model.tokenizer, p) for _, _, p, _ in rows]
        # the same seed for every condition: they differ only by the intervention (common random numbers)
        run = lambda items, pos, desc, unit: _generations(model, toks, items, pos, gen, batch_size, seed,  # noqa: E731
                                                          f"steer {t} {desc}", progress, fluency, store, unit)
        base = run([], "all", "baseline", f"{t} baseline")
        for (mode, factor, pos) in cells:
            iv, civ = plan[t][(mode, factor, pos)]
            cell = f"{t} {(mode, factor, pos)!r}"
            outs = {"baseline": base, "intervention": run([iv], pos, f"{mode}×{factor:g}", f"{cell} intervention")}
            if civ is not None:
                outs["control"] = run([civ], pos, "control", f"{cell} control")
            pos_label = pos if isinstance(pos, str) else ",".join(map(str, pos))
            records = []
            for cond, cols in outs.items():
                for k, (i, s, p, lang) in enumerate(rows):
                    records.append({"target": t, "condition": cond, "mode": mode, "factor": factor,
                                    "statistic": statistic if "stats" in get_mode(mode).takes else None, "positions": pos_label,
                                    "prompt_id": i, "prompt_language": lang, "prompt": p, "sample": s,
                                    **{c: v[k] for c, v in cols.items()}})
            frames.append(_frame(records, fluency))
    return pd.concat(frames, ignore_index=True)


def steer(model, neurons, target: str, prompts=None, stats=None, mode: str = DEFAULT_MODE,
          factor=DEFAULT_FACTOR, statistic: str = DEFAULT_STATISTIC, n_samples: int = 4,
          generation: GenerationConfig | None = None, seed: int = 0, control: str | None = "random",
          positions="all", *, source=None, n_prompts: int = 16, prompt_words: int = 3,
          batch_size: int = 64, fluency=True, progress: bool = True, checkpoint=None) -> pd.DataFrame:
    """Generate under an intervention on ``target``'s neurons and identify the output language.

    The same prompts are generated three times — under the intervention, without it
    (``baseline``) and under the same intervention on :func:`~.identify.random_like` neurons of
    the target (``control``: same count per layer; ``set``/``add`` use the *target's* statistics
    of those neurons) — with the same seed, so the conditions differ only by the intervention.
    The language of the continuation alone (never the prompt) is identified with :mod:`.langid`.

    Args:
        neurons: a :class:`LanguageNeurons` set holding ``target``.
        target: the language to steer towards.
        prompts: ``None`` — :func:`default_prompts`: ``n_prompts`` neutral prompts, the first
            ``prompt_words`` words of built-in ``parallel`` sentences, in every other language in
            turn (or in ``source``); a string or a list of strings (``""`` = BOS only, i.e.
            unconditional generation).
        stats: :class:`NeuronStats` at the neurons' site; needed by ``set`` and ``add``.
        mode: ``set`` (``a := factor · statistic``, default), ``scale`` (``a := factor · a``) or
            ``add`` (``a := a + factor · statistic``).
        factor: α (default 16: "set to 16× the mean activation on the target language").
        statistic: which statistic of the target language (``mean``, ``median``, ``max``, ``q0.9`` …).
        n_samples: continuations per prompt (one when ``generation.greedy``).
        generation: decoding, a :class:`~.generation.GenerationConfig` (default: sampling at T = 0.8,
            top-k 50, 24 new tokens).
        seed: seeds sampling (the caller's random state is restored afterwards) and the prompts and
            the random control. The same arguments give the same rows.
        control: ``"random"`` or ``None``.
        positions: ``all`` (default), ``prompt``, ``generated``, ``last`` or a list of positions;
            absolute positions of the left-padded batch (every row's prompt ends at the same column).
        batch_size: rows (prompt × sample) per ``generate`` call.
        fluency: ``True`` (default) — also score each generation's fluency (:mod:`.fluency`:
            ``n_new_tokens``, ``nll`` under the unsteered model, ``rep``); a
            :class:`~.fluency.FluencyCriterion` — that, and a ``fluent`` column by its thresholds;
            ``False`` — neither (one forward pass less per batch).

    Returns:
        one row per generation: ``target, condition, mode, factor, statistic, positions, prompt_id,
        prompt_language, prompt, sample, generation, detected`` (+ the fluency columns);
        ``generation`` is the continuation only. Summarise with :func:`steer_summary`.
    """
    neurons = check_neurons(neurons)
    check_target(neurons, target)
    return steer_sweep(model, neurons, [target], [factor], [mode], prompts, stats, statistic, n_samples,
                       generation, seed, control, positions, source=source, n_prompts=n_prompts,
                       prompt_words=prompt_words, batch_size=batch_size, fluency=fluency, progress=progress,
                       checkpoint=checkpoint)


def steer_with(model, target: str, interventions, control=None, prompts=None, *, baseline: bool = True,
               n_samples: int = 4, generation: GenerationConfig | None = None,
               seed: int = 0, positions="all", source=None, n_prompts: int = 16, prompt_words: int = 3,
               batch_size: int = 64, fluency=True, progress: bool = True, checkpoint=None) -> pd.DataFrame:
    """:func:`steer` under interventions the caller builds, for steering that is not one mode on
    the target's neurons — e.g. Gurgurov et al.'s (2025) language arithmetic, a list of two::

        steer_with(model, "de", [Intervention(neurons, "zero", language="en"),
                                 Intervention(neurons, "add", factor=1.0, stats=stats, language="de")],
                   control=[Intervention(ctrl, "zero", language="en"),
                            Intervention(ctrl, "add", factor=1.0, stats=stats, language="de")],
                   source="en")

    Generation, seeding, prompts and language identification are :func:`steer`'s: every condition
    generates from the same prompts with the same seed, so they differ only by the interventions.

    Args:
        target: the language whose rate is measured (only compared with the identified language).
        interventions: an :class:`Intervention`, a :class:`DiffMean` or a list of them, applied
            together (in order) in the ``intervention`` condition.
        control: the same for the ``control`` condition (build it on
            :func:`~.identify.random_like` sets), or ``None`` for none.
        baseline: also generate without intervention (``False`` where the caller already has
            the baseline of these prompts, e.g. across a factor grid).
        prompts, source, n_prompts, prompt_words: as in :func:`steer` (the default prompts are in
            every language but ``target``, or in ``source``).
        the rest: decoding, batching and fluency, as in :func:`steer`.

    Returns:
        one row per generation: ``target, condition, positions, prompt_id, prompt_language, prompt,
        sample, generation, detected`` (+ the fluency columns; conditions in the order baseline,
        intervention, control); summarise with :func:`steer_summary`.
    """
    if not isinstance(target, str) or not target:
        raise LangNeuronsError(f"target must be a language code, got {target!r}")
    items = as_items(interventions)
    if not items:
        raise LangNeuronsError("steer_with needs at least one intervention")
    ctrl = as_items(control)
    if control is not None and not ctrl:
        raise LangNeuronsError("control must hold at least one intervention, or be None")
    _checks.boolean("baseline", baseline)
    pos = check_positions(positions)
    n_samples, batch_size, gen, fluency = _decoding(n_samples, batch_size, generation, fluency)
    plist = prompt_list(prompts, target, n_prompts, prompt_words, source, seed)
    check_lengths(model, [encode(model.tokenizer, p) for p, _ in plist], gen)
    store = _store(checkpoint, "steer_with", model, target=target, interventions=items, control=ctrl, prompts=plist,
                   baseline=baseline, n_samples=n_samples, generation=gen.as_dict(), seed=seed, positions=pos,
                   batch_size=batch_size,
                   fluency=fluency.as_dict() if isinstance(fluency, FluencyCriterion) else fluency)
    return _steer_with(model, target, items, ctrl, plist, baseline, n_samples, gen, seed, pos, batch_size, fluency,
                       progress, store, "")


def _steer_with(model, target, items, ctrl, plist, baseline, n_samples, gen, seed, pos, batch_size, fluency,
                progress, store, prefix: str) -> pd.DataFrame:
    rows = [(i, s, p, lang) for i, (p, lang) in enumerate(plist) for s in range(n_samples)]
    toks = [encode(model.tokenizer, p) for _, _, p, _ in rows]
    conds = {"baseline": []} if baseline else {}
    conds["intervention"] = items
    if ctrl:
        conds["control"] = ctrl
    pos_label = pos if isinstance(pos, str) else ",".join(map(str, pos))
    records = []
    with stage(f"steer {target}", len(rows) * len(conds), "generation", progress):
        for cond, its in conds.items():
            cols = _generations(model, toks, its, pos, gen, batch_size, seed, f"steer {target} {cond}", progress,
                                fluency, store, f"{prefix}{cond}")
            for k, (i, s, p, lang) in enumerate(rows):
                records.append({"target": target, "condition": cond, "positions": pos_label, "prompt_id": i,
                                "prompt_language": lang, "prompt": p, "sample": s,
                                **{c: v[k] for c, v in cols.items()}})
    return _frame(records, fluency)


def random_direction_like(steer: DiffMean, seed: int = 0) -> DiffMean:
    """The control of a :class:`DiffMean`: a random (Gaussian, seeded) direction of the same norm
    at the same layer and strength, so the control moves the residual stream as far, in no
    particular language's direction."""
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randn(steer.direction.shape, generator=g, dtype=torch.float64)
    return replace(steer, direction=(r / r.norm() * steer.direction.double().norm()).to(steer.direction.dtype))


def diffmean_sweep(model, corpus, targets, layer: int, betas, prompts=None, control: str | None = "random",
                   *, languages: list[str] | None = None, max_sentences: int | None = None,
                   n_samples: int = 4, generation: GenerationConfig | None = None, seed: int = 0, positions="all",
                   source=None, n_prompts: int = 16, prompt_words: int = 3, batch_size: int = 64,
                   fluency=True, progress: bool = True, checkpoint=None) -> pd.DataFrame:
    """Residual-stream difference-of-means steering (:func:`~.intervene.diffmean`) over a grid of
    targets × strengths β, measured exactly as :func:`steer_sweep` measures neuron steering.

    Per target: the direction ``mean(resid | target) − mean(resid | other languages)`` after block
    ``layer``, from ``corpus`` (e.g. the built-in ``stats`` split, the text the neurons were found
    on); then generations with ``β · direction`` added at every position, without it
    (``baseline``, generated once per target) and with a random direction of the same norm
    (``control``, :func:`random_direction_like`), same prompts and seed. With ``checkpoint`` (a
    :class:`~..resume.Checkpointed` store) each condition of each target and β, and each batch of
    its generations, is a unit of work (resumed exactly; the directions are recomputed).

    Returns:
        :func:`steer_sweep`'s columns, with ``mode = "diffmean"`` and ``factor = β`` (so
        :func:`steer_summary` and the steering writers and figures take it), plus ``layer``.
    """
    check_control(control)
    texts = _checks.texts_of(corpus)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise LangNeuronsError("targets must hold at least one language")
    betas = _checks.numbers_list("beta", betas)
    pos = check_positions(positions)
    n_samples, batch_size, gen, fluency = _decoding(n_samples, batch_size, generation, fluency)
    plists = {t: prompt_list(prompts, t, n_prompts, prompt_words, source, seed) for t in targets}
    for t in targets:  # every prompt checked against the context before anything is computed
        check_lengths(model, [encode(model.tokenizer, p) for p, _ in plists[t]], gen)
    store = _store(checkpoint, "diffmean_sweep", model, corpus=texts_hash(texts), targets=targets, layer=layer,
                   betas=betas, prompts=plists, control=control, languages=languages, max_sentences=max_sentences,
                   n_samples=n_samples, generation=gen.as_dict(), seed=seed, positions=pos, batch_size=batch_size,
                   fluency=fluency.as_dict() if isinstance(fluency, FluencyCriterion) else fluency)
    # every target's direction from one pass over the corpus
    directions = diffmeans(model, texts, targets, layer, languages=languages, max_sentences=max_sentences,
                           progress=progress)
    # one bar over every generation: each target's baseline, then each beta's intervention (and control)
    per_prompt = n_samples * (1 + len(betas) * (2 if control else 1))
    with stage("diffmean steer", per_prompt * sum(len(p) for p in plists.values()), "generation", progress):
        return _diffmean_cells(model, targets, directions, betas, layer, control, seed, plists, n_samples, gen, pos,
                               batch_size, fluency, progress, store)


def _diffmean_cells(model, targets, directions, betas, layer, control, seed, plists, n_samples, gen, pos,
                    batch_size, fluency, progress, store) -> pd.DataFrame:
    frames = []
    for t, d in zip(targets, directions):
        ctrl = random_direction_like(d, seed) if control == "random" else None
        base = None
        for b in betas:
            df = _steer_with(model, t, [d.with_beta(b)], [ctrl.with_beta(b)] if ctrl else [], plists[t], base is None,
                             n_samples, gen, seed, pos, batch_size, fluency, progress, store, f"{t} {b!r} ")
            if base is None:
                base = df[df.condition == "baseline"]
            else:  # the baseline does not depend on β: generated once, repeated in every cell
                df = pd.concat([base, df], ignore_index=True)
            df.insert(2, "mode", "diffmean")
            df.insert(3, "factor", b)
            df.insert(4, "statistic", None)
            df["layer"] = int(layer)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def steer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Target-language rates with Wilson 95% intervals per target (and per grid cell of a sweep).

    Returns one row per ``target`` (× ``mode``, ``factor``, ``statistic``, ``positions`` where the
    frame has them) with ``n`` and, for each condition present, ``<condition>_rate``,
    ``<condition>_low``, ``<condition>_high`` — the intervention's columns are named
    ``target_rate``, ``target_low``, ``target_high``. Where the frame has the fluency columns
    (:mod:`.fluency`), also ``<condition>_nll`` and ``<condition>_rep``, their means over the
    generations, and where it has ``fluent``, ``<condition>_fluent_rate`` (``_low``, ``_high``):
    the share of generations in the target language *and* fluent — the rate to choose factors by.
    """
    missing = {"target", "condition", "detected"} - set(df.columns)
    if missing:
        raise LangNeuronsError(f"not a steering frame: it lacks the column(s) {choices(sorted(missing))}")
    keys = [k for k in ("target", "mode", "factor", "statistic", "positions") if k in df.columns]
    names = {"intervention": "target", "baseline": "baseline", "control": "control"}
    out = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["n"] = int(g["condition"].value_counts().iloc[0])  # generations per condition
        for cond, name in names.items():
            sub = g[g["condition"] == cond]
            if len(sub) == 0:
                continue
            hit = sub["detected"] == row["target"]
            rates = {"rate": hit}
            if "fluent" in sub.columns:  # read back from a CSV, a bool column may hold strings
                rates["fluent_rate"] = hit & sub["fluent"].astype(str).str.lower().eq("true")
            for what, ok in rates.items():
                k = int(ok.sum())
                lo, hi = wilson(k, len(sub))
                base = what.removesuffix("rate")
                row[f"{name}_{what}"], row[f"{name}_{base}low"], row[f"{name}_{base}high"] = k / len(sub), lo, hi
            for col in ("nll", "rep"):
                if col in sub.columns:
                    row[f"{name}_{col}"] = float(pd.to_numeric(sub[col]).mean())
        out.append(row)
    return pd.DataFrame(out)
