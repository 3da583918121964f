"""The steering benchmark: every registered method on the same prompts, seed, decoding, language
identifier, fluency criterion and relevance judge; each method's strength (and layer) chosen on
the tuning prompts, its numbers reported on the evaluation prompts beside its random control.

Resumable: with ``work_dir``, every generated cell (method × target × phase × setting ×
condition) is a JSON-lines file written atomically when the cell is complete, under a key of
everything the results depend on (the model's weights, the statistics, the prompts and every
option). A run killed at any point and started again with the same ``work_dir`` regenerates only
the missing cells; a changed key is refused, naming what changed. Fresh cells are read back from
their file too, so a resumed run and an uninterrupted one compute their tables from the same bytes.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import _checks
from .._io import atomic_write_text, jsonable, read_json, write_json
from ..corpus import load_corpus
from ..errors import LangNeuronsError
from ..evaluate.fluency import FluencyCriterion, fluency_columns, fluency_criterion
from ..evaluate.generation import GenerationConfig, check_generation, decode, generate_ids
from ..evaluate.langid import detect
from ..evaluate.relevance import Calibration, calibrate, check_judge, cosines
from ..models import identity
from ..tokens import encode
from ..units import resolve_site
from .context import GIVEN_NEEDS, BenchContext
from .methods import Arm, SteerMethod, check_methods
from .prompts import INSTRUCTIONS, bench_prompts
from .summary import arm_score


@dataclass(frozen=True)
class BenchResult:
    generations: pd.DataFrame  # every evaluation generation (all methods, both conditions)
    tuning: pd.DataFrame  # per method × target × setting: the tuning prompts' scores, and which won
    calibration: Calibration
    fluency: FluencyCriterion
    run: dict  # what the results depend on (the resume key)


def _setting_grid(method: SteerMethod, layers: list[int]) -> list[tuple[float | None, int | None]]:
    strengths = list(method.strengths) or [None]
    return [(s, l) for l in (layers if method.uses_layer else [None]) for s in strengths]


def _label(strength, layer) -> str:
    return "-".join(p for p in ((f"s{strength:g}" if strength is not None else ""),
                                (f"L{layer}" if layer is not None else "")) if p) or "default"


class _Cells:
    """Completed cells as JSON-lines files under ``work_dir`` (or only in memory without one)."""

    def __init__(self, work_dir, key: dict):
        self.dir = None if work_dir is None else Path(work_dir)
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        kpath = self.dir / "key.json"
        if kpath.exists():
            old = read_json(kpath, "benchmark key")
            changed = sorted(k for k in set(old) | set(key) if old.get(k) != jsonable(key).get(k))
            if changed:
                raise LangNeuronsError(f"{str(self.dir)!r} holds a benchmark run with other settings (changed: "
                                       f"{', '.join(changed)}); use another --out or --overwrite")
        else:
            write_json(kpath, key)

    def get(self, name: str, compute) -> pd.DataFrame:
        if self.dir is None:
            return compute()
        path = self.dir / f"{name}.jsonl"
        if not path.exists():
            df = compute()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, "".join(json.dumps(jsonable(r), ensure_ascii=False) + "\n"
                                            for r in df.to_dict("records")))
        lines = path.read_text(encoding="utf-8").splitlines()
        return pd.DataFrame([json.loads(x) for x in lines])


def _generate(model, prompts: pd.DataFrame, arms: dict, condition: str, gen: GenerationConfig, batch_size: int,
              seed: int, fluency: FluencyCriterion, progress: bool, desc: str) -> pd.DataFrame:
    """Generate every prompt under its group's arm (``arms[source]``, or ``arms[None]`` for all)."""
    frames = []
    groups = [(None, prompts)] if None in arms else list(prompts.groupby("source", sort=False))
    for source, rows in groups:
        arm: Arm = arms[source]
        items = arm.items if condition == "intervention" else (arm.control or [])
        texts = [p if arm.instruction is None else f"{arm.instruction}\n{p}" for p in rows["prompt"]]
        toks = [encode(model.tokenizer, t) for t in texts]
        ids = generate_ids(model, toks, items, "all", gen, batch_size, seed, desc, progress)
        out = rows.copy()
        out["condition"] = condition
        out["generation"] = decode(model, ids)
        out["detected"] = detect(list(out["generation"]))
        for col, values in fluency_columns(model, toks, ids, batch_size).items():
            out[col] = values
        frames.append(out)
    df = pd.concat(frames).sort_values("prompt_id", kind="stable").reset_index(drop=True)
    df["fluent"] = fluency.fluent(df)
    return df


