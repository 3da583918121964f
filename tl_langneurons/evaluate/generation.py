"""Generation: the one place decoding defaults live (:class:`GenerationConfig`), seeded sampling
under interventions, and the neutral prompts steering starts from."""

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import _checks, _smoke
from ..backends import backend_of
from ..corpus import load_corpus
from ..errors import LangNeuronsError
from ..placement import compute_devices
from ..progress import track
from ..resume import rng_state, set_rng_state
from ..tokens import left_pad, max_length, pad_id
from .conditions import under

# Scripts written without spaces between words: prompts are cut by characters.
NO_SPACE = {"zh": 2, "ja": 2, "th": 4}  # characters per "word" when cutting a prompt


@dataclass(frozen=True)
class GenerationConfig:
    """How continuations are decoded; validated on construction.

    Defaults: sampling at T = 0.8 as Kojima et al.; top-k 50 and 24 new tokens as on the first
    organism (shared/ORGANISM.md): enough text for the language identifier, and fast on a CPU.
    ``greedy=True`` decodes greedily (temperature and top-k are then not used); ``stop_at_eos=False``
    always generates ``max_new_tokens`` tokens (a benchmark's fixed amount of work).
    """

    max_new_tokens: int = 24
    temperature: float = 0.8
    top_k: int | None = 50
    greedy: bool = False
    repetition_penalty: float = 1.0
    stop_at_eos: bool = True

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen; normalised once)
        put("max_new_tokens", _checks.positive_int("max_new_tokens", self.max_new_tokens))
        put("greedy", _checks.boolean("greedy", self.greedy))
        put("stop_at_eos", _checks.boolean("stop_at_eos", self.stop_at_eos))
        put("repetition_penalty", _checks.positive("repetition_penalty", self.repetition_penalty))
        put("top_k", _checks.positive_int("top_k", self.top_k, allow_none=True))
        t = _checks.number("temperature", self.temperature)
        if not self.greedy and not t > 0:
            raise LangNeuronsError(f"temperature must be > 0 when sampling (use greedy=True for greedy decoding), "
                                   f"got {self.temperature!r}")
        put("temperature", t)

    def as_dict(self) -> dict:
        return asdict(self)

    def generate_kwargs(self) -> dict:
        """The keyword arguments of TransformerLens's ``generate``."""
        kw = {"max_new_tokens": self.max_new_tokens, "stop_at_eos": self.stop_at_eos,
              "repetition_penalty": self.repetition_penalty}
        if self.greedy:
            return {**kw, "do_sample": False}
        return {**kw, "do_sample": True, "temperature": self.temperature, "top_k": self.top_k}


DEFAULT_GENERATION = GenerationConfig()


def check_generation(generation) -> GenerationConfig:
    if generation is None:
        return DEFAULT_GENERATION
    if not isinstance(generation, GenerationConfig):
        raise LangNeuronsError(f"generation must be a GenerationConfig, got {type(generation).__name__}")
    return generation


def _cut(text: str, language: str, words: int) -> str | None:
    """The first ``words`` words of ``text`` (characters for scripts without spaces), or None if too short."""
    per = NO_SPACE.get(language)
    if per is not None:
        n = per * words
        return text[:n].rstrip() if len(text) > n + 2 else None
    parts = text.split()
    return " ".join(parts[:words]) if len(parts) > words else None


def default_prompts(target: str | None = None, n_prompts: int = 16, words: int = 3, source=None,
                    seed: int = 0) -> list[tuple[str, str]]:
    """Neutral prompts: the first ``words`` words of sentences of the built-in ``parallel`` split.

    ``source`` names the prompt language(s); by default every language of the parallel split but
    the target, in turn (prompt *i* is in ``sources[i % len(sources)]``), so a continuation in the
    target language is a switch of language, not a continuation of the prompt's language. Sentences
    are drawn without replacement with ``seed``; each prompt comes from a different source sentence.
    Steering away from a prompt's language is harder than steering unconditional generation
    (``prompts=[""]``, BOS only), so report which prompts a rate was measured on.

    Returns ``[(prompt, prompt_language), ...]``.
    """
    n_prompts, words = _checks.positive_int("n_prompts", n_prompts), _checks.positive_int("prompt_words", words)
    parallel = load_corpus("builtin", split="parallel")
    if source is None:
        sources = [k for k in parallel.languages if k != target]
    else:
        sources = [source] if isinstance(source, str) else list(source)
        _checks.languages(sources, parallel.languages, "the built-in parallel split")
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(parallel[sources[0]]), generator=g).tolist()
    out, j = [], 0
    for i in range(n_prompts):
        lang = sources[i % len(sources)]
        while j < len(order):
            p = _cut(parallel[lang][order[j]], lang, words)
            j += 1
            if p:
                out.append((p, lang))
                break
        else:
            raise LangNeuronsError(f"the parallel split has too few sentences for {n_prompts} prompts")
    return out


