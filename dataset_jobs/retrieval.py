"""Which of a user's history posts are most relevant to a news item: BM25 over jieba tokens.

Same scoring as the research code (k1 1.5, b 0.75, idf = ln((N - df + 0.5) / (df + 0.5) + 1),
every query token counted as often as it occurs, ties kept in history order), computed once per
user instead of once per (query, post): each post is tokenised once (jieba's algorithm in Rust,
`rjieba`, token for token the same as jieba), the query once, and the scores of all posts come
from a handful of numpy operations. Any retriever with `rank(query, documents, k)` plugs in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Retriever(Protocol):
    def rank(self, query: str, documents: list[str], k: int) -> list[tuple[int, float]]:
        """The k most relevant documents as (index, score), best first."""


def tokenize(text: str) -> list[str]:
    import rjieba

    return rjieba.cut(text)


@dataclass(frozen=True)
class DocumentIndex:
    """A user's posts as BM25 sees them: which (local) term each token is, and in which post."""

    vocabulary: dict[str, int]
    token_docs: np.ndarray  # per token: the post it is in
    token_terms: np.ndarray  # per token: its term id
    doc_lengths: np.ndarray

    @classmethod
    def build(cls, documents: list[list[str]]) -> DocumentIndex:
        vocabulary: dict[str, int] = {}
        terms = [vocabulary.setdefault(token, len(vocabulary)) for doc in documents for token in doc]
        lengths = np.fromiter((len(doc) for doc in documents), dtype=np.int64, count=len(documents))
        token_docs = np.repeat(np.arange(len(documents)), lengths)
        return cls(vocabulary, token_docs, np.asarray(terms, dtype=np.int64), lengths)

    def scores(self, query_tokens: list[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
        n_docs = len(self.doc_lengths)
        counts = Counter(token for token in query_tokens if token in self.vocabulary)
        if n_docs == 0 or not counts:
            return np.zeros(n_docs)
        weight = np.zeros(len(self.vocabulary))
        for token, count in counts.items():
            weight[self.vocabulary[token]] = count
        # Only the query's terms matter: their (post, term) pairs give both tf and df.
        hit = weight[self.token_terms] > 0
        pairs, tf = np.unique(self.token_docs[hit] * len(self.vocabulary) + self.token_terms[hit], return_counts=True)
        docs, terms = pairs // len(self.vocabulary), pairs % len(self.vocabulary)
        df = np.bincount(terms, minlength=len(self.vocabulary))
        idf = np.log((n_docs - df + 0.5) / (df + 0.5) + 1.0)
        norm = k1 * (1.0 - b + b * self.doc_lengths[docs] / self.doc_lengths.mean())
        contribution = weight[terms] * idf[terms] * tf * (k1 + 1.0) / (tf + norm)
        return np.bincount(docs, weights=contribution, minlength=n_docs)


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    """Best first; equal scores keep document order (as Python's stable sort does); only `allowed` ones."""
    order = np.argsort(-scores, kind="stable")
    if allowed is not None:
        order = order[allowed[order]]
    return [(int(i), float(scores[i])) for i in order[:k]]


class BM25Index:
    """One user's posts, tokenised and indexed once, scored against any number of queries."""

    def __init__(self, documents: list[str], k1: float = 1.5, b: float = 0.75,
                 tokens: list[list[str]] | None = None) -> None:
        """`tokens`: the documents already tokenised (then `documents` is not read)."""
        self.k1, self.b = k1, b
        self.tokens = tokens if tokens is not None else [tokenize(doc) for doc in documents]
        self.index = DocumentIndex.build(self.tokens)

    def without(self, position: int) -> BM25Index:
        """The same posts but one, indexed anew (document count, frequencies and average length without
        it, as if it had never been there); positions after it move down by one."""
        return BM25Index([], self.k1, self.b, tokens=self.tokens[:position] + self.tokens[position + 1:])

    def scores_for(self, query: str) -> np.ndarray:
        return self.index.scores(tokenize(query), self.k1, self.b)

    def top_k(self, scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        return top_k(scores, k, allowed)


@dataclass(frozen=True)
class BM25Retriever:
    k1: float = 1.5
    b: float = 0.75

    def index(self, documents: list[str]) -> BM25Index:
        return BM25Index(documents, self.k1, self.b)

    def rank(self, query: str, documents: list[str], k: int) -> list[tuple[int, float]]:
        index = self.index(documents)
        return index.top_k(index.scores_for(query), k)


def repost_document(text: str, retweet_text: str | None) -> str:
    """What a history post is scored on: a repost on its comment plus the reposted text."""
    return f"{text} {retweet_text}" if retweet_text else text
