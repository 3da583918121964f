"""Generation: the one place decoding defaults live (:class:`GenerationConfig`), seeded sampling
under interventions, and the neutral prompts steering starts from."""

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import _checks
from ..corpus import load_corpus
from ..errors import LangNeuronsError
from ..tokens import left_pad, pad_id
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
    """Seed torch's generator(s) for a block and restore the caller's random state afterwards."""
    device = torch.device(model.cfg.device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def generate(model, rows: list[list[int]], items: list, positions, generation: GenerationConfig, batch_size: int,
             seed: int, desc: str = "generate", progress: bool = True) -> list[str]:
    """Continuations (text after the prompt, up to EOS) of every row of prompt tokens, under ``items``.

    The bridge's ``generate`` is given token ids, not strings: for strings it decides BOS by
    ``cfg.default_prepend_bos`` and returns prompt + continuation decoded together, while here the
    prompt is tokenized exactly as the recorder does (BOS + text), left-padded with an explicit
    attention mask (every row's prompt ends at the same column, so ``prompt``/``generated``
    positions mean the same in every row), and only the new tokens are decoded. Sampling draws
    from torch's global generator, hence :func:`seeded`.

    Without a KV cache: with transformers 5.24, TransformerLens 4.3's ``TransformerBridge.generate``
    with ``use_past_kv_cache=True`` gives other tokens than the Hugging Face model it wraps on Llama
    models (the built-in model's greedy text degenerates into ``"SA....."``; right with
    transformers 5.23; ``test_generation_matches_hugging_face`` is the oracle), while recomputing
    the whole sequence at every step gives the Hugging Face model's tokens with either version.
    Measurements must not depend on which transformers a user has, so this costs several times
    the generation time of the cached path (6× in one measurement on the built-in model, 64 rows ×
    32 tokens). ``last`` (the cached meaning: the
    last prompt token, then each new token as it is produced) becomes the explicit positions
    ``P−1 … P+max_new_tokens−1``, which is what the cached run intervenes on.
    """
    eos = model.tokenizer.eos_token_id
    out: list[str] = []
    n_new = generation.max_new_tokens
    gen = generation.generate_kwargs()
    with torch.no_grad(), seeded(model, seed):
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not progress, leave=False):
            chunk = rows[start:start + batch_size]
            tokens, mask = left_pad(chunk, pad_id(model.tokenizer))
            P = tokens.shape[1]
            pos = tuple(range(P - 1, P + n_new)) if positions == "last" else positions
            # one context per batch: positions (prompt/generated) start again at 0 for each sequence
            with under(model, items, pos):
                seqs = model.generate(tokens.to(model.cfg.device), attention_mask=mask.to(model.cfg.device),
                                      return_type="tokens", verbose=False, use_past_kv_cache=False, **gen)
            for row in seqs[:, P:].tolist():
                if eos is not None and eos in row:
                    row = row[:row.index(eos)]
                out.append(model.tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


def prompt_list(prompts, target, n_prompts, prompt_words, source, seed) -> list[tuple[str, str | None]]:
    if prompts is None:
        return default_prompts(target, n_prompts, prompt_words, source, seed)
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise LangNeuronsError(f"prompts must be a non-empty list of strings ('' = BOS only), got {prompts!r}")
    return [(p, None) for p in prompts]




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
