"""The output contract (docs/outputs.md), run through the command line on a tiny model:

* a table of malformed inputs and misuse, each one line on stderr and exit status 2, never a traceback;
* every long stage killed after its n-th unit of work and resumed equals the uninterrupted run
  (in-process: the kill switch raises instead of SIGKILL; one real SIGKILL in a subprocess);
* a reused folder never shows a file of another run; nothing is written outside --out.

The commands run in-process through ``cli.main`` with ``load_model`` handing out the session's
tiny Llama (statistics and neurons are recorded on it once for the module).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SENTENCES, n_hooks
from safetensors.torch import load_file, save_file

from tl_langneurons import models, resume
from tl_langneurons._io import ResultFolder, safe_join, sha256
from tl_langneurons.cli import main
from tl_langneurons.errors import LangNeuronsError
from tl_langneurons.identify import lape
from tl_langneurons.record import record

LANGS = ["en", "de", "ru"]


class Killed(BaseException):
    """What the kill switch raises in-process (a real kill would end pytest)."""


@pytest.fixture(scope="module")
def tiny(tiny_llama, tiny_llama_dir, tmp_path_factory):
    """Statistics and LAPE neurons of the tiny Llama, and a corpus folder."""
    d = tmp_path_factory.mktemp("contract")
    texts = {k: SENTENCES[k] for k in LANGS}
    stats = record(tiny_llama, texts, batch_size=2, progress=False)
    stats.save(d / "stats")
    lape(stats, top_rate=0.2).save(d / "neurons.json")
    corpus = d / "corpus"
    corpus.mkdir()
    for k, v in texts.items():
        (corpus / f"{k}.txt").write_text("\n".join(v) + "\n", encoding="utf-8")
    return {"dir": d, "model": tiny_llama_dir, "stats": str(d / "stats"), "neurons": str(d / "neurons.json"),
            "corpus": str(corpus)}


@pytest.fixture
def loads(tiny_llama, tiny_llama_dir, monkeypatch):
    """``load_model`` handing out the session's tiny Llama (checked at the site asked for)."""
    real = models.load_model

    def load(model="builtin", device=None, dtype="float32", site="act", **kw):
        if model == tiny_llama_dir:
            models.check_site(tiny_llama, site)
            return tiny_llama
        return real(model, device, dtype, site, **kw)

    monkeypatch.setattr(models, "load_model", load)
    assert n_hooks(tiny_llama) == 0
    yield
    assert n_hooks(tiny_llama) == 0


@pytest.fixture
def kill_after(monkeypatch):
    """``kill_after(n)``: the n-th unit saved from now raises :class:`Killed`."""
    def raise_killed():
        raise Killed

    monkeypatch.setattr(resume, "_kill", raise_killed)

    def arm(n: int) -> None:
        monkeypatch.setattr(resume, "_saved", 0)
        monkeypatch.setenv(resume.KILL_ENV, str(n))
    yield arm
    monkeypatch.delenv(resume.KILL_ENV, raising=False)


def _one_line(capsys, expected: str) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.startswith("tl-langneurons: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    return lines[0]


def _files(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (hidden ones included) with its bytes; PDFs carry a timestamp, PNGs not."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.suffix != ".pdf"}


def _no_partials(parent: Path) -> None:
    assert not [p for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith((".partial", ".replaced"))]


# ---------------------------------------------------------------------------------------------
# Malformed artifacts and misuse: one line, exit 2


def _stats_copy(src: str, dst: Path, edit_json=None, edit_tensors=None, rehash: bool = True) -> str:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "stats.json").read_text())
    if edit_tensors is not None:
        t = load_file(str(dst / "stats.safetensors"))
        edit_tensors(t)
        save_file(t, str(dst / "stats.safetensors"))
        if rehash:
            meta["tensors_sha256"] = sha256(dst / "stats.safetensors")
    if edit_json is not None:
        meta = edit_json(meta)
    (dst / "stats.json").write_text(json.dumps(meta) if not isinstance(meta, bytes) else "", encoding="utf-8")
    if isinstance(meta, bytes):
        (dst / "stats.json").write_bytes(meta)
    return str(dst)