@contextmanager
def seeded(model, seed: int):
    """Seed torch's generator(s) for a block and restore the caller's random state afterwards:
    those of every GPU the model computes on (a dispatched model samples where its logits are)."""
    cuda = [d for d in compute_devices(model) if d.type == "cuda"]
    devices = sorted({d.index if d.index is not None else torch.cuda.current_device() for d in cuda})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def generate_tokens(model, tokens, attention_mask, generation: GenerationConfig):
    """``[batch, prompt + new]`` token ids, KV-cached, under whatever hooks are on the model.

    A ``TransformerBridge`` generates through the Hugging Face model it wraps
    (``model.original_model.generate``): the bridge replaced that model's submodules in place, so
    every TransformerLens hook fires inside it, and Hugging Face's own loop handles left padding,
    position ids, sliding-window caches and sampling. A TL 3.x ``HookedTransformer`` has no wrapped
    model and uses its own cached ``generate`` (:func:`..hooked.generate`). Each is its back end's
    ``generate`` (:mod:`..backends`); the bridge's installs :mod:`..compat`'s KV-cache shim for
    transformers ≥ 5.24 (idempotent), so a bridge booted without :func:`~tl_langneurons.load_model`
    is cached correctly.
    """
    device = model.cfg.device
    tokens, attention_mask = tokens.to(device), attention_mask.to(device)
    return backend_of(model).generate(model, tokens, attention_mask, generation)


def check_lengths(model, rows: list[list[int]], generation: GenerationConfig, what: str = "prompt") -> None:
    """Refuse prompts that do not fit the model's context with ``max_new_tokens`` after them (the
    rule: refused, never silently cut; a 20,000-token prompt would otherwise grow without bound)."""
    ctx = max_length(model)
    if generation.max_new_tokens >= ctx:
        raise LangNeuronsError(f"max_new_tokens={generation.max_new_tokens} does not fit the model's context of "
                               f"{ctx} tokens (at most {ctx - 2}, leaving room for BOS and a prompt token)")
    for i, row in enumerate(rows):
        if len(row) + generation.max_new_tokens > ctx:
            raise LangNeuronsError(f"{what} {i + 1} is {len(row)} tokens long (BOS included): with max_new_tokens="
                                   f"{generation.max_new_tokens} it exceeds the model's context of {ctx} tokens; "
                                   f"shorten it to at most {ctx - generation.max_new_tokens} tokens or lower "
                                   "max_new_tokens")


def generate_ids(model, rows: list[list[int]], items: list, positions, generation: GenerationConfig,
                 batch_size: int, seed: int, desc: str = "generate", progress: bool = True, *,
                 store=None, unit: str | None = None) -> list[list[int]]:
    """The new token ids (up to, not including, EOS) of every row of prompt tokens, under ``items``.

    The prompt is tokenized exactly as the recorder does (BOS + text) and left-padded with an
    explicit attention mask, so every row's prompt ends at the same column and ``prompt`` /
    ``generated`` / ``last`` positions mean the same in every row. Generation is KV-cached
    (:func:`generate_tokens`): ``last`` intervenes on the last prompt token and then on each new
    token as it is produced (it stays intervened in the cache). Sampling draws from torch's global
    generator, hence :func:`seeded`; one intervention context per batch, so positions start again
    at 0 for each batch's sequences.

    With ``store`` (a :class:`~..resume.Checkpointed`) each batch is a unit of work named
    ``"{unit} batch {start}"``: its ids are saved with the generator's state after it, so a resumed
    run skips the batches done and samples the next one from exactly the same state.
    """
    check_lengths(model, rows, generation)
    eos = model.tokenizer.eos_token_id
    out: list[list[int]] = []
    cuda = sorted({d.index or 0 for d in compute_devices(model) if d.type == "cuda"})
    with torch.no_grad(), seeded(model, seed):
        for start in track(range(0, len(rows), batch_size), desc, progress, "generation",
                           size=lambda s: min(batch_size, len(rows) - s)):
            name = f"{unit} batch {start}"
            if store is not None and name in store:
                value, _ = store.load(name)
                set_rng_state(value["rng"])  # the next batch samples from where this one left off
                out.extend(value["ids"])
                continue
            tokens, mask = left_pad(rows[start:start + batch_size], pad_id(model.tokenizer))
            P = tokens.shape[1]
            with under(model, items, positions):
                seqs = generate_tokens(model, tokens, mask, generation)
            batch = []
            for row in seqs[:, P:].tolist():
                if eos is not None and eos in row:
                    row = row[:row.index(eos)]
                batch.append(row)
            if store is not None:
                store.save(name, {"ids": batch, "rng": rng_state(cuda)})
            out.extend(batch)
    return out


def decode(model, ids: list[list[int]]) -> list[str]:
    """The text of each row of new tokens (special tokens dropped, outer whitespace stripped)."""
    return [model.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def generate(model, rows: list[list[int]], items: list, positions, generation: GenerationConfig, batch_size: int,
             seed: int, desc: str = "generate", progress: bool = True) -> list[str]:
    """The continuations (text after the prompt, up to EOS) of :func:`generate_ids`."""
    return decode(model, generate_ids(model, rows, items, positions, generation, batch_size, seed, desc, progress))


def prompt_list(prompts, target, n_prompts, prompt_words, source, seed) -> list[tuple[str, str | None]]:
    if prompts is None:
        return default_prompts(target, _smoke.cap(n_prompts, _smoke.PROMPTS), prompt_words, source, seed)
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise LangNeuronsError(f"prompts must be a non-empty list of strings ('' = BOS only), got {prompts!r}")
    return [(p, None) for p in prompts[:_smoke.cap(len(prompts), _smoke.PROMPTS)]]




def read_prompts(path: str) -> list[str]:
    """One prompt per line (UTF-8); an empty line is BOS only (unconditional generation)."""
    p = Path(path)
    if not p.is_file():
        raise LangNeuronsError(f"no prompts file at {path!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LangNeuronsError(f"prompts file {path!r} is not UTF-8 ({e.reason} at byte {e.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line opens no new prompt
        lines.pop()
    if not lines:
        raise LangNeuronsError(f"prompts file {path!r} is empty; write one prompt per line (an empty line = BOS only)")
    return [line.rstrip("\r") for line in lines]
