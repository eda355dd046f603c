"""Baseline text embedder: TF-IDF over our tokens, reduced by truncated SVD (LSA).

It gives every video and query a real dense vector at index time, so the vector route,
faiss / ES `dense_vector`, and DPP similarity all run end to end before the learned
two-tower model exists; the two-tower model replaces it through the same interface
(`encode_tokens`). Saved as plain arrays (npz), never pickles.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


class LsaEmbedder:
    name = "lsa"

    def __init__(self, vocab: dict[str, int], idf: np.ndarray, components: np.ndarray):
        self.vocab = vocab
        self.idf = idf.astype(np.float32)
        self.components = components.astype(np.float32)  # (dims, vocab)

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, docs: list[list[str]], dims: int = 64, seed: int = 0, max_fit_docs: int = 200_000) -> "LsaEmbedder":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        rng = np.random.default_rng(seed)
        sample = docs if len(docs) <= max_fit_docs else [docs[i] for i in rng.choice(len(docs), max_fit_docs, replace=False)]
        vec = TfidfVectorizer(analyzer=lambda toks: toks, min_df=2, sublinear_tf=True, dtype=np.float32)
        x = vec.fit_transform(sample)
        k = max(2, min(dims, x.shape[1] - 1, x.shape[0] - 1))
        svd = TruncatedSVD(n_components=k, random_state=seed, algorithm="randomized", n_iter=5)
        svd.fit(x)
        comps = np.zeros((dims, x.shape[1]), dtype=np.float32)
        comps[:k] = svd.components_
        return cls({t: int(i) for t, i in vec.vocabulary_.items()}, vec.idf_, comps)

    def encode_tokens(self, tokens: list[str]) -> np.ndarray:
        return self.encode_many([tokens])[0]

    def encode_many(self, docs: list[list[str]]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        rows, cols, vals = [], [], []
        for r, toks in enumerate(docs):
            counts: dict[int, int] = {}
            for t in toks:
                j = self.vocab.get(t)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            w = {j: (1.0 + math.log(c)) * float(self.idf[j]) for j, c in counts.items()}
            norm = math.sqrt(sum(v * v for v in w.values())) or 1.0
            for j, v in w.items():
                rows.append(r); cols.append(j); vals.append(v / norm)
        x = csr_matrix((vals, (rows, cols)), shape=(len(docs), len(self.vocab)), dtype=np.float32)
        out = np.asarray(x @ self.components.T, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms

    def save(self, path: str | Path) -> None:
        terms = np.array(sorted(self.vocab, key=self.vocab.get), dtype=object)
        with open(path, "wb") as f:
            np.savez(f, terms=terms.astype(str), idf=self.idf, components=self.components)

    @classmethod
    def load(cls, path: str | Path) -> "LsaEmbedder":
        z = np.load(path, allow_pickle=False)
        return cls({str(t): i for i, t in enumerate(z["terms"])}, z["idf"], z["components"])