def _drop(key):
    def f(meta):
        meta.pop(key)
        return meta
    return f


def _set(key, value):
    def f(meta):
        meta[key] = value
        return meta
    return f


STATS_CASES = {
    "stats.json is []": (dict(edit_json=lambda m: []), "expected a JSON object"),
    "stats.json not UTF-8": (dict(edit_json=lambda m: b"\xff\xfe{"), "not valid JSON"),
    "stats.json lacks languages": (dict(edit_json=_drop("languages")), "'languages' must be"),
    "languages a string": (dict(edit_json=_set("languages", "enx")), "'languages' must be"),
    "a language that is a path": (dict(edit_json=_set("languages", ["en", "de", "../../x"])), "not a valid name"),
    "unknown site": (dict(edit_json=_set("site", "mlp")), "'site' must be one of"),
    "tensors missing sum_sq": (dict(edit_tensors=lambda t: t.pop("sum_sq")), "missing tensor(s) 'sum_sq'"),
    "an extra tensor": (dict(edit_tensors=lambda t: t.update(junk=torch.zeros(2))), "unexpected tensor(s) 'junk'"),
    "wrong dtype": (dict(edit_tensors=lambda t: t.update(sum=t["sum"].float())), "dtype torch.float32"),
    "wrong shape": (dict(edit_tensors=lambda t: t.update(n_tokens=torch.ones(5, dtype=torch.float64))), "shape"),
    "damaged tensors, checksum field removed": (
        dict(edit_tensors=lambda t: t["sum"].mul_(2), rehash=False, edit_json=_drop("tensors_sha256")),
        "'tensors_sha256'"),
    "damaged tensors, checksum kept": (dict(edit_tensors=lambda t: t["sum"].mul_(2), rehash=False), "does not match"),
}


@pytest.mark.parametrize("case", list(STATS_CASES))
def test_malformed_statistics_one_line(case, tiny, tmp_path, capsys):
    kw, expected = STATS_CASES[case]
    bad = _stats_copy(tiny["stats"], tmp_path / "bad", **kw)
    assert main(["identify", "--stats", bad, "--method", "lape", "--out", str(tmp_path / "n.json")]) == 2
    _one_line(capsys, expected)
    assert not (tmp_path / "n.json").exists()


def test_one_runs_json_with_another_runs_tensors(tiny, tiny_llama, tmp_path, capsys):
    other = record(tiny_llama, {k: SENTENCES[k][:2] for k in LANGS}, batch_size=2, progress=False)
    other.save(tmp_path / "other")
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny["stats"], mixed)
    shutil.copy(tmp_path / "other" / "stats.safetensors", mixed / "stats.safetensors")
    for drop in (False, True):  # with the checksum, and with the checksum field removed
        if drop:
            meta = json.loads((mixed / "stats.json").read_text())
            del meta["tensors_sha256"]
            (mixed / "stats.json").write_text(json.dumps(meta))
        assert main(["identify", "--stats", str(mixed), "--method", "lape", "--out", str(tmp_path / "n.json")]) == 2
        _one_line(capsys, "'tensors_sha256'" if drop else "does not match")


