"""The wiki's pages: HTML for the server, plain text for the search index (pure functions)."""
from __future__ import annotations

import html
import random

from parkrl.sites.wiki.world import Company, Entity, Town, World

_STYLE = "body{font-family:sans-serif;max-width:48em;margin:auto} table.infobox{border:1px solid #999}"
_HISTORY = {
    "town": ("{name} grew around a river crossing and a weekly market.",
             "Its old quarter keeps a clock tower and a covered bridge.",
             "The town hosts a lantern festival every autumn.",
             "A tramway once linked {name} with the neighbouring villages.",
             "Local cooking is known for smoked fish and rye bread.",
             "The municipal library of {name} holds a large collection of maps."),
    "company": ("{name} began as a small workshop.",
                "The firm expanded after winning a contract for public works.",
                "Its early catalogues are kept in a regional archive.",
                "During a long strike the company renegotiated its wages.",
                "{name} later opened branch offices along the coast.",
                "The firm's logo shows a stylised bird over a wave."),
    "person": ("{name} was educated at a local school and apprenticed young.",
               "Friends described {name} as patient and meticulous.",
               "{name} travelled widely and kept detailed notebooks.",
               "In later life {name} funded a reading room for workers.",
               "{name} corresponded with many scholars of the era.",
               "A street was named after {name} in recognition of this work."),
}


def link(world: World, slug: str) -> str:
    """An HTML link to the page of `slug`."""
    return f'<a href="/wiki/{slug}">{html.escape(world.entities[slug].name)}</a>'


def summary(world: World, e: Entity) -> str:
    """The lead sentence (the search snippet), plain text."""
    if isinstance(e, Town):
        return f"{e.name} is a fictional town in {e.region}, founded in {e.founded}."
    if isinstance(e, Company):
        return (f"{e.name} is a fictional {e.industry} company headquartered in {world.entities[e.headquarters].name}, "
                f"founded in {e.founded}.")
    return f"{e.name} is a fictional {e.occupation} from {world.entities[e.birthplace].name}, born in {e.born}."


def facts(world: World, e: Entity) -> list[tuple[str, str, str | None]]:
    """The infobox rows: (label, text, linked slug or None)."""
    if isinstance(e, Town):
        return [("Region", e.region, None), ("Population", str(e.population), None), ("Founded", str(e.founded), None)]
    if isinstance(e, Company):
        return [("Industry", e.industry, None), ("Founded", str(e.founded), None),
                ("Founder", world.entities[e.founder].name, e.founder),
                ("Headquarters", world.entities[e.headquarters].name, e.headquarters)]
    rows = [("Born", str(e.born), None), ("Birthplace", world.entities[e.birthplace].name, e.birthplace),
            ("Occupation", e.occupation, None)]
    rows += [("Founded", world.entities[c].name, c) for c in e.founded]
    return rows


def _related(world: World, e: Entity) -> list[tuple[str, list[str]]]:
    """Sections of links to other pages."""
    if isinstance(e, Town):
        return [("Companies headquartered here",
                 [c.slug for c in world.of_kind("company") if c.headquarters == e.slug]),
                ("People born here", [p.slug for p in world.of_kind("person") if p.birthplace == e.slug])]
    return []


def _history(world: World, e: Entity) -> list[str]:
    rng = random.Random(f"{world.seed}-{e.slug}")
    lines = rng.sample(_HISTORY[e.kind], 4)
    return [s.format(name=e.name) for s in lines]


def page_html(world: World, slug: str) -> str:
    """The article of `slug` (KeyError if there is none)."""
    e = world.entities[slug]
    rows = "".join(f"<tr><th>{label}</th><td>{link(world, target) if target else html.escape(text)}</td></tr>"
                   for label, text, target in facts(world, e))
    body = [f"<h1>{html.escape(e.name)}</h1>", f"<p>{html.escape(summary(world, e))}</p>",
            f'<table class="infobox">{rows}</table>', "<h2>History</h2>",
            *(f"<p>{html.escape(s)}</p>" for s in _history(world, e))]
    for title, slugs in _related(world, e):
        if slugs:
            body.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{link(world, s)}</li>" for s in slugs) + "</ul>")
    return _document(e.name, "\n".join(body))


def page_text(world: World, slug: str) -> str:
    """The article as plain text (what the search index reads)."""
    e = world.entities[slug]
    lines = [e.name, summary(world, e), *(f"{label}: {text}" for label, text, _ in facts(world, e)),
             *_history(world, e)]
    for title, slugs in _related(world, e):
        lines += [f"{title}: " + ", ".join(world.entities[s].name for s in slugs)] if slugs else []
    return "\n".join(lines)


def index_html(world: World) -> str:
    """The main page: every article by kind (a long page)."""
    parts = ["<h1>The Parkrl Wiki</h1><p>An encyclopaedia of fictional towns, companies and people. "
             'Search with <a href="/search?q=example">/search?q=...</a>.</p>']
    for kind, title in (("town", "Towns"), ("company", "Companies"), ("person", "People")):
        parts.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{link(world, e.slug)}</li>" for e in world.of_kind(kind))
                     + "</ul>")
    return _document("The Parkrl Wiki", "\n".join(parts))


def not_found_html(slug: str) -> str:
    return _document("Not found", f"<h1>Not found</h1><p>There is no article named {html.escape(slug)!s}. "
                                  'Try the <a href="/">main page</a> or a search.</p>')


def _document(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)} - Parkrl Wiki</title>"
            f"<style>{_STYLE}</style><script>var tracking = 1;</script></head><body>\n"
            f'<nav><a href="/">Main page</a></nav>\n{body}\n</body></html>')
