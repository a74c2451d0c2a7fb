"""The wiki's world: fictional towns, companies and people, generated from a seed (pure, no I/O).

Every entity belongs to one split, "train" or "eval", and relations never cross splits (an eval
person is born in an eval town and founds eval companies), so questions about eval entities are
answered only from pages that no train question touches.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

EVAL_FRACTION = 0.2

# Three disjoint syllable stocks, so a town's name never appears inside a person's or a company's
# name (searching a name then finds that entity's page, not a namesake's).
_TOWN_HEADS = ("Vel", "Ash", "Brim", "Cor", "Dun", "Eld", "Fen", "Gal", "Hol", "Ith", "Kes", "Lun", "Mar", "Nor",
               "Oss", "Pell", "Quar", "Rav", "Sel", "Tor", "Ulm", "Wyn", "Yar", "Zeph")
_TOWN_TAILS = ("mora", "ford", "haven", "wick", "stead", "mere", "dale", "crest", "holm", "gate", "brook", "moor",
               "by", "thorpe", "ridge", "port")
_FIRST = ("Orin", "Talia", "Bram", "Ysolde", "Cass", "Dorian", "Elsbeth", "Faris", "Greta", "Hollis", "Ines", "Jory",
          "Kaia", "Leopold", "Mirela", "Nils", "Odette", "Piran", "Rosalind", "Soren", "Tamsin", "Ulric", "Vesna",
          "Wendel", "Xenia", "Yorick", "Zita", "Anselm", "Briony", "Caspian", "Delphine", "Emeric")
_LAST_HEADS = ("Aub", "Bex", "Crann", "Drem", "Esk", "Fallow", "Grisw", "Hask", "Iver", "Jass", "Kirr", "Lod",
               "Merrow", "Nack", "Ordw", "Pask", "Quill", "Rook", "Stav", "Tresh", "Ull", "Varn", "Whit", "Yeld")
_LAST_TAILS = ("ane", "ett", "ley", "ington", "ick", "worth", "son", "ard", "ell", "ow", "ier", "um")
_CO_HEADS = ("Aurel", "Bastion", "Cobalt", "Driftwood", "Ember", "Foxglove", "Granite", "Heron", "Indigo", "Juniper",
             "Kestrel", "Lantern", "Meridian", "Nimbus", "Obsidian", "Pinnacle", "Quartz", "Rowan", "Saffron",
             "Tidewater", "Umber", "Vantage", "Willow", "Zenith")
_CO_TAILS = ("Mills", "Works", "Textiles", "Foundry", "Shipping", "Brewing", "Instruments", "Press", "Ceramics",
             "Rail", "Mining", "Optics", "Glassworks", "Timber", "Salt Company", "Dyeworks")
INDUSTRIES = {"Mills": "milling", "Works": "engineering", "Textiles": "textiles", "Foundry": "metalworking",
              "Shipping": "shipping", "Brewing": "brewing", "Instruments": "instrument making", "Press": "printing",
              "Ceramics": "ceramics", "Rail": "railways", "Mining": "mining", "Optics": "optics",
              "Glassworks": "glassmaking", "Timber": "timber", "Salt Company": "salt", "Dyeworks": "dyeing"}
REGIONS = ("Eastmarch", "Lowen Coast", "Highfold", "Sallow Vale", "Northreach", "Amber Downs", "Westerly Isles",
           "Copper Hills")
OCCUPATIONS = ("engineer", "merchant", "chemist", "architect", "shipwright", "banker", "inventor", "printer",
               "glassblower", "surveyor", "brewer", "cartographer")


def slugify(name: str) -> str:
    """The page slug of a name: "Velmora Mills" -> "Velmora_Mills"."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


@dataclass
class Town:
    name: str
    slug: str
    split: str
    region: str
    population: int
    founded: int
    kind: str = "town"


@dataclass
class Company:
    name: str
    slug: str
    split: str
    industry: str
    founded: int
    founder: str = ""        # slug of a Person
    headquarters: str = ""   # slug of a Town
    kind: str = "company"


@dataclass
class Person:
    name: str
    slug: str
    split: str
    born: int
    birthplace: str          # slug of a Town
    occupation: str
    founded: list[str] = field(default_factory=list)  # slugs of Companies
    kind: str = "person"


Entity = Town | Company | Person


@dataclass
class World:
    """All entities by slug (in generation order) and the seed that made them."""

    seed: int
    entities: dict[str, Entity]

    def of_kind(self, kind: str, split: str | None = None) -> list[Entity]:
        return [e for e in self.entities.values() if e.kind == kind and (split is None or e.split == split)]

    def split_of(self, slug: str) -> str:
        return self.entities[slug].split


def _unique(rng: random.Random, make, taken: set[str]) -> str:
    for _ in range(10_000):
        name = make()
        if name not in taken:
            taken.add(name)
            return name
    raise ValueError("ran out of distinct names: ask for fewer entities")


def generate(seed: int = 0, entities: int = 300) -> World:
    """A world of about `entities` entities (1/5 towns, 3/10 companies, the rest people), the same for
    the same arguments. Each split gets its own towns, companies and people."""
    # The ranges never overlap (town founded < 1800 < born < company founded < 2100 <= population), so an
    # answer never shows up by chance on a page the question's path does not end at.
    if entities < 20:
        raise ValueError(f"entities={entities}: at least 20 (each split needs towns, companies and people)")
    if entities > 3000:
        raise ValueError(f"entities={entities}: at most 3000 (the name stocks run out)")
    rng = random.Random(f"parkrl-wiki-{seed}")
    n_towns, n_companies = max(4, entities // 5), max(6, entities * 3 // 10)
    n_people = entities - n_towns - n_companies
    taken: set[str] = set()
    out: dict[str, Entity] = {}
    by_split: dict[str, dict[str, list]] = {s: {"town": [], "company": [], "person": []} for s in ("train", "eval")}

    def split_for(i: int, n: int) -> str:  # the last EVAL_FRACTION of each kind (at least 2)
        return "eval" if i >= n - max(2, round(n * EVAL_FRACTION)) else "train"

    for i in range(n_towns):
        name = _unique(rng, lambda: rng.choice(_TOWN_HEADS) + rng.choice(_TOWN_TAILS), taken)
        t = Town(name, slugify(name), split_for(i, n_towns), rng.choice(REGIONS), rng.randrange(2_100, 250_000),
                 rng.randrange(1050, 1800))
        out[t.slug] = t
        by_split[t.split]["town"].append(t)
    for i in range(n_people):
        name = _unique(rng, lambda: f"{rng.choice(_FIRST)} {rng.choice(_LAST_HEADS)}{rng.choice(_LAST_TAILS)}", taken)
        split = split_for(i, n_people)
        p = Person(name, slugify(name), split, rng.randrange(1820, 1960), rng.choice(by_split[split]["town"]).slug,
                   rng.choice(OCCUPATIONS))
        out[p.slug] = p
        by_split[split]["person"].append(p)
    for i in range(n_companies):
        tail = rng.choice(_CO_TAILS)
        name = _unique(rng, lambda: f"{rng.choice(_CO_HEADS)} {tail}", taken)
        split = split_for(i, n_companies)
        founder = rng.choice(by_split[split]["person"])
        c = Company(name, slugify(name), split, INDUSTRIES[tail], founder.born + rng.randrange(22, 60),
                    founder.slug, rng.choice(by_split[split]["town"]).slug)
        founder.founded.append(c.slug)
        out[c.slug] = c
        by_split[split]["company"].append(c)
    return World(seed, out)
