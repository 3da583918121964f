"""Corpus sources: the built-in splits, folders of <lang>.txt, and Hugging Face datasets from local files."""

import json

import pytest

from tl_langneurons import LangNeuronsError, load_corpus
from tl_langneurons.corpus import builtin_languages, split_of

ALL27 = "am ar bn de el en es fa fi fr he hi id it ja ka ko nl pl pt ru ta th tr uk vi zh".split()


def test_builtin_has_27_languages_and_parallel_17():
    assert builtin_languages("stats") == ALL27
    par = load_corpus("builtin", split="parallel")
    assert len(par) == 17 and {len(v) for v in par.texts.values()} == {1023}


def test_builtin_splits_are_disjoint_deterministic_and_sized():
    sizes = {}
    for split in ("train", "stats", "eval"):
        c = load_corpus("builtin", languages=["en", "ka"], split=split)
        sizes[split] = c
        assert all(split_of(s) == split for s in c["en"])
    for lang in ("en", "ka"):
        sets = [set(sizes[s][lang]) for s in ("train", "stats", "eval")]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        total = sum(len(x) for x in sets)
        assert 0.15 < len(sets[1]) / total < 0.25 and 0.06 < len(sets[2]) / total < 0.14
    par = set(load_corpus("builtin", languages=["en"], split="parallel")["en"])
    assert not (par & set(sizes["train"]["en"]))
    again = load_corpus("builtin", languages=["en"], split="stats")
    assert again["en"] == sizes["stats"]["en"]


def test_max_sentences_takes_first_n_and_seed_shuffles():
    full = load_corpus("builtin", languages=["de"], split="eval")
    first = load_corpus("builtin", languages=["de"], split="eval", max_sentences=5)
    assert first["de"] == full["de"][:5]
    s1 = load_corpus("builtin", languages=["de"], split="eval", max_sentences=5, seed=1)
    s1b = load_corpus("builtin", languages=["de"], split="eval", max_sentences=5, seed=1)
    assert s1["de"] == s1b["de"] and s1["de"] != first["de"]


def test_builtin_errors():
    with pytest.raises(LangNeuronsError, match="unknown language 'xx'.*available: am, ar"):
        load_corpus("builtin", languages=["en", "xx"])
    with pytest.raises(LangNeuronsError, match="unknown split"):
        load_corpus("builtin", split="test")
    with pytest.raises(LangNeuronsError, match="max_sentences"):
        load_corpus("builtin", max_sentences=-3)
    with pytest.raises(LangNeuronsError, match="unknown language 'fa'"):
        load_corpus("builtin", languages=["fa"], split="parallel")


def test_folder_source(tmp_path):
    (tmp_path / "en.txt").write_text("Hello there.\n\n  \nSecond line.\n", encoding="utf-8")
    (tmp_path / "de.txt").write_text("Guten Tag.\n", encoding="utf-8")
    c = load_corpus(str(tmp_path))
    assert c.languages == ["de", "en"] and c["en"] == ["Hello there.", "Second line."]
    assert load_corpus(str(tmp_path), languages=["en"], max_sentences=1)["en"] == ["Hello there."]
    with pytest.raises(LangNeuronsError, match="unknown language 'fr'"):
        load_corpus(str(tmp_path), languages=["fr"])


def test_folder_errors(tmp_path):
    with pytest.raises(LangNeuronsError, match="does not exist"):
        load_corpus(str(tmp_path / "nope"))
    (tmp_path / "en.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(LangNeuronsError, match="is empty"):
        load_corpus(str(tmp_path))
    (tmp_path / "en.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(LangNeuronsError, match="not UTF-8"):
        load_corpus(str(tmp_path))


def _write_hub_like_dataset(root, configs: dict[str, dict[str, list[str]]], extra_columns=None):
    """A local folder laid out like a Hub dataset repository: parquet files per config and split,
    declared in the README's YAML header, which ``datasets.load_dataset`` reads the same way."""
    import pandas as pd

    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines.append(f"- config_name: {config}")
        lines.append("  data_files:")
        for split, texts in splits.items():
            path = root / config / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            df = pd.DataFrame({"text": texts, **(extra_columns or {})})
            df.to_parquet(path)
            lines.append(f"  - split: {split}")
            lines.append(f"    path: {config}/{split}.parquet")
    lines.append("---")
    (root / "README.md").write_text("\n".join(lines) + "\n")


def test_hf_flores_layout_from_local_files(tmp_path):
    root = tmp_path / "flores_plus"
    _write_hub_like_dataset(root, {
        "deu_Latn": {"dev": ["Ein Satz.", "Noch einer."], "devtest": ["Test."]},
        "fra_Latn": {"dev": ["Une phrase.", "Encore une."], "devtest": ["Essai."]},
    })
    c = load_corpus(f"hf:{root}", languages=["de", "fr"])
    assert c["de"] == ["Ein Satz.", "Noch einer."] and c["fr"][0] == "Une phrase."
    c = load_corpus(f"hf:{root}:devtest", languages=["de"])
    assert c["de"] == ["Test."]


def test_hf_generic_layout_with_language_placeholder(tmp_path):
    root = tmp_path / "mydata"
    _write_hub_like_dataset(root, {"en": {"train": ["One.", "Two."]}, "de": {"train": ["Eins."]}})
    c = load_corpus(f"hf:{root}:{{lang}}:train", languages=["en", "de"], max_sentences=1)
    assert c["en"] == ["One."] and c["de"] == ["Eins."]
    with pytest.raises(LangNeuronsError, match="explicit list of languages"):
        load_corpus(f"hf:{root}:{{lang}}:train")


def test_hf_wikipedia_layout_splits_articles(tmp_path):
    root = tmp_path / "wikipedia"
    article = "Title\n\nThis is the first paragraph of a long article.\n== Section ==\nAnother paragraph of prose here."
    _write_hub_like_dataset(root, {"20231101.de": {"train": [article]}})
    c = load_corpus(f"hf:{root}", languages=["de"])
    assert c["de"] == ["This is the first paragraph of a long article.", "Another paragraph of prose here."]


def test_source_spec_recorded():
    c = load_corpus("builtin", languages=["en"], split="eval", max_sentences=3, seed=None)
    assert json.loads(json.dumps(c.spec)) == {"source": "builtin", "split": "eval", "max_sentences": 3, "seed": None}
