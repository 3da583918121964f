"""Analyses of language-neuron sets: counts, layer placement, overlaps, relatedness, stability.

Everything here takes :class:`~tl_langneurons.neurons.LanguageNeurons` (or two of them) and returns
a tidy :class:`pandas.DataFrame` — one row per measurement — or, for the permutation tests, a
:class:`PermutationTest` of numbers plus the DataFrame of the pairs it was computed on. Languages
keep the order of ``neurons.languages`` in every output. Pooled rows use the language ``"all"``
and count the union of the sets, so a neuron shared by several languages is counted once.

Overlap measures of a pair of sets ``A``, ``B`` (methods page: [analyses](methods.md#analyses)): ``intersection = |A∩B|``,
``jaccard = |A∩B| / |A∪B|``, ``overlap_coefficient = |A∩B| / min(|A|, |B|)``; undefined values
(two empty sets; an empty set for the overlap coefficient) are NaN.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from . import _checks
from .errors import LangNeuronsError, choices
from .languages import LANGUAGES, normalize_code
from .neurons import LanguageNeurons
from .stats import NeuronStats

ALL = "all"  # the pooled pseudo-language: the union of every language's set
METRICS = ("jaccard", "overlap_coefficient", "intersection")
GROUPINGS = ("family", "script", "branch")
CORRELATIONS = ("pearson", "spearman")
# Permutation statistics within this relative distance of the observed one count as "as extreme":
# the vectorised and the naive computation differ in the last bits, and ties must not depend on it.
_TIE_TOL = 1e-12


def _flat_masks(neurons: LanguageNeurons) -> np.ndarray:
    """``[lang, layer * d_mlp]`` booleans, languages in ``neurons.languages`` order."""
    m = neurons.masks()
    return np.asarray(m.reshape(m.shape[0], -1).cpu().numpy(), dtype=bool)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise LangNeuronsError(f"unknown overlap metric {metric!r}; allowed: {choices(METRICS)}")


# ---------------------------------------------------------------------------------------------
# Counts and placement


def counts(neurons: LanguageNeurons) -> pd.DataFrame:
    """Neurons per language: ``language, n_neurons, share_of_model``, then the pooled ``"all"`` row (union)."""
    m = _flat_masks(neurons)
    n_units = m.shape[1]
    n = list(m.sum(1)) + [int(m.any(0).sum())]
    return pd.DataFrame({
        "language": list(neurons.languages) + [ALL],
        "n_neurons": np.asarray(n, dtype=np.int64),
        "share_of_model": np.asarray(n, dtype=float) / n_units,
    })


def layer_distribution(neurons: LanguageNeurons) -> pd.DataFrame:
    """Per language and layer: ``count``, ``share_of_layer = count / d_mlp``, ``share_of_language``.

    ``share_of_language`` is the fraction of the language's set that lies in the layer (0 for an
    empty set). Every (language, layer) pair has a row, zeros included; the pooled rows
    (``language == "all"``) count the union of all sets.
    """
    m = neurons.masks().cpu().numpy().astype(bool)  # [K, L, I]
    per_layer = np.concatenate([m.sum(2), m.any(0).sum(1)[None]], axis=0)  # [K + 1, L]
    totals = per_layer.sum(1, keepdims=True)
    share_lang = np.divide(per_layer, totals, out=np.zeros(per_layer.shape), where=totals > 0)
    langs = list(neurons.languages) + [ALL]
    L = per_layer.shape[1]
    return pd.DataFrame({
        "language": np.repeat(langs, L),
        "layer": np.tile(np.arange(L), len(langs)),
        "count": per_layer.ravel().astype(np.int64),
        "share_of_layer": per_layer.ravel() / neurons.d_mlp,
        "share_of_language": share_lang.ravel(),
    })


def layer_matrix(distribution: pd.DataFrame, value: str = "count") -> pd.DataFrame:
    """Pivot :func:`layer_distribution` to a language × layer table (pooled rows left out)."""
    if value not in ("count", "share_of_layer", "share_of_language"):
        raise LangNeuronsError(f"unknown value {value!r}; allowed: 'count', 'share_of_layer', 'share_of_language'")
    df = distribution[distribution.language != ALL]
    return df.pivot(index="language", columns="layer", values=value).reindex(pd.unique(df.language))


def shared_by_k(neurons: LanguageNeurons) -> pd.DataFrame:
    """How many neurons belong to exactly ``k`` languages, ``k = 1 … K``: ``k, n_neurons, share``.

    ``share`` is the fraction of the union (every neuron in at least one set).
    """
    m = _flat_masks(neurons)
    K = m.shape[0]
    per_neuron = m.sum(0)
    n = np.bincount(per_neuron, minlength=K + 1)[1:]
    total = n.sum()
    return pd.DataFrame({
        "k": np.arange(1, K + 1),
        "n_neurons": n.astype(np.int64),
        "share": n / total if total else np.zeros(K),
    })


# ---------------------------------------------------------------------------------------------
# Pairwise overlap


def _overlap_arrays(m: np.ndarray) -> dict[str, np.ndarray]:
    """``[K, K]`` sizes, intersections and both measures from flat masks."""
    mf = m.astype(np.float32)  # half the memory of float64; sums of 0/1 stay exact below 2**24 neurons
    inter = (mf @ mf.T).astype(np.float64)
    size = np.diag(inter).copy()
    union = size[:, None] + size[None, :] - inter
    smaller = np.minimum(size[:, None], size[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / union, np.nan)
        oc = np.where(smaller > 0, inter / smaller, np.nan)
    return {"size": size, "intersection": inter, "union": union, "jaccard": jac, "overlap_coefficient": oc}


def overlap(neurons: LanguageNeurons) -> pd.DataFrame:
    """Every ordered pair of languages, diagonal included (so it pivots to a full square).

    Columns: ``lang_a, lang_b, size_a, size_b, intersection, union, jaccard, overlap_coefficient``.
    """
    o = _overlap_arrays(_flat_masks(neurons))
    langs = list(neurons.languages)
    K = len(langs)
    return pd.DataFrame({
        "lang_a": np.repeat(langs, K),
        "lang_b": np.tile(langs, K),
        "size_a": np.repeat(o["size"], K).astype(np.int64),
        "size_b": np.tile(o["size"], K).astype(np.int64),
        "intersection": o["intersection"].ravel().astype(np.int64),
        "union": o["union"].ravel().astype(np.int64),
        "jaccard": o["jaccard"].ravel(),
        "overlap_coefficient": o["overlap_coefficient"].ravel(),
    })


def overlap_matrix(pairs: pd.DataFrame, metric: str = "jaccard") -> pd.DataFrame:
    """Pivot :func:`overlap` to a square language × language table of ``metric``."""
    check_metric(metric)
    order = pd.unique(pairs.lang_a)
    return pairs.pivot(index="lang_a", columns="lang_b", values=metric).reindex(index=order, columns=order)


def overlap_linkage(matrix: pd.DataFrame, method: str = "average") -> np.ndarray:
    """Hierarchical clustering of a square :func:`overlap_matrix` (scipy linkage), for clustermaps.

    Distance is ``max − value`` over the off-diagonal entries, so the most-overlapping pair is
    closest; undefined overlaps (empty sets) count as the largest distance.
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    v = matrix.to_numpy(dtype=np.float64).copy()
    off = ~np.eye(len(v), dtype=bool)
    top = np.nanmax(v[off]) if np.isfinite(v[off]).any() else 1.0
    d = np.where(np.isfinite(v), top - v, top)
    d = (d + d.T) / 2  # exact symmetry for squareform, whatever the float rounding
    np.fill_diagonal(d, 0.0)
    return linkage(squareform(np.clip(d, 0.0, None), checks=False), method=method)