def test_misuse_table(tiny, loads, tmp_path, capsys):
    """Cases of the issue and ones that already held, each one line + exit 2 before any work."""
    (tmp_path / "a_file").write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.csv").write_text("old")
    evil = json.loads(Path(tiny["neurons"]).read_text())
    evil["neurons"]["../../../../ESCAPED"] = evil["neurons"].pop("de")
    (tmp_path / "evil.json").write_text(json.dumps(evil))
    long_prompt = tmp_path / "long.txt"
    long_prompt.write_text(" ".join(["word"] * 400) + "\n")  # > the tiny model's 256-token context
    (tmp_path / "pkl").mkdir()
    m, n, s = tiny["model"], tiny["neurons"], tiny["stats"]
    ppl = ["ppl", "--model", m, "--neurons", n, "--max-sentences", "2"]
    steer = ["steer", "--model", m, "--neurons", n, "--stats", s, "--target", "de", "--fluency-sentences", "0"]
    cases = [
        (["record", "--model", m, "--corpus", tiny["corpus"], "--out", str(tmp_path / "a_file")], "existing file"),
        (["record", "--model", m, "--corpus", tiny["corpus"], "--out", str(tmp_path / "a_file" / "sub")],
         "cannot write"),
        (["identify", "--stats", s, "--method", "lape", "--out", str(tmp_path / "a_file" / "n.json")], "cannot write"),
        (["identify", "--stats", s, "--method", "lape", "--out", str(tmp_path / "a_file")], "existing file"),
        (["identify", "--stats", s, "--method", "lape", "--out", str(tmp_path / "evil.json")], "already exists"),
        (ppl + ["--out", str(tmp_path / "a_file" / "sub")], "cannot write"),
        (ppl + ["--out", str(tmp_path / "a_file")], "existing file"),
        (ppl + ["--out", str(full)], "already holds a result; give --overwrite"),
        (ppl + ["--out", str(full), "--overwrite", "--resume"], "not both"),
        (ppl + ["--out", str(full), "--resume"], "no interrupted run to resume"),
        (["analyze", "--neurons", n, "--out", str(full)], "already holds a result"),
        (["tasks", "--model", m, "--tasks", "tlln_cloze_en", "--limit", "3", "--neurons", str(tmp_path / "evil.json"),
          "--target", "../../../../ESCAPED", "--mode", "zero", "--out", str(tmp_path / "m" / "trav")],
         "is not a valid name"),
        (steer + ["--prompts", str(long_prompt), "--out", str(tmp_path / "st")], "exceeds the model's context"),
        (steer + ["--bos-only", "--max-new-tokens", "20000", "--out", str(tmp_path / "st")], "does not fit"),
        (["demo", "--languages", "en", "--out", str(tmp_path / "demo")], "at least two"),
        (ppl + ["--languages", "en,xx", "--out", str(tmp_path / "p")], "'xx'"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        _one_line(capsys, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "evil.json", "full", "long.txt", "pkl"]
    assert [p.name for p in full.iterdir()] == ["old.csv"]
    assert not list(tmp_path.parent.glob("**/ESCAPED"))


def test_pickled_model_is_refused_cleanly(tiny_llama_dir, tmp_path, capsys):
    import fractions

    d = tmp_path / "pkl"
    shutil.copytree(tiny_llama_dir, d)
    weights = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save({**weights, "evil": fractions.Fraction(1, 3)}, d / "pytorch_model.bin")
    assert main(["record", "--model", str(d), "--corpus", "builtin", "--max-sentences", "1",
                 "--out", str(tmp_path / "s")]) == 2
    _one_line(capsys, "safe loader")
    assert not (tmp_path / "s").exists()


def test_safe_join_refuses_separators_dots_and_symlinks_out(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    for bad in ("../x", "a/b", "..", ".hidden", "", "a\\b", "x..y"):
        with pytest.raises(LangNeuronsError, match="not a valid name"):
            safe_join(root, bad)
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(LangNeuronsError, match="outside"):
        safe_join(root, "link", "x")
    assert safe_join(root, "zh-Hans", "tlln_cloze_en.jsonl") == root / "zh-Hans" / "tlln_cloze_en.jsonl"


# ---------------------------------------------------------------------------------------------
# The result folder as a unit


def test_a_kill_between_the_commit_renames_is_recovered(tmp_path):
    out = tmp_path / "r"
    for content in ("old", "new"):
        rf = ResultFolder(out, overwrite=True).open()
        (rf.path / "x.txt").write_text(content)
        if content == "old":
            rf.commit()
    # the new folder complete, the marker written, the old result set aside: then the kill
    rf._committing.write_bytes(b"")
    os.replace(out, rf._old)
    ResultFolder(out, overwrite=True).open()  # the next command finishes the commit
    assert (out / "x.txt").read_text() == "new" and not rf._old.exists() and not rf._committing.exists()
    # a kill before the marker: the old result stays, the partial folder waits for --resume/--overwrite
    rf = ResultFolder(out, overwrite=True).open()
    (rf.path / "y.txt").write_text("partial")
    (rf.resume_dir).mkdir()
    (rf.resume_dir / "u.json").write_text("{}")
    with pytest.raises(LangNeuronsError, match="--resume to continue"):
        ResultFolder(out).open()
    assert [p.name for p in out.iterdir()] == ["x.txt"]


def test_reused_folder_never_shows_another_runs_file(tiny, loads, tmp_path, capsys):
    out = tmp_path / "steer"
    base = ["steer", "--model", tiny["model"], "--neurons", tiny["neurons"], "--stats", tiny["stats"], "--target", "de",
            "--bos-only",
            "--n-samples", "1", "--max-new-tokens", "2", "--fluency-sentences", "0", "--out", str(out)]
    assert main(base + ["--factors", "4,16"]) == 0
    assert (out / "steer_rate_vs_factor.png").is_file()
    assert main(base + ["--factor", "4", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["steer.csv", "summary.json"]
    _no_partials(tmp_path)


# ---------------------------------------------------------------------------------------------
# Kill and resume: equal to the uninterrupted run


def _kill_and_resume(argv: list[str], tmp: Path, kills: tuple[int, ...], kill_after) -> None:
    """The uninterrupted run, then for each n a run killed after its n-th unit and resumed: equal."""
    ref = tmp / "ref"
    assert main(argv + ["--out", str(ref)]) == 0
    for n in kills:
        out = tmp / f"killed_after_{n}"
        kill_after(n)
        with pytest.raises(Killed):
            main(argv + ["--out", str(out)])
        assert not out.exists() and (out.parent / f".{out.name}.partial").is_dir()
        kill_after(0)
        assert main(argv + ["--out", str(out), "--resume"]) == 0
        assert _files(out) == _files(ref), n
    _no_partials(tmp)


def test_ppl_killed_and_resumed(tiny, loads, kill_after, tmp_path):
    argv = ["ppl", "--model", tiny["model"], "--neurons", tiny["neurons"], "--corpus", tiny["corpus"],
            "--batch-size", "2"]
    _kill_and_resume(argv, tmp_path, (1, 4), kill_after)


def test_steer_sweep_killed_mid_batch_and_resumed(tiny, loads, kill_after, tmp_path):
    """Seeded sampling: the kill lands between two batches of one condition; the generator's state
    saved with the first batch makes the second the same."""
    argv = ["steer", "--model", tiny["model"], "--neurons", tiny["neurons"], "--stats", tiny["stats"], "--target", "de",
            "--factors", "4,16", "--n-prompts", "2", "--n-samples", "2", "--batch-size", "2", "--max-new-tokens", "3",
            "--fluency-sentences", "0"]
    _kill_and_resume(argv, tmp_path, (4,), kill_after)


def test_a_changed_option_or_corpus_is_refused_on_resume(tiny, loads, kill_after, tmp_path, capsys):
    argv = ["ppl", "--model", tiny["model"], "--neurons", tiny["neurons"], "--batch-size", "2", "--out",
            str(tmp_path / "out")]
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny["corpus"], corpus)
    kill_after(2)
    with pytest.raises(Killed):
        main(argv + ["--corpus", str(corpus)])
    kill_after(0)
    assert main(argv + ["--corpus", str(corpus), "--seed", "1", "--resume"]) == 2
    _one_line(capsys, "options.seed (0 → 1)")
    (corpus / "en.txt").write_text("A different text altogether.\n")
    assert main(argv + ["--corpus", str(corpus), "--resume"]) == 2
    _one_line(capsys, "changed since it ran")


def test_record_resume_refuses_a_changed_corpus(tiny, tiny_llama, tmp_path):
    texts = {k: SENTENCES[k] for k in LANGS}
    record(tiny_llama, texts, batch_size=1, checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)
    changed = {**texts, "en": [s.upper() for s in texts["en"]]}
    with pytest.raises(LangNeuronsError, match="corpus_content"):
        record(tiny_llama, changed, batch_size=1, checkpoint_dir=tmp_path, checkpoint_every=2, resume=True,
               progress=False)
    (tmp_path / "rank0.checkpoint.safetensors").write_bytes(b"\x10\x00")  # half-written
    with pytest.raises(LangNeuronsError, match="damaged"):
        record(tiny_llama, texts, batch_size=1, checkpoint_dir=tmp_path, resume=True, progress=False)


def test_tasks_killed_and_resumed_and_late_checks(tiny, loads, kill_after, tmp_path, capsys):
    argv = ["tasks", "--model", tiny["model"], "--tasks", "tlln_cloze_en", "--limit", "2", "--neurons",
            tiny["neurons"], "--target", "de", "--control", "none"]
    _kill_and_resume(argv, tmp_path, (1,), kill_after)
    # a metric no task reports fails after the baseline, and --resume with the right one loses nothing
    assert main(argv + ["--metric", "bogus", "--out", str(tmp_path / "m")]) == 2
    _one_line(capsys, "reports no metric 'bogus'")
    assert main(argv + ["--metric", "acc", "--resume", "--out", str(tmp_path / "m")]) == 0
    assert "resuming tasks" in capsys.readouterr().err
    # one document: lm-eval gives no stderr, the summary line says n/a
    assert main(["tasks", "--model", tiny["model"], "--tasks", "tlln_cloze_en", "--limit", "1",
                 "--out", str(tmp_path / "one")]) == 0
    assert "± n/a (n=1)" in capsys.readouterr().out


def test_finetune_killed_mid_training_and_resumed(tiny, loads, kill_after, tmp_path):
    """Killed after optimizer step 2 of the first run, or inside the second run: the adapters equal
    the uninterrupted run's bit for bit (AdamW's moments and the example order restored)."""
    argv = ["finetune", "--model", tiny["model"], "--neurons", tiny["neurons"], "--language", "de", "--train",
            "text:de", "--train-limit", "6", "--batch-size", "2", "--epochs", "2", "--controls", "full-lora",
            "--no-attention", "--lr", "0.01", "--checkpoint-every", "1"]
    _kill_and_resume(argv, tmp_path, (2, 6), kill_after)


def test_a_real_sigkill_then_resume(tiny, loads, tmp_path):
    """The kill switch's real SIGKILL in a subprocess, then the resumed run equals an uninterrupted one."""
    argv = ["ppl", "--model", tiny["model"], "--neurons", tiny["neurons"], "--corpus", tiny["corpus"],
            "--batch-size", "2"]
    env = {**os.environ, resume.KILL_ENV: "3", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "TQDM_DISABLE": "1"}
    p = subprocess.run([sys.executable, "-m", "tl_langneurons", *argv, "--out", str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr
    assert main(argv + ["--out", str(tmp_path / "out"), "--resume"]) == 0
    assert main(argv + ["--out", str(tmp_path / "ref")]) == 0
    assert _files(tmp_path / "out") == _files(tmp_path / "ref")


def test_a_damaged_unit_and_another_runs_merged_model_are_refused(tiny, loads, kill_after, tmp_path, capsys):
    argv = ["ppl", "--model", tiny["model"], "--neurons", tiny["neurons"], "--corpus", tiny["corpus"],
            "--batch-size", "2", "--out", str(tmp_path / "out")]
    kill_after(2)
    with pytest.raises(Killed):
        main(argv)
    kill_after(0)
    unit = next(p for p in (tmp_path / ".out.partial" / ".resume").rglob("*.json") if p.name != "key.json")
    unit.write_text('{"name": "baseline", "val')  # a torn write
    assert main(argv + ["--resume"]) == 2
    _one_line(capsys, "is damaged")
    # a merged folder that does not come from the adapter beside it is never served
    from tl_langneurons.finetune.adapter import MERGED_FROM, load_finetuned

    assert main(["finetune", "--model", tiny["model"], "--neurons", tiny["neurons"], "--language", "de", "--train",
                 "text:de", "--train-limit", "2", "--batch-size", "2", "--controls", "none", "--no-attention",
                 "--out", str(tmp_path / "ft")]) == 0
    run = tmp_path / "ft" / "masked-lora"
    shutil.copytree(tiny["model"], run / "merged")
    (run / "merged" / MERGED_FROM).write_text(json.dumps({"adapter_sha256": "0" * 64}))
    with pytest.raises(LangNeuronsError, match="was not merged from the adapter"):
        load_finetuned(run)
