"""Questions about the wiki whose answers sit one or two links away from the page a search finds.

`hops` counts the links to follow after the searched article: "In which year was the founder of
Cobalt Mills born?" (hops 1) needs search -> Cobalt Mills -> its founder's page. Each question's
`entities` is that path of slugs, first the one named in the question, last the page holding the
answer; every entity on it belongs to the question's split.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

from parkrl.sites.wiki.world import Company, Person, World, generate

# (template, hops, kind of the named entity, path from it, answer on the last page, numeric)
_Path = Callable[[World, Any], list[str] | None]


def _founder(w: World, c: Company) -> list[str]:
    return [c.slug, c.founder]


def _hq(w: World, c: Company) -> list[str]:
    return [c.slug, c.headquarters]


def _birthplace(w: World, p: Person) -> list[str]:
    return [p.slug, p.birthplace]


def _only_company(w: World, p: Person) -> list[str] | None:
    return [p.slug, p.founded[0]] if len(p.founded) == 1 else None  # "the company founded by X" must be one


def _company_hq(w: World, p: Person) -> list[str] | None:
    path = _only_company(w, p)
    return None if path is None else path + [w.entities[path[1]].headquarters]


TEMPLATES: list[tuple[str, int, str, _Path, Callable[[Any], str], bool]] = [
    ("In which year was {name} founded?", 0, "company", lambda w, c: [c.slug], lambda e: str(e.founded), True),
    ("In which year was {name} born?", 0, "person", lambda w, p: [p.slug], lambda e: str(e.born), True),
    ("What is the population of {name}?", 0, "town", lambda w, t: [t.slug], lambda e: str(e.population), True),
    ("In which year was the founder of {name} born?", 1, "company", _founder, lambda e: str(e.born), True),
    ("What is the population of the town where {name} is headquartered?", 1, "company", _hq,
     lambda e: str(e.population), True),
    ("In which year was the town where {name} was born founded?", 1, "person", _birthplace,
     lambda e: str(e.founded), True),
    ("In which region is the town where {name} was born?", 1, "person", _birthplace, lambda e: e.region, False),
    ("In which year was the company founded by {name} founded?", 1, "person", _only_company,
     lambda e: str(e.founded), True),
    ("What is the population of the town where the founder of {name} was born?", 2, "company",
     lambda w, c: [c.slug, c.founder, w.entities[c.founder].birthplace], lambda e: str(e.population), True),
    ("In which region was the founder of {name} born?", 2, "company",
     lambda w, c: [c.slug, c.founder, w.entities[c.founder].birthplace], lambda e: e.region, False),
    ("What is the population of the town where the company founded by {name} is headquartered?", 2, "person",
     _company_hq, lambda e: str(e.population), True),
]


def all_questions(world: World, split: str, hops: tuple[int, ...] = (1, 2),
                  numeric_only: bool = False) -> list[dict[str, Any]]:
    """Every question of `split` ("train" or "eval") with `hops` in the given set, in a fixed order."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}: choose train or eval")
    bad = [h for h in hops if h not in (0, 1, 2)]
    if bad or not hops:
        raise ValueError(f"hops={list(hops)}: choose from 0, 1, 2")
    out = []
    for template, h, kind, path_of, answer_of, numeric in TEMPLATES:
        if h not in hops or (numeric_only and not numeric):
            continue
        for e in world.of_kind(kind, split):
            path = path_of(world, e)
            if path is None:
                continue
            assert all(world.split_of(s) == split for s in path), path  # the world keeps splits apart
            out.append({"question": template.format(name=e.name), "answer": answer_of(world.entities[path[-1]]),
                        "hops": h, "entities": path})
    return out


def questions(split: str = "train", seed: int = 0, n: int | None = None, hops: int | tuple[int, ...] = (1, 2),
              world_seed: int = 0, entities: int = 300, numeric_only: bool = False) -> Iterator[dict[str, Any]]:
    """Yields `n` questions {"question", "answer", "hops", "entities"} of `split`, shuffled by `seed`
    (all of them once when n is None; past that, reshuffled rounds). `world_seed` and `entities` must
    match the site's --seed and --entities."""
    pool = all_questions(generate(world_seed, entities), split, (hops,) if isinstance(hops, int) else tuple(hops),
                         numeric_only)
    if not pool:
        raise ValueError(f"no {split} questions with hops={hops}: use more entities")
    rng = random.Random(f"{seed}-{split}")
    count = 0
    while n is None or count < n:
        order = pool[:]
        rng.shuffle(order)
        for q in order:
            if n is not None and count >= n:
                return
            yield dict(q, entities=list(q["entities"]))
            count += 1
        if n is None:
            return


SYSTEM_PROMPT = ("Answer the question using the browser tool: search the wiki, open pages and follow their "
                 "numbered links. When you know the answer, reply with the answer only.")


def wiki_task_samples(seed: int, size: int, system_prompt: str = "", split: str = "train",
                      hops: int | list[int] = (1, 2), world_seed: int = 0, entities: int = 300,
                      numeric_only: bool = False) -> list[dict[str, Any]]:
    """`size` samples {"question", "answer", "hops", "entities", "uid", "messages"} for `data.task=wiki_questions`
    (data.task_args: split, hops, world_seed, entities, numeric_only)."""
    out = []
    for q in questions(split, seed, size, tuple(hops) if isinstance(hops, (list, tuple)) else hops, world_seed,
                       entities, numeric_only):
        messages = [{"role": "user", "content": q["question"]}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        out.append({**q, "uid": f"{split}:{'/'.join(q['entities'])}:{q['question']}", "messages": messages})
    return out