# ---------------------------------------------------------------------------------------------
# Relatedness


def language_table(languages: list[str], strict: bool = True) -> pd.DataFrame:
    """Metadata per language (``language, name, script, family, branch``) from :mod:`.languages`.

    Codes are matched through :func:`~tl_langneurons.languages.normalize_code` (``deu_Latn`` → ``de``)
    but reported as given. Unknown languages raise, naming all of them, unless ``strict=False``,
    which labels them ``"unknown"`` (for figures).
    """
    unknown = [k for k in languages if normalize_code(k) not in LANGUAGES]
    if unknown and strict:
        raise LangNeuronsError(
            f"no family/script metadata for language(s) {choices(unknown)}; known: {', '.join(sorted(LANGUAGES))}"
        )
    rows = []
    for k in languages:
        meta = LANGUAGES.get(normalize_code(k))
        rows.append({"language": k, "name": meta.name if meta else k,
                     **{g: getattr(meta, g) if meta else "unknown" for g in GROUPINGS}})
    return pd.DataFrame(rows, columns=["language", "name", *GROUPINGS])


def _groups(languages: list[str], by: str) -> np.ndarray:
    if by not in GROUPINGS:
        raise LangNeuronsError(f"unknown grouping {by!r}; allowed: {choices(GROUPINGS)}")
    return language_table(languages)[by].to_numpy()


