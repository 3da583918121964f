"""tl_langneurons: language-specific neurons in multilingual language models, on TransformerLens.

The data flows one way, and so do the imports: text (:mod:`.corpus`) → tokens (:mod:`.tokens`) →
hooks (:mod:`.models`) → statistics (:mod:`.record`, :mod:`.stats`) → neuron sets
(:mod:`.identify`, :mod:`.neurons`, :mod:`.analysis`) → interventions (:mod:`.intervene`) →
measurements (:mod:`.evaluate`) → files and figures (:mod:`.outputs`); :mod:`.pipeline` runs it all.
"""

__version__ = "0.1.0"

from .corpus import Corpus, load_corpus  # noqa: E402
from .errors import LangNeuronsError  # noqa: E402
from .intervene import Intervention, cache_site_activations, diffmean, diffmeans, intervene  # noqa: E402
from .loading import load_model  # noqa: E402
from .neurons import LanguageNeurons  # noqa: E402
from .stats import NeuronStats  # noqa: E402
from . import identify  # noqa: E402
from .record import record  # noqa: E402  (the function shadows the module name on purpose)

__all__ = [
    "Corpus", "Intervention", "LangNeuronsError", "LanguageNeurons", "NeuronStats", "cache_site_activations",
    "diffmean", "diffmeans", "identify", "intervene", "load_corpus", "load_model", "record", "__version__",
]
