"""Near-duplicate queries: MinHash LSH candidates, verified, clustered by union-find on disk-backed
state small enough for millions of queries.

- ``shingles``: word 3-grams of the normalised text (NFKC, case-folded; a word is a run of word
  characters or a run of punctuation, so "12+7" and "12-7" share no 3-gram), or character
  5-grams when most of the text is in scripts written without spaces (Chinese, Japanese, Thai...).
- ``numbers``: the numbers of a query and the arithmetic signs beside them. Queries that state
  different numbers are never near-duplicates (a word problem with one number changed is another
  problem): the numbers are hashed into every band key.
- ``Signer``: a MinHash signature per query (datasketch's ``MinHash``: ``clear`` and
  ``update_batch`` on one object, with xxhash's xxh32 as its hash function: deterministic, and
  faster than the default SHA-1), cut into ``bands`` bands of ``rows`` values; ``bands`` and
  ``rows`` come from the Jaccard threshold exactly as datasketch's ``MinHashLSH`` chooses them
  (its private helper ``datasketch.lsh._optimal_param``), weighting a missed pair 9 times a
  false candidate (``LSH_WEIGHTS``), since candidates are verified. Each band becomes one 64-bit key (xxhash's xxh3). The signature's values are also
  kept, cut to their low 16 bits, in a file (``SignatureFile``) for the verification below.
- ``KeyPartitions``: (key, row) pairs appended to files split by the key's top bits, then grouped
  one file at a time with a numpy sort: memory is one file's pairs, not the pool's.
- ``UnionFind``: a parent array over row numbers (numpy int32, int64 beyond 2**31 rows); a
  larger root always hangs under a smaller one, so a cluster's root is its first row.

Two queries that share a band key (an LSH bucket, as ``MinHashLSH`` finds candidates) are
compared on their signatures, and are one cluster when the estimated Jaccard similarity (the
share of equal values) reaches the threshold; each query of a bucket is compared with the
bucket's first query. Clusters are closed transitively. A pair at similarity ``s`` becomes a
candidate with probability ``collision_probability(s, bands, rows)``.
"""

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import xxhash
from datasketch import MinHash
from datasketch.lsh import _optimal_param  # datasketch's private helper: MinHashLSH's choice

WORD_SHINGLE = 3
CHAR_SHINGLE = 5
_TOKEN = re.compile(r"\w+|[^\w\s]+")
_DIGIT = re.compile(r"\d")
# Arithmetic and comparison signs (U+00D7 multiplication, U+00F7 division, U+2212 minus).
_SIGN = re.compile(r"[-+*/=<>^%\u00d7\u00f7\u2212]+")
# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs.
_NO_SPACES = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0002fa1f]"
)


def features(normalised: str) -> tuple[list[bytes], str]:
    """``(shingles, numbers)`` of a text already NFKC-normalised and case-folded."""
    tokens = _TOKEN.findall(normalised)
    found = _numbers(tokens) if _DIGIT.search(normalised) else ""
    if _NO_SPACES.search(normalised) is not None:
        collapsed = " ".join(normalised.split())
        if 2 * len(_NO_SPACES.findall(collapsed)) >= len(collapsed) - collapsed.count(" "):
            n = CHAR_SHINGLE  # mostly a script without spaces: character 5-grams
            grams = [collapsed[i : i + n].encode() for i in range(len(collapsed) - n + 1)]
            return grams or [collapsed.encode()], found
    grams = [
        f"{a} {b} {c}".encode() for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False)
    ]
    return grams or [" ".join(tokens).encode()], found


def shingles(normalised: str) -> list[bytes]:
    """The shingles MinHash compares: word 3-grams, or character 5-grams (see ``features``)."""
    return features(normalised)[0]


def numbers(normalised: str) -> str:
    """The tokens that hold a digit and the arithmetic signs beside them, in order:
    "what is 12+7?" -> "12 + 7"; "" when the text has no digit (see ``features``)."""
    return features(normalised)[1]


def _numbers(tokens: list[str]) -> str:
    digit = [not t.isalpha() and _DIGIT.search(t) is not None for t in tokens]
    last = len(tokens) - 1
    return " ".join(
        t
        for i, t in enumerate(tokens)
        if digit[i]
        or (
            ((i > 0 and digit[i - 1]) or (i < last and digit[i + 1]))
            and _SIGN.fullmatch(t) is not None
        )
    )


# MinHashLSH's weights (false positive, false negative): candidates are verified on their
# signatures, so a false positive costs a comparison and a false negative a missed duplicate.
LSH_WEIGHTS = (0.1, 0.9)


@functools.cache
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) for a Jaccard threshold, as datasketch's
    ``MinHashLSH(threshold, num_perm, weights=LSH_WEIGHTS)`` chooses them."""
    return _optimal_param(threshold, num_perm, *LSH_WEIGHTS)


def collision_probability(similarity: float, bands: int, rows: int) -> float:
    """The chance that two sets of this Jaccard similarity share a band key."""
    return 1.0 - (1.0 - similarity**rows) ** bands


class Signer:
    """MinHash band keys and signatures of texts (equal band keys: a shared LSH bucket)."""

    def __init__(self, threshold: float, num_perm: int, seed: int = 1):
        self.threshold = threshold
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self.width = self.bands * self.rows  # the signature values the bands use
        self._minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)

    def sign(self, normalised: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, signatures)``: a ``(len, bands)`` uint64 array of band keys (the numbers of
        the text hashed in) and the ``(len, width)`` signatures' low 16 bits (uint16)."""
        m, r = self._minhash, self.rows
        signatures = np.empty((len(normalised), self.width), dtype=m.hashvalues.dtype)
        seeds = []
        for i, text in enumerate(normalised):
            m.clear()
            grams, found = features(text)
            m.update_batch(grams)
            signatures[i] = m.hashvalues[: self.width]
            seeds.append(xxhash.xxh3_64_intdigest(found.encode()))
        keys = np.empty((len(normalised), self.bands), dtype=np.uint64)
        for band in range(self.bands):
            block = np.ascontiguousarray(signatures[:, band * r : (band + 1) * r])
            keys[:, band] = [
                xxhash.xxh3_64_intdigest(values, seed=(seed + band) % 2**64)
                for values, seed in zip(block, seeds, strict=True)
            ]
        return keys, (signatures & 0xFFFF).astype(np.uint16)


