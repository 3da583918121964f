"""Language Steering Shift (Rahmanisa et al. 2025) on parallel facts: does amplifying a target's
neurons move a fact's object from the prompt's language towards the target's? (methods page:
[Language Steering Shift](methods.md#lss))"""

from importlib import resources
from pathlib import Path

import pandas as pd

from .. import _checks
from .._io import read_json
from ..errors import LangNeuronsError, choices
from ..identify import random_like
from ..intervene import check_positions
from .conditions import check_control, check_neurons
from .generation import NO_SPACE
from .intervals import wilson
from .scoring import continuation, sequence_logprobs
from .steering import DEFAULT_FACTOR, DEFAULT_MODE, DEFAULT_STATISTIC, check_target, steer_item


def _facts_path() -> Path:
    return Path(str(resources.files("tl_langneurons") / "assets" / "facts.json"))


def _check_items(items, where: str) -> list[dict]:
    if not isinstance(items, (list, tuple)) or not items:
        raise LangNeuronsError(f"{where}: items must be a non-empty list of "
                               "{'id', 'prompt': {lang: text}, 'object': {lang: text}} dicts")
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("prompt"), dict) or not isinstance(it.get("object"), dict):
            raise LangNeuronsError(f"{where}: item {i} must be a dict with 'prompt' and 'object' dicts "
                                   f"({{language: text}}), got {it!r}")
    return list(items)


def load_facts(path=None, languages: list[str] | None = None) -> list[dict]:
    """Parallel facts for :func:`lss`: the bundled fixture (en, de, fr, es, ru) or a JSON file like it.

    The file holds ``{"format": "tl_langneurons.facts/1", "items": [{"id", "relation",
    "prompt": {lang: text}, "object": {lang: text}}, ...]}``; the object follows the prompt after
    one space (none for zh, ja, th). ``languages`` keeps only the items that have all of them.
    """
    p = _facts_path() if path is None else Path(path)
    d = read_json(p, "facts file")
    if not isinstance(d, dict) or d.get("format") != "tl_langneurons.facts/1":
        raise LangNeuronsError(f"{str(p)!r} is not a facts file (format 'tl_langneurons.facts/1')")
    items = _check_items(d.get("items"), str(p))
    if languages is not None:
        languages = [languages] if isinstance(languages, str) else list(languages)
        items = [it for it in items if all(k in it["prompt"] and k in it["object"] for k in languages)]
        if not items:
            raise LangNeuronsError(f"{str(p)!r} has no item in all of {choices(languages)}; "
                                   f"it has: {choices(d.get('languages', []))}")
    return items


def load_mlama(languages: list[str], name: str = "atutej/m_lama", config: str | None = "{lang}",
               split: str | None = None, relations: list[str] | None = None, max_items: int | None = None
               ) -> list[dict]:
    """Parallel facts from mLAMA (Kassner et al. 2021) on the Hugging Face Hub, as :func:`lss` items.

    Expected layout (that of ``cis-lmu/m_lama`` and its parquet mirrors): rows with ``sub_uri``,
    ``sub_label``, ``obj_uri``, ``obj_label``, ``predicate_id`` and ``template`` (a pattern with
    ``[X]`` for the subject and ``[Y]`` for the object), either one config per language (``config``
    with ``{lang}`` in it, default) or one config holding every language with a ``language``
    column (``config`` without ``{lang}``, or ``None``). ``split=None`` takes the dataset's first
    split. Only templates that *end* with ``[Y]`` (a final period allowed) give a prompt a causal
    model can complete; a fact is kept when every language has it. Items are keyed by
    ``(predicate_id, sub_uri, obj_uri)``. Needs a network (or a warm cache).
    """
    import datasets  # heavy, and only here

    languages = [languages] if isinstance(languages, str) else list(languages)
    if len(languages) < 2:
        raise LangNeuronsError(f"load_mlama needs at least two languages, got {languages!r}")
    max_items = _checks.positive_int("max_items", max_items, allow_none=True)
    need = {"sub_uri", "sub_label", "obj_uri", "obj_label", "predicate_id", "template"}

    def load(cfg):
        try:
            ds = datasets.load_dataset(name, cfg) if split is None else datasets.load_dataset(name, cfg, split=split)
        except Exception as e:  # noqa: BLE001 - network, missing config, script datasets: one message
            raise LangNeuronsError(f"could not load mLAMA {name!r} (config {cfg!r}): {str(e).splitlines()[0]}") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[next(iter(ds))]
        lacking = need - set(ds.column_names)
        if lacking:
            raise LangNeuronsError(f"{name!r} lacks the mLAMA column(s) {choices(sorted(lacking))}; "
                                   f"columns: {choices(ds.column_names)}")
        return ds

    per_lang: dict[str, dict] = {}
    shared = None if (config is not None and "{lang}" in config) else load(config)
    for lang in languages:
        if shared is None:
            rows = load(config.replace("{lang}", lang))
        else:
            if "language" not in shared.column_names:
                raise LangNeuronsError(f"{name!r}: one config for all languages needs a 'language' column")
            rows = shared.filter(lambda r: r["language"] == lang)
        facts = {}
        for r in rows:
            if relations is not None and r["predicate_id"] not in relations:
                continue
            t = r["template"].strip()
            t = t[:-1].rstrip() if t.endswith((".", "。")) else t
            if not t.endswith("[Y]") or t.count("[X]") != 1:
                continue
            prompt = t[:-3].replace("[X]", r["sub_label"]).rstrip()
            facts[(r["predicate_id"], r["sub_uri"], r["obj_uri"])] = (prompt, r["obj_label"])
        per_lang[lang] = facts
    keys = [k for k in per_lang[languages[0]] if all(k in per_lang[l] for l in languages[1:])]
    if max_items is not None:
        keys = keys[:max_items]
    if not keys:
        raise LangNeuronsError(f"mLAMA {name!r} has no fact with a completable prompt in all of {choices(languages)}")
    return [{"id": f"{p}:{s}:{o}", "relation": p, "prompt": {l: per_lang[l][(p, s, o)][0] for l in languages},
             "object": {l: per_lang[l][(p, s, o)][1] for l in languages}} for p, s, o in keys]