def relatedness_matrix(languages: list[str], by: str = "family") -> pd.DataFrame:
    """Square 0/1 table: 1 where two languages share a ``family``/``script``/``branch`` (diagonal 1)."""
    g = _groups(list(languages), by)
    return pd.DataFrame((g[:, None] == g[None, :]).astype(np.int64), index=list(languages), columns=list(languages))


@dataclass(frozen=True)
class PermutationTest:
    """Outcome of :func:`relatedness_test` or :func:`mantel_test`.

    ``p_value`` is one-sided (related languages overlap *more*): ``(1 + #{null ≥ statistic}) /
    (1 + n_permutations)``. ``within_mean`` / ``across_mean`` are the mean overlap of pairs in the
    same group / in different groups (NaN when relatedness is a user matrix). ``excluded`` lists
    languages left out because their set is empty (their overlap says nothing about relatedness).
    """

    test: str  # "within_vs_across", "mantel_pearson" or "mantel_spearman"
    by: str
    metric: str
    statistic: float
    p_value: float
    n_permutations: int
    n_languages: int
    n_pairs: int
    within_mean: float
    across_mean: float
    group_sizes: dict[str, int]
    excluded: tuple[str, ...]
    pairs: pd.DataFrame = field(compare=False, repr=False)  # lang_a, lang_b, overlap, relatedness
    null: np.ndarray = field(compare=False, repr=False)  # the statistic under each permutation

    def to_frame(self) -> pd.DataFrame:
        """One row of the numbers, for stacking the tests of several models or settings."""
        keys = ("test", "by", "metric", "statistic", "p_value", "n_permutations", "n_languages", "n_pairs",
                "within_mean", "across_mean")
        return pd.DataFrame([{k: getattr(self, k) for k in keys}])