class SignatureFile:
    """The rows' signatures (uint16 each value), appended in row order, read back by row with
    ``os.pread``: no memory map, so reading does not grow the process's resident memory."""

    def __init__(self, path: Path, width: int):
        self.path, self.width = path, width
        self._bytes = width * 2
        self._out: BinaryIO | None = path.open("ab")

    def append(self, signatures: np.ndarray) -> None:
        assert self._out is not None, "append after read"
        signatures.astype("<u2", copy=False).tofile(self._out)

    def close(self) -> None:
        """Stop appending (reads may follow)."""
        if self._out is not None:
            self._out.close()
            self._out = None

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The ``(len(rows), width)`` signatures of ``rows`` (sorted reads are the fastest)."""
        self.close()
        out = np.empty((len(rows), self.width), dtype="<u2")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, row in enumerate(rows.tolist()):
                out[i] = np.frombuffer(os.pread(fd, self._bytes, row * self._bytes), dtype="<u2")
        finally:
            os.close(fd)
        return out


def verified(
    rows: np.ndarray, firsts: np.ndarray, signatures: SignatureFile, threshold: float
) -> np.ndarray:
    """Which candidate pairs ``(rows[i], firsts[i])`` have an estimated Jaccard similarity (the
    share of equal signature values) of at least ``threshold``."""
    if not len(rows):
        return np.zeros(0, dtype=bool)
    needed = np.unique(np.concatenate([rows, firsts]))
    table = signatures.read(needed)
    a = table[np.searchsorted(needed, rows)]
    b = table[np.searchsorted(needed, firsts)]
    return (a == b).mean(axis=1) >= threshold


class KeyPartitions:
    """(key, row) pairs on disk, split over ``parts`` files by the key's top bits, so that equal
    keys are grouped one file at a time. Rows must be added in increasing order."""

    ENTRY = np.dtype([("key", "<u8"), ("row", "<u4")])

    def __init__(self, folder: Path, parts: int = 256):
        if parts & (parts - 1) or not 1 <= parts <= 65536:
            raise ValueError(f"parts must be a power of two up to 65536, got {parts}")
        self.folder, self.parts = folder, parts
        self._shift = np.uint64(64 - parts.bit_length() + 1)
        self._files: dict[int, BinaryIO] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        if len(keys) and int(rows.max()) >= 2**32:
            raise ValueError("more than 2**32 rows")
        part = (
            (keys >> self._shift).astype(np.intp)
            if self.parts > 1
            else np.zeros(len(keys), np.intp)
        )
        order = np.argsort(part, kind="stable")  # stable: rows stay in increasing order
        entries = np.empty(len(keys), dtype=self.ENTRY)
        entries["key"], entries["row"] = keys[order], rows[order]
        bounds = np.searchsorted(part[order], np.arange(self.parts + 1))
        for p in np.flatnonzero(np.diff(bounds)):
            if p not in self._files:
                self._files[p] = (self.folder / f"{p:05d}.bin").open("ab", buffering=0)
            entries[bounds[p] : bounds[p + 1]].tofile(self._files[p])

    def close(self) -> None:
        """Stop adding (``groups`` may follow)."""
        for f in self._files.values():
            f.close()

    def groups(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per file: ``(rows, firsts)``: every row whose key an earlier row has, and that earlier
        row (the first with the key). Each file is removed once read."""
        self.close()
        for p in sorted(self._files):
            path = self.folder / f"{p:05d}.bin"
            entries = np.fromfile(path, dtype=self.ENTRY)
            path.unlink()
            order = np.argsort(entries["key"], kind="stable")
            keys, rows = entries["key"][order], entries["row"][order]
            new = np.ones(len(keys), dtype=bool)
            new[1:] = keys[1:] != keys[:-1]
            firsts = rows[new][np.cumsum(new) - 1]
            yield rows[~new], firsts[~new]
        self._files = {}


class UnionFind:
    """Disjoint sets over rows ``0..n-1`` in one numpy parent array; vectorised union and find.
    A parent is never larger than its child, so every cluster's root is its smallest row."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)

    def find(self, x: np.ndarray) -> np.ndarray:
        parent = self.parent
        roots = parent[x]
        while True:
            up = parent[roots]
            if np.array_equal(up, roots):
                break
            roots = up
        parent[x] = roots  # path compression for the rows asked about
        return roots

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        while len(a):
            ra, rb = self.find(a), self.find(b)
            apart = ra != rb
            a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
            if not len(a):
                return
            # Several pairs may hook one root in this round: the smallest wins (unbuffered
            # minimum.at); the others are joined in the next round, through the new root.
            np.minimum.at(self.parent, np.maximum(ra, rb), np.minimum(ra, rb))

    def roots(self, chunk: int = 1 << 20) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, roots of rows start..start+len-1)``, a chunk at a time."""
        for start in range(0, len(self.parent), chunk):
            stop = min(start + chunk, len(self.parent))
            yield start, self.find(np.arange(start, stop, dtype=self.parent.dtype))