def _object_tokens(model, prompt: str, obj: str, language: str) -> tuple[list[int], list[int]]:
    """The prompt completed by its object: after one space, none for scripts without spaces."""
    sep = "" if language in NO_SPACE or prompt.endswith(" ") else " "
    return continuation(model, prompt, obj, sep)


def lss(model, neurons, items: list[dict], source: str, target: str,
        factor=DEFAULT_FACTOR, stats=None, mode: str = DEFAULT_MODE, statistic: str = DEFAULT_STATISTIC,
        control: str | None = "random", seed: int = 0, positions="all", batch_size: int = 32,
        progress: bool = True) -> pd.DataFrame:
    """Language Steering Shift (Rahmanisa et al. 2025): does amplifying ``target``'s neurons pull facts towards ``target``?

    Per item, with the prompt in ``source``: ``Δ = log P(object_target | prompt) − log P(object_source
    | prompt)`` (summed token log-probabilities of each continuation). The item is *shifted* when
    Δ under the intervention on the target's neurons exceeds Δ without intervention; LSS(source →
    target) is the fraction of shifted items (:func:`lss_summary`). Items whose two objects are
    the same string (``Berlin``/``Berlin``) cannot shift and are left out.

    Args:
        items: from :func:`load_facts` or :func:`load_mlama`.
        mode, factor, stats, statistic: as in :func:`steer` (``set`` and ``add`` need ``stats``).
        control: also the same intervention on :func:`~.identify.random_like` neurons of the target.
        positions: ``all`` (default: prompt and object tokens), ``prompt``, ``last`` …; other than
            ``all``, items run one at a time.

    Returns:
        one row per item × condition (``baseline``, ``intervention``, ``control``):
        ``item, relation, source, target, condition, mode, factor, object_source, object_target,
        logp_source, logp_target, delta, delta_baseline, shifted`` (``shifted`` is False for the
        baseline rows by definition).
    """
    neurons = check_neurons(neurons)
    check_control(control)
    check_target(neurons, target)
    items = _check_items(items, "lss")
    if not isinstance(source, str) or source == target:
        raise LangNeuronsError(f"source must be a language other than the target {target!r}, got {source!r}")
    pos = check_positions(positions)
    batch_size = _checks.positive_int("batch_size", batch_size)
    iv = steer_item(neurons, target, mode, _checks.number("factor", factor), stats, statistic)
    civ = None
    if control == "random":
        civ = steer_item(random_like(neurons.select([target]), seed), target, mode, factor, stats, statistic)
    usable = [it for it in items if source in it["prompt"] and source in it["object"] and target in it["object"]
              and it["object"][source].strip().casefold() != it["object"][target].strip().casefold()]
    if not usable:
        raise LangNeuronsError(f"no item has a prompt in {source!r} and different objects in {source!r} and {target!r}")
    seqs = []
    for it in usable:
        prompt = it["prompt"][source]
        seqs.append(_object_tokens(model, prompt, it["object"][source], source))
        seqs.append(_object_tokens(model, prompt, it["object"][target], source))
    conds = {"baseline": []}
    conds["intervention"] = [iv]
    if civ is not None:
        conds["control"] = [civ]
    logps = {c: sequence_logprobs(model, seqs, ivs, pos if ivs else "all", batch_size, f"lss {c}", progress)
             for c, ivs in conds.items()}
    rows = []
    for j, it in enumerate(usable):
        base_delta = logps["baseline"][2 * j + 1] - logps["baseline"][2 * j]
        for c in conds:
            ls, lt = logps[c][2 * j], logps[c][2 * j + 1]
            rows.append({"item": it.get("id", str(j)), "relation": it.get("relation"), "source": source,
                         "target": target, "condition": c, "mode": mode, "factor": float(factor),
                         "object_source": it["object"][source], "object_target": it["object"][target],
                         "logp_source": ls, "logp_target": lt, "delta": lt - ls, "delta_baseline": base_delta,
                         "shifted": bool(lt - ls > base_delta)})
    return pd.DataFrame(rows)


def lss_summary(df: pd.DataFrame) -> pd.DataFrame:
    """LSS per source × target (× mode, factor) and condition: the fraction of shifted items, with a
    Wilson 95% interval, and the mean change of Δ."""
    missing = {"source", "target", "condition", "shifted", "delta", "delta_baseline"} - set(df.columns)
    if missing:
        raise LangNeuronsError(f"not an LSS frame: it lacks the column(s) {choices(sorted(missing))}")
    keys = [k for k in ("source", "target", "mode", "factor", "condition") if k in df.columns]
    out = []
    for key, g in df[df["condition"] != "baseline"].groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key))
        k, n = int(g["shifted"].sum()), len(g)
        lo, hi = wilson(k, n)
        row.update(lss=k / n, low=lo, high=hi, n_items=n, mean_delta_shift=float((g["delta"] - g["delta_baseline"]).mean()))
        out.append(row)
    return pd.DataFrame(out)