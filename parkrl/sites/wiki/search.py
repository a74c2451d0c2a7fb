"""BM25 search over the wiki's articles (bm25s: sparse-matrix BM25, numpy only)."""
from __future__ import annotations

import threading

import bm25s
from bm25s.tokenization import Tokenizer

from parkrl.sites.wiki.pages import page_text, summary
from parkrl.sites.wiki.world import World

TITLE_WEIGHT = 2  # the title counts this many extra times: a name finds its own article first


class WikiSearch:
    """`search(query, k)` -> [{"title", "url", "snippet"}], best first; words the index has never
    seen are ignored, and a query with no known word finds nothing."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.slugs = list(world.entities)
        self._tokenizer = Tokenizer(stopwords="en", splitter=r"(?u)\b\w+\b")
        docs = [" ".join([world.entities[s].name] * TITLE_WEIGHT) + "\n" + page_text(world, s) for s in self.slugs]
        ids = self._tokenizer.tokenize(docs, update_vocab=True, return_as="ids", show_progress=False)
        self._bm25 = bm25s.BM25()
        self._bm25.index(ids, show_progress=False)
        self._lock = threading.Lock()  # the tokenizer is not documented as thread-safe

    def search(self, query: str, k: int = 10) -> list[dict[str, str]]:
        k = max(0, min(int(k), len(self.slugs)))
        if not query.strip() or k == 0:
            return []
        with self._lock:
            q = self._tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
            if not any(q[0]):  # id 0: a word not in the index
                return []
            docs, scores = self._bm25.retrieve(q, k=k, show_progress=False, n_threads=1)
        out = []
        for i, score in zip(docs[0], scores[0]):
            if score <= 0:
                break
            e = self.world.entities[self.slugs[int(i)]]
            out.append({"title": e.name, "url": f"/wiki/{e.slug}", "snippet": summary(self.world, e)})
        return out