def _prepare(neurons: LanguageNeurons, metric: str) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Languages with a non-empty set and their ``[K, K]`` overlap matrix."""
    check_metric(metric)
    m = _flat_masks(neurons)
    keep = m.any(1)
    langs = [k for k, ok in zip(neurons.languages, keep) if ok]
    excluded = tuple(k for k, ok in zip(neurons.languages, keep) if not ok)
    if len(langs) < 3:
        raise LangNeuronsError(f"a relatedness test needs at least 3 languages with neurons, got {len(langs)}: {langs}")
    return langs, _overlap_arrays(m[keep])[metric].astype(np.float64), excluded


def _permutations(K: int, n_permutations: int, seed: int) -> np.ndarray:
    """``[n_permutations, K]`` independent uniform permutations of ``0 … K-1``; rows are reproducible from ``seed``."""
    _checks.positive_int("n_permutations", n_permutations)
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(K, dtype=np.int32), (n_permutations, 1)), axis=1)


def _chunks(n: int, n_pairs: int):
    # Bound the [chunk, n_pairs] intermediate to ~32 MB whatever the number of languages.
    step = max(1, (1 << 22) // max(n_pairs, 1))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _p_value(null: np.ndarray, observed: float) -> float:
    hits = int((null >= observed - _TIE_TOL * max(1.0, abs(observed))).sum())
    return (1 + hits) / (1 + len(null))


def _pairs_frame(langs: list[str], iu: tuple[np.ndarray, np.ndarray], x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    a = np.asarray(langs)
    return pd.DataFrame({"lang_a": a[iu[0]], "lang_b": a[iu[1]], "overlap": x, "relatedness": y})


def relatedness_test(neurons: LanguageNeurons, by: str = "family", metric: str = "jaccard",
                     n_permutations: int = 10000, seed: int = 0) -> PermutationTest:
    """Do languages of the same group share more neurons than languages of different groups?

    Statistic: mean ``metric`` over pairs of distinct languages in the same group minus the mean over
    pairs in different groups. Null: the group labels permuted over the languages (group sizes
    kept), all permutations drawn at once and evaluated as one matrix product per chunk.
    """
    langs, O, excluded = _prepare(neurons, metric)
    g = _groups(langs, by)
    codes = np.unique(g, return_inverse=True)[1].ravel()
    K = len(langs)
    iu = np.triu_indices(K, 1)
    x = O[iu]
    same = codes[iu[0]] == codes[iu[1]]
    n_within = int(same.sum())
    n_pairs = len(x)
    if n_within == 0 or n_within == n_pairs:
        raise LangNeuronsError(
            f"grouping by {by!r} puts {'no' if n_within == 0 else 'every'} pair of languages in the same group; "
            f"nothing to compare (languages: {', '.join(langs)})"
        )
    within, across = x[same].mean(), x[~same].mean()
    observed = float(within - across)

    perms = _permutations(K, n_permutations, seed)
    null = np.empty(n_permutations)
    total = x.sum()
    for s in _chunks(n_permutations, n_pairs):
        gp = codes[perms[s]]  # each language's group under the permuted labelling
        same_p = (gp[:, iu[0]] == gp[:, iu[1]]).astype(np.float64)  # the number of such pairs never changes
        w = same_p @ x
        null[s] = w / n_within - (total - w) / (n_pairs - n_within)
    return PermutationTest(
        test="within_vs_across", by=by, metric=metric, statistic=observed, p_value=_p_value(null, observed),
        n_permutations=n_permutations, n_languages=K, n_pairs=n_pairs, within_mean=float(within),
        across_mean=float(across), group_sizes=_group_sizes(g), excluded=excluded,
        pairs=_pairs_frame(langs, iu, x, same.astype(np.int64)), null=null,
    )


def _group_sizes(g: np.ndarray) -> dict[str, int]:
    names, n = np.unique(g, return_counts=True)
    return {str(k): int(v) for k, v in sorted(zip(names, n), key=lambda t: (-t[1], t[0]))}


def mantel_test(neurons: LanguageNeurons, by: str | pd.DataFrame = "family", metric: str = "jaccard",
                method: str = "pearson", n_permutations: int = 10000, seed: int = 0) -> PermutationTest:
    """Mantel test: correlation of the overlap matrix with a relatedness matrix, over distinct pairs.

    ``by`` is a grouping (``family``/``script``/``branch``, giving :func:`relatedness_matrix`) or a
    square DataFrame of *similarities* indexed by language code (negate a distance matrix). The null
    permutes the relatedness matrix's rows and columns jointly — equivalent to permuting the overlap
    matrix, and it keeps the overlap values fixed. Spearman ranks both upper triangles (average
    ranks for ties); a joint permutation only moves entries, so the ranks are taken once.
    """
    if method not in CORRELATIONS:
        raise LangNeuronsError(f"unknown correlation {method!r}; allowed: {choices(CORRELATIONS)}")
    langs, O, excluded = _prepare(neurons, metric)
    K = len(langs)
    iu = np.triu_indices(K, 1)
    if isinstance(by, pd.DataFrame):
        missing = [k for k in langs if k not in by.index or k not in by.columns]
        if missing:
            raise LangNeuronsError(f"relatedness matrix has no row/column for language(s) {choices(missing)}")
        R = by.loc[langs, langs].to_numpy(dtype=np.float64)
        label, sizes = "matrix", {}
    else:
        R = relatedness_matrix(langs, by).to_numpy(dtype=np.float64)
        label, sizes = by, _group_sizes(_groups(langs, by))
    x, y = O[iu], R[iu]
    raw_x, raw_y = x, y
    if method == "spearman":
        x = rankdata(x)
        Rr = np.zeros_like(R)
        Rr[iu] = rankdata(y)
        R = Rr + Rr.T
        y = R[iu]
    xc, yc = x - x.mean(), y - y.mean()
    nx, ny = np.sqrt(xc @ xc), np.sqrt(yc @ yc)
    if nx == 0 or ny == 0:
        which = "overlap" if nx == 0 else "relatedness"
        raise LangNeuronsError(f"the {which} values are all equal across language pairs; the correlation is undefined")
    observed = float(xc @ yc / (nx * ny))

    perms = _permutations(K, n_permutations, seed)
    null = np.empty(n_permutations)
    for s in _chunks(n_permutations, len(x)):
        p = perms[s]
        yp = R[p[:, iu[0]], p[:, iu[1]]]  # [chunk, pairs]; mean and norm of y are permutation-invariant
        null[s] = (yp - y.mean()) @ xc / (nx * ny)
    within = across = float("nan")
    if label != "matrix":  # a 0/1 matrix: report the two means as relatedness_test does
        related = raw_y > 0
        within, across = float(raw_x[related].mean()), float(raw_x[~related].mean())
    return PermutationTest(
        test=f"mantel_{method}", by=label, metric=metric, statistic=observed, p_value=_p_value(null, observed),
        n_permutations=n_permutations, n_languages=K, n_pairs=len(x), within_mean=within, across_mean=across,
        group_sizes=sizes, excluded=excluded, pairs=_pairs_frame(langs, iu, raw_x, raw_y), null=null,
    )


# ---------------------------------------------------------------------------------------------
# Stability


def jaccard_sets(a: LanguageNeurons, b: LanguageNeurons) -> pd.DataFrame:
    """Per language, how much two neuron sets of the same model agree.

    Columns: ``language, size_a, size_b, intersection, jaccard, chance_jaccard``. ``chance_jaccard``
    is the Jaccard two random sets of these sizes would have (expected intersection
    ``|A|·|B|/N`` over the expected union), the floor to read ``jaccard`` against.
    """
    if set(a.languages) != set(b.languages):
        raise LangNeuronsError(
            f"the two neuron sets cover different languages: {sorted(set(a.languages) ^ set(b.languages))} not in both"
        )
    a.check_compatible(b)  # same site, model and shape, or the comparison means nothing
    ma, mb = _flat_masks(a), _flat_masks(b)
    mb = mb[[list(b.languages).index(k) for k in a.languages]]
    n_units = ma.shape[1]
    sa, sb = ma.sum(1).astype(float), mb.sum(1).astype(float)
    inter = (ma & mb).sum(1).astype(float)
    union = sa + sb - inter
    expected = sa * sb / n_units
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / union, np.nan)
        chance = np.where(sa + sb - expected > 0, expected / (sa + sb - expected), np.nan)
    return pd.DataFrame({
        "language": list(a.languages), "size_a": sa.astype(np.int64), "size_b": sb.astype(np.int64),
        "intersection": inter.astype(np.int64), "jaccard": jac, "chance_jaccard": chance,
    })


def split_half_stability(stats_a: NeuronStats, stats_b: NeuronStats,
                         method: Callable[[NeuronStats], LanguageNeurons]) -> pd.DataFrame:
    """Identify neurons on two disjoint halves of the text with ``method`` and compare: :func:`jaccard_sets`.

    ``method`` maps statistics to neuron sets, e.g. ``lambda s: lape(s, top_rate=0.02)``. Each
    half has half the tokens, so this understates the stability of the set from all the text.
    """
    stats_a.check_compatible(stats_b)
    if set(stats_a.languages) != set(stats_b.languages):
        raise LangNeuronsError(
            f"the two halves cover different languages: {sorted(set(stats_a.languages) ^ set(stats_b.languages))} not in both"
        )
    # the same language order on both sides, so methods that depend on it see the same problem twice
    stats_b = stats_b.select(list(stats_a.languages))
    return jaccard_sets(method(stats_a), method(stats_b))
