"""What the back-end agreement test compares, computed by whichever TransformerLens is installed.

``python tests/backend_probe.py OUT.safetensors`` writes, for the built-in model: the activation
probabilities at ``act`` of 20 ``stats`` sentences in each of four languages
(``[lang, layer, d_mlp]``, float64) and every sentence's mean token NLL (float64), with the back
end that computed them in the metadata. ``tests/test_hooked.py`` runs it with the bridge
environment's python and compares with its own in-process result.
"""

import sys

import torch

LANGUAGES = ["en", "de", "ru", "zh"]
N_SENTENCES = 20


def compute(model) -> dict[str, torch.Tensor]:
    from tl_langneurons import load_corpus, record
    from tl_langneurons.evaluate.scoring import masked_sum, token_nll
    from tl_langneurons.tokens import prepare_batches

    corpus = load_corpus("builtin", languages=LANGUAGES, split="stats", max_sentences=N_SENTENCES)
    stats = record(model, corpus, site="act", batch_size=8, progress=False)
    texts = {k: corpus[k] for k in LANGUAGES}
    nll = []
    with torch.no_grad():
        for b in prepare_batches(model.tokenizer, texts, 8, 512).batches:
            values, counted = token_nll(model, b.tokens, b.attention_mask), b.counted[:, 1:]
            for r in range(values.shape[0]):
                nll.append(float(masked_sum(values[r], counted[r])) / float(counted[r].sum()))
    return {"activation_probability": stats.activation_probability(),
            "sentence_nll": torch.tensor(nll, dtype=torch.float64)}  # batch order: the same on both


def main(out: str) -> None:
    import importlib.metadata

    from safetensors.torch import save_file

    import tl_langneurons
    from tl_langneurons import load_model
    from tl_langneurons.models import backend

    torch.set_num_threads(1)
    result = compute(load_model("builtin"))
    save_file(result, out, metadata={"backend": backend(), "package": tl_langneurons.__file__,
                                     "transformer_lens": importlib.metadata.version("transformer-lens")})


if __name__ == "__main__":
    main(sys.argv[1])