def _relevance(judge, calibration: Calibration, df: pd.DataFrame, against: str, column: str) -> pd.DataFrame:
    cos = cosines(judge, list(df[against].fillna("")), list(df["generation"].fillna("")))
    scores = np.concatenate([calibration.score(cos[i:i + 1], t) for i, t in enumerate(df["target"])]) if len(df) else []
    df = df.copy()
    df[f"{column}_cos"] = cos
    # an empty generation keeps no meaning: relevance 0 (NaN only where the judge is not trusted)
    empty = df["generation"].fillna("").str.strip().eq("")
    trusted = df["target"].isin(calibration.trusted)
    df[column] = np.where(empty & trusted, 0.0, scores)
    return df


def buildable(methods: list[SteerMethod], ctx: BenchContext, named: bool) -> list[SteerMethod]:
    """``methods`` that ``ctx`` can build: a default run (``named=False``) leaves the others out;
    a named method without what it needs is refused before any generation, saying what to give."""
    if not named:
        return [m for m in methods if all(ctx.has(n) for n in m.needs)]
    for m in methods:
        missing = [GIVEN_NEEDS[n] for n in m.needs if not ctx.has(n)]
        if missing:
            raise LangNeuronsError(f"steering method {m.name!r} needs {' and '.join(missing)}")
    return methods


