"""A site for training, with no network: a generated encyclopaedia of fictional towns, companies
and people, served by `python -m parkrl.sites.wiki --port 8090`, with BM25 search at
`/search?q=...` and multi-hop questions (`questions`, and `data.task=wiki_questions`)."""
from parkrl.sites.wiki.questions import all_questions, questions, wiki_task_samples
from parkrl.sites.wiki.world import World, generate, slugify

__all__ = ["World", "all_questions", "create_app", "generate", "questions", "slugify", "wiki_task_samples"]


def __getattr__(name: str):  # the app pulls in FastAPI and bm25s: only when asked for
    if name == "create_app":
        from parkrl.sites.wiki.app import create_app

        return create_app
    raise AttributeError(name)
