"""Scores of the steering benchmark, and the leaderboard with intervals.

Per method × target (and pooled over targets):

* ``target_rate`` — share of generations identified as the target language;
* ``fluent_rate`` — share in the target language *and* fluent (:mod:`~..evaluate.fluency`): the
  language-forcing axis, so that "Фу Фу Фу …" does not count as Russian;
* ``relevance`` — mean calibrated relatedness of the generation to its prompt
  (:mod:`~..evaluate.relevance`: 0 = a random sentence, 1 = a translation), the meaning axis;
  ``relevance_unsteered``: to the unsteered generation of the same prompt;
* ``score`` — the harmonic mean of ``fluent_rate`` and ``relevance`` (CLaS-Bench combines
  forcing and relevance this way; ours forces with the *fluent* rate); ``score_raw`` uses
  ``target_rate``.

Rates get Wilson 95% intervals; means and scores a percentile bootstrap over generations
(1,000 resamples, seeded) — within a target the generations are the prompts, so the interval is
over prompts.
"""

import numpy as np
import pandas as pd

from ..evaluate.intervals import wilson


def _hm(a: float, b: float) -> float:
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _as_bool(s: pd.Series) -> np.ndarray:
    return s.astype(str).str.lower().eq("true").to_numpy()


def arm_score(df: pd.DataFrame) -> dict:
    """The four numbers of one arm's generations (no intervals: the tuning criterion)."""
    hit = (df["detected"] == df["target"]).to_numpy()
    fluent = hit & _as_bool(df["fluent"])
    rel = pd.to_numeric(df["relevance"], errors="coerce").to_numpy(dtype=float)
    out = {"n": int(len(df)), "target_rate": float(hit.mean()), "fluent_rate": float(fluent.mean()),
           "relevance": float(np.mean(rel)) if len(rel) and not np.isnan(rel).any() else float("nan")}
    out["score"] = _hm(out["fluent_rate"], out["relevance"])
    out["score_raw"] = _hm(out["target_rate"], out["relevance"])
    return out


def _bootstrap(df: pd.DataFrame, n_boot: int, seed: int) -> dict:
    hit = (df["detected"] == df["target"]).to_numpy()
    fluent = (hit & _as_bool(df["fluent"])).astype(float)
    rel = pd.to_numeric(df["relevance"], errors="coerce").to_numpy(dtype=float)
    if np.isnan(rel).any() or not len(rel):
        return {}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(df), size=(n_boot, len(df)))
    f, r = fluent[idx].mean(1), rel[idx].mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(f + r > 0, 2 * f * r / (f + r), 0.0)
    q = lambda x: (float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975)))  # noqa: E731
    (rl, rh), (sl, sh) = q(r), q(s)
    return {"relevance_low": rl, "relevance_high": rh, "score_low": sl, "score_high": sh}


def _row(df: pd.DataFrame, n_boot: int, seed: int) -> dict:
    out = arm_score(df)
    hit = int((df["detected"] == df["target"]).sum())
    fl = int(((df["detected"] == df["target"]).to_numpy() & _as_bool(df["fluent"])).sum())
    out["target_low"], out["target_high"] = wilson(hit, len(df))
    out["fluent_low"], out["fluent_high"] = wilson(fl, len(df))
    out.update(_bootstrap(df, n_boot, seed))
    if "relevance_unsteered" in df.columns:
        out["relevance_unsteered"] = float(pd.to_numeric(df["relevance_unsteered"], errors="coerce").mean())
    return out


def leaderboard(generations: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per method × target (and ``target = "all"``, pooled), best pooled score first:
    the intervention's numbers with intervals, its setting, and its control's numbers
    (``control_*``; empty for methods without a control)."""
    rows = []
    for (method, target), g in list(generations.groupby(["method", "target"], sort=False)) + [
            ((m, "all"), g) for m, g in generations.groupby("method", sort=False)]:
        iv, ct = g[g.condition == "intervention"], g[g.condition == "control"]
        row = {"method": method, "family": iv["family"].iloc[0], "target": target,
               "strength": iv["strength"].iloc[0] if target != "all" else None,
               "layer": iv["layer"].iloc[0] if target != "all" else None, **_row(iv, n_boot, seed)}
        if len(ct):
            c = arm_score(ct)
            row.update({f"control_{k}": c[k] for k in ("target_rate", "fluent_rate", "relevance", "score")})
        rows.append(row)
    out = pd.DataFrame(rows)
    pooled = out[out.target == "all"].set_index("method")["score"]
    out["_rank"] = out["method"].map(pooled).fillna(-1)
    out = out.sort_values(["_rank", "method", "target"], ascending=[False, True, True], kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)
