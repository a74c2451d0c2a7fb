"""The package's import picture: arrows point one way (no circle), and the workers never reach
back into the controller side. Read from the source with `ast`, imports inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "parkrl"
CONTROLLER_SIDE = ("parkrl.controller", "parkrl.step", "parkrl.collect", "parkrl.batch_source", "parkrl.runs",
                   "parkrl.train")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """parkrl module -> the parkrl modules it imports (a `from pkg import sub` counts as pkg.sub)."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_picture_has_no_circle():
    graph = import_graph()
    assert "parkrl.workers.learner" in graph and "parkrl.controller" in graph  # the walk found the package
    assert cycles(graph) == []


def test_cycle_finder_sees_a_circle_through_function_level_imports(tmp_path: Path):
    pkg = tmp_path / "parkrl"
    (pkg / "workers").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "workers" / "__init__.py").write_text("")
    (pkg / "workers" / "a.py").write_text("from parkrl.workers.b import thing\n")
    (pkg / "workers" / "b.py").write_text("def thing():\n    from parkrl.workers import a\n")
    assert cycles(import_graph(pkg)) == [["parkrl.workers.a", "parkrl.workers.b"]]


def test_workers_import_nothing_from_the_controller_side():
    graph = import_graph()
    reaching_back = {m: sorted(t for t in targets if t.startswith(CONTROLLER_SIDE))
                     for m, targets in graph.items() if m.startswith("parkrl.workers")}
    assert {m: t for m, t in reaching_back.items() if t} == {}


def test_services_are_packages_of_their_own():
    """The sandbox server and the gateway run without the trainer: they import only each other's
    protocol and client, never parkrl's training code (their imports point down)."""
    graph = import_graph()
    services = ("parkrl.sandbox", "parkrl.gateway")
    outside = {m: sorted(t for t in targets if not t.startswith(services))
               for m, targets in graph.items() if m.startswith(services)}
    assert {m: t for m, t in outside.items() if t} == {}
    assert not any(t.startswith("parkrl.gateway") for m, ts in graph.items() if m.startswith("parkrl.sandbox")
                   for t in ts)  # the server knows nothing of the gateway in front of it


def test_the_environment_server_and_the_sites_import_no_trainer_code():
    """The environment server runs users' environments (parkrl.envs, parkrl.tools and what they
    use) but nothing of the trainer; the training sites (parkrl.sites) import only themselves."""
    graph = import_graph()
    trainer = ("parkrl.workers", "parkrl.controller", "parkrl.step", "parkrl.algorithms", "parkrl.engines",
               "parkrl.inference", "parkrl.batch")

    def reach(start: str) -> set[str]:
        seen, todo = set(), [m for m in graph if m.startswith(start)]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += [t for t in graph.get(m, ()) if t.startswith("parkrl")]
        return seen

    assert sorted(m for m in reach("parkrl.envs.server") if m.startswith(trainer)) == []
    assert sorted(t for m, ts in graph.items() if m.startswith("parkrl.sites") for t in ts
                  if not t.startswith("parkrl.sites")) == []