def steer_bench(model: Any, stats, targets, sources=None, methods=None, *, texts: dict | None = None,
                neurons=None, ap=None, judge=None, calibration: Calibration | None = None,
                fluency: FluencyCriterion | None = None, n_tune: int = 8, n_eval: int = 32, layers=None,
                top_rate: float = 0.01, generation: GenerationConfig | None = None, seed: int = 0,
                batch_size: int = 32, calibration_pairs: int = 100, fluency_sentences: int = 60, work_dir=None,
                sae: str | None = None, prompt_kind: str = "openings", progress: bool = True) -> BenchResult:
    """Run the steering benchmark (CLaS-Bench's two axes — language forcing and meaning — plus fluency).

    Args:
        stats: statistics at ``act`` with sentence means, recorded on the ``stats`` split of the
            languages (``record(..., sentence_means=True)``); LAPE and AP sets come from them.
        targets: languages to steer into; ``sources``: the prompts' languages (default: the
            targets and English), each target prompted from every other source in turn. All must be
            in the built-in parallel split (the prompts and the judge's calibration come from it).
        methods: names from :data:`~.methods.METHODS` (default: every registered one this run can
            build: ``plnd-add`` only with statistics recorded with ``plnd=True``, ``sae-add`` only
            with ``sae``).
        texts: ``{language: sentences}`` the directions are fit on (default: the built-in
            ``stats`` split of the statistics' languages, first 200 sentences).
        judge / calibration: the relevance judge (default :class:`~..evaluate.relevance.E5Judge`,
            offline) and its calibration (default: :func:`~..evaluate.relevance.calibrate` on the
            targets with ``calibration_pairs`` pairs).
        fluency: the fluency criterion (default: from ``fluency_sentences`` held-out ``eval`` sentences
            per target).
        n_tune / n_eval: prompts per target for choosing strengths / for the reported numbers.
        layers: blocks the direction methods are tried after (default: a quarter and half-way).
        generation: decoding (default: the package's, sampling at T = 0.8, 24 new tokens).
        seed: prompts, sampling (the same for every method: common random numbers), controls.
        work_dir: where cells are kept for resuming (``None``: in memory only).
        sae: ``"sae:DIR"`` (or ``DIR``), the model's SAEs for the ``sae-add`` row.
        prompt_kind: ``"openings"`` (sentence openings to continue) or ``"questions"`` (whole
            questions of the parallel split to answer; :func:`~.prompts.bench_prompts`).

    Returns:
        a :class:`BenchResult`; :func:`~.summary.leaderboard` turns its generations into the table.
    """
    default_methods = methods is None
    methods = check_methods(methods)
    gen = check_generation(generation)
    n_tune, n_eval = _checks.positive_int("n_tune", n_tune), _checks.positive_int("n_eval", n_eval)
    batch_size, seed = _checks.positive_int("batch_size", batch_size), _checks.integer("seed", seed, 0)
    targets = [targets] if isinstance(targets, str) else list(targets)
    sources = list(dict.fromkeys([*targets, "en"])) if sources is None else (
        [sources] if isinstance(sources, str) else list(sources))
    prompts = bench_prompts(targets, sources, n_tune, n_eval, seed=seed, kind=prompt_kind)
    if any(m.family == "prompting" for m in methods):
        missing = [t for t in targets if t not in INSTRUCTIONS]
        if missing:
            raise LangNeuronsError(f"no prompting instruction for target(s) {missing}; drop the prompt-* methods")
    if texts is None:
        texts = load_corpus("builtin", split="stats", languages=list(stats.languages), max_sentences=200).texts
    ctx = BenchContext(model, stats, texts, neurons=neurons, ap=ap, top_rate=top_rate, layers=layers, seed=seed,
                       sae=sae, progress=progress)
    ctx.check_targets(targets, sources)
    methods = buildable(methods, ctx, named=not default_methods)
    judge = check_judge(judge)
    run = {"model": identity(model), "stats_model": stats.model, "targets": targets, "sources": sources,
           "methods": [m.name for m in methods], "n_tune": n_tune, "n_eval": n_eval, "prompt_kind": prompt_kind,
           "layers": ctx.layers,
           "top_rate": top_rate, "lape_size": {k: len(v) for k, v in ctx.lape.neurons.items()},
           "generation": gen.as_dict(), "seed": seed, "judge": judge.name,
           "prompts_sha256": hashlib.sha256(prompts.to_json().encode()).hexdigest(),
           "sae": resolve_site(model, ctx.sae).info if any("sae" in m.needs for m in methods) else None}
    if any("plnd" in m.needs for m in methods):  # the sets' sizes, for the report
        run["plnd_size"] = ctx.plnd.counts()
    if run["sae"] is not None:
        run["sae_features"] = ctx.sae_features.counts()
    cells = _Cells(work_dir, run)
    if calibration is None:
        calibration = calibrate(judge, targets, n_pairs=calibration_pairs, seed=seed)
    if fluency is None:
        n_fl = _checks.positive_int("fluency_sentences", fluency_sentences)
        held_out = load_corpus("builtin", split="eval", languages=targets, max_sentences=n_fl)
        fluency = fluency_criterion(model, held_out, languages=targets, n_tokens=gen.max_new_tokens,
                                    max_sentences=n_fl, batch_size=batch_size)
    tuning_rows, evaluated = [], []
    plan = [(t, m) for t in targets for m in methods]
    bar = tqdm(plan, desc="steer-bench", disable=not progress)
    for target, method in bar:
        bar.set_postfix_str(f"{method.name} → {target}")
        p_t = prompts[prompts.target == target]

        def cell(phase: str, strength, layer, condition: str) -> pd.DataFrame:
            rows = p_t[p_t.split == phase]
            arms = ({s: method.build(ctx, s, target, strength, layer) for s in rows["source"].unique()}
                    if method.per_source else {None: method.build(ctx, None, target, strength, layer)})

            def compute():
                df = _generate(model, rows, arms, condition, gen, batch_size, seed, fluency, False,
                               f"{method.name} {target}")
                df = _relevance(judge, calibration, df, "prompt", "relevance")
                df.insert(0, "method", method.name)
                df.insert(1, "family", method.family)
                df["strength"], df["layer"] = strength, layer
                return df
            return cells.get(f"{target}/{method.name}/{phase}-{_label(strength, layer)}-{condition}", compute)

        grid = _setting_grid(method, ctx.layers)
        best, best_score = grid[0], -np.inf
        if len(grid) > 1:  # choose the setting on the tuning prompts only
            for strength, layer in grid:
                sc = arm_score(cell("tune", strength, layer, "intervention"))
                tuning_rows.append({"method": method.name, "target": target, "strength": strength, "layer": layer,
                                    **sc})
                if sc["score"] > best_score:  # NaN never wins; ties keep the earlier (weaker) setting
                    best, best_score = (strength, layer), sc["score"]
        conditions = ["intervention", "control"] if method.controlled else ["intervention"]
        for condition in conditions:
            evaluated.append(cell("eval", best[0], best[1], condition))
    generations = pd.concat(evaluated, ignore_index=True)
    # relevance to the unsteered answer: the same prompt's generation by "none" (when it was run)
    none = generations[(generations.method == "none") & (generations.condition == "intervention")]
    if len(none):
        ref = generations.merge(none[["target", "prompt_id", "generation"]].rename(columns={"generation": "unsteered"}),
                                on=["target", "prompt_id"], how="left")
        generations = _relevance(judge, calibration, ref, "unsteered", "relevance_unsteered")
    tuning = pd.DataFrame(tuning_rows)
    if len(tuning):
        chosen = generations[generations.condition == "intervention"].groupby(["method", "target"]).first()
        tuning["chosen"] = [
            (r.method, r.target) in chosen.index and chosen.loc[(r.method, r.target), "strength"] == r.strength
            and (pd.isna(r.layer) or chosen.loc[(r.method, r.target), "layer"] == r.layer)
            for r in tuning.itertuples()]
    return BenchResult(generations, tuning, calibration, fluency, jsonable(run))
