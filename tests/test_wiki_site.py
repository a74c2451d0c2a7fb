"""The wiki site (parkrl/sites/wiki/): a deterministic world, entity-disjoint question splits,
answers where the links lead, BM25 search, and the real server on 127.0.0.1 (port 0)."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from bs4 import BeautifulSoup

from parkrl.sites.wiki import all_questions, generate, questions, wiki_task_samples
from parkrl.sites.wiki.search import WikiSearch

_URL = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def start_wiki(log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`python -m parkrl.sites.wiki --port 0 ARGS`, once it listens: (process, base URL)."""
    out = open(log, "ab")
    popen = subprocess.Popen([sys.executable, "-m", "parkrl.sites.wiki", "--port", "0", *args], stdout=out,
                             stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1],
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and popen.poll() is None:
        m = _URL.search(log.read_text(errors="replace"))
        if m:
            return popen, m.group(1)
        time.sleep(0.05)
    popen.kill()
    raise AssertionError(f"the wiki did not start:\n{log.read_text(errors='replace')[-3000:]}")


def stop(popen: subprocess.Popen) -> None:
    popen.terminate()
    try:
        popen.wait(10)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(5)


@pytest.fixture(scope="module")
def wiki(tmp_path_factory):
    popen, url = start_wiki(tmp_path_factory.mktemp("wiki") / "wiki.log")
    try:
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as c:
            yield c
    finally:
        stop(popen)


def test_the_world_and_its_questions_are_deterministic():
    a, b = generate(3, 120), generate(3, 120)
    assert [dataclasses.asdict(e) for e in a.entities.values()] == [dataclasses.asdict(e) for e in b.entities.values()]
    assert list(generate(4, 120).entities) != list(a.entities)
    assert len(generate().entities) == 300
    q1 = list(questions("train", seed=5, n=30, world_seed=3, entities=120))
    assert q1 == list(questions("train", seed=5, n=30, world_seed=3, entities=120))
    assert q1 != list(questions("train", seed=6, n=30, world_seed=3, entities=120))
    assert len(list(questions("eval", seed=0, n=500))) == 500  # past the pool: reshuffled rounds
    with pytest.raises(ValueError, match="at least 20"):
        generate(0, 5)
    with pytest.raises(ValueError, match="train or eval"):
        all_questions(a, "dev")


def test_train_and_eval_questions_use_disjoint_entities():
    world = generate()
    touched = {}
    for split in ("train", "eval"):
        qs = all_questions(world, split, (0, 1, 2))
        assert {q["hops"] for q in qs} == {0, 1, 2}
        touched[split] = {s for q in qs for s in q["entities"]}
        assert {world.entities[s].split for s in touched[split]} == {split}
        assert len({q["question"] for q in qs}) == len(qs)       # no question asked twice
    assert not touched["train"] & touched["eval"]
    assert len(touched["eval"]) >= 40 and len(touched["train"]) >= 4 * len(touched["eval"]) - 40


def _page(c: httpx.Client, slug: str) -> tuple[str, set[str]]:
    r = c.get(f"/wiki/{slug}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    soup = BeautifulSoup(r.text, "html.parser")
    return soup.get_text(" "), {a["href"] for a in soup.find_all("a")}


def test_answers_are_on_the_page_the_links_lead_to(wiki):
    """Walk each question's path through the served pages: the named entity's page links to the
    next one, and so on; the answer is on the last page and (hops >= 1) not on the first."""
    world = generate()
    checked = 0
    for split in ("train", "eval"):
        for q in list(questions(split, seed=1, hops=(0, 1, 2)))[:60]:
            path = q["entities"]
            assert len(path) == q["hops"] + 1 and world.entities[path[0]].name in q["question"]
            texts = []
            for here, there in zip(path, path[1:] + [None]):
                text, links = _page(wiki, here)
                texts.append(text)
                if there is not None:
                    assert f"/wiki/{there}" in links, (q, here)
            assert re.search(rf"\b{re.escape(q['answer'])}\b", texts[-1]), q
            if q["hops"]:
                assert not re.search(rf"\b{re.escape(q['answer'])}\b", texts[0]), q
            checked += 1
    assert checked == 120


def test_a_name_finds_its_own_page_first():
    world = generate()
    index = WikiSearch(world)
    for e in world.entities.values():
        hits = index.search(e.name, 3)
        assert hits[0]["url"] == f"/wiki/{e.slug}", (e.name, hits)
    assert index.search("qwertyuiop zxcv", 5) == [] and index.search("   ", 5) == []
    company = next(iter(world.of_kind("company")))
    hits = index.search(f"who founded {company.name}?", 5)
    assert hits[0]["title"] == company.name and len(hits) == 5


def test_search_endpoint_and_resources(wiki):
    world = generate()
    person = world.of_kind("person")[7]
    hits = wiki.get("/search", params={"q": person.name, "k": 4}).json()
    assert len(hits) == 4 and set(hits[0]) == {"title", "url", "snippet"}
    assert hits[0]["title"] == person.name and hits[0]["url"] == f"{wiki.base_url}/wiki/{person.slug}"
    assert person.occupation in hits[0]["snippet"]
    assert wiki.get("/search", params={"q": ""}).json() == []
    r = wiki.get("/wiki/No_Such_Article")
    assert r.status_code == 404 and "no article named No_Such_Article" in r.text
    assert r.headers["content-type"].startswith("text/html")
    r = wiki.get(f"/data/{person.slug}.json")
    assert r.status_code == 200 and r.json()["facts"]["Born"] == str(person.born)
    assert wiki.get("/data/No_Such_Article.json").status_code == 404
    r = wiki.get("/logo.png")
    assert r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
    r = wiki.get(f"/go/{person.slug}")
    assert r.status_code == 302 and r.headers["location"] == f"/wiki/{person.slug}"
    home = wiki.get("/").text
    assert all(f'href="/wiki/{s}"' in home for s in world.entities)


def test_wiki_questions_is_a_data_task():
    from parkrl.config import ConfigError
    from parkrl.data.reasoning_gym import task_samples

    samples = task_samples("wiki_questions", {"split": "eval", "hops": [2]}, 0, 12, "Use the browser.")
    assert len(samples) == 12 and {s["hops"] for s in samples} == {2}
    world = generate()
    assert all(world.entities[e].split == "eval" for q in samples for e in q["entities"])
    s = samples[0]
    assert s["messages"] == [{"role": "system", "content": "Use the browser."},
                             {"role": "user", "content": s["question"]}]
    assert isinstance(s["answer"], str) and s["uid"].startswith("eval:")
    numeric = wiki_task_samples(0, 50, numeric_only=True)
    assert all(q["answer"].isdigit() for q in numeric)
    with pytest.raises(ConfigError, match="wiki_questions"):
        task_samples("wiki_questions", {"split": "test"}, 0, 4, "")
