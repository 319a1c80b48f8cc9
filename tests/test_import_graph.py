"""No module of maskwatch imports another in a circle.

The import graph is read from the source with :mod:`ast`, not by importing: every
``import maskwatch...`` and ``from maskwatch... import ...`` counts, at module level,
inside functions and under ``if TYPE_CHECKING:`` alike, since a deferred import hides a
circle without removing it. Relative imports are resolved; ``from maskwatch.x import y``
is an edge to ``maskwatch.x.y`` when that is a module, else to ``maskwatch.x``. A
package's ``__init__`` is a module like any other: it may import its own submodules
(to re-export them), but a submodule that imports the package back
(``from maskwatch.gallery import X`` inside ``maskwatch/gallery/sqlite.py``) closes a
circle with it. Importing a submodule is not counted as importing its parent packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "maskwatch"


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` under ``src``."""
    out: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` if it is a module, else its longest prefix that is one (None: none is)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path],
               package: str) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import of ``package``'s modules in ``path``."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):  # every node: function bodies and TYPE_CHECKING blocks too
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    target = _resolve(alias.name, modules)
                    if target is not None:
                        yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # the package a relative import counts from: the module's own for an
                # __init__, else its parent; each further dot goes one package up
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == package or source.startswith(package + ".")):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                target = sub if sub in modules else _resolve(source, modules)
                if target is not None:
                    yield target, node.lineno


Graph = dict[str, dict[str, list[int]]]


def import_graph(src: Path, package: str) -> Graph:
    """module -> {imported module: the lines that import it}, for the package's modules."""
    modules = module_files(src, package)
    graph: Graph = {}
    for module, path in modules.items():
        edges: dict[str, list[int]] = {}
        for target, line in imports_of(module, path, modules, package):
            edges.setdefault(target, []).append(line)
        graph[module] = {target: sorted(set(lines)) for target, lines in edges.items()}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module, and the modules that
    import themselves, each sorted; Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return sorted(found)


def describe(graph: Graph, component: list[str], files: dict[str, Path]) -> str:
    """The edges inside one circle, with the file and lines of the imports."""
    members = set(component)
    out = [" <-> ".join(component)]
    for module in component:
        for target, lines in sorted(graph[module].items()):
            if target in members:
                where = files[module].relative_to(SRC.parent)
                at = ", ".join(map(str, lines))
                out.append(f"    {module} -> {target}  ({where}: line {at})")
    return "\n".join(out)


def test_no_module_of_maskwatch_imports_another_in_a_circle() -> None:
    graph = import_graph(SRC, PACKAGE)
    files = module_files(SRC, PACKAGE)
    assert len(graph) > 50 and "maskwatch.events" in graph  # the walk found the package
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(describe(graph, c, files)
                                                      for c in found)


def test_the_leaves_and_the_event_writer_load_no_gallery_module() -> None:
    """The same, as Python runs it: what each import really loads of maskwatch."""
    code = (
        "import sys\n"
        "import maskwatch.errors\n"
        "print(sorted(m for m in sys.modules if m.startswith('maskwatch')))\n"
        "import maskwatch.records\n"
        "print(sorted(m for m in sys.modules if m.startswith('maskwatch')))\n"
        "import maskwatch.events\n"
        "print(sorted(m for m in sys.modules if m.startswith('maskwatch.gallery')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    errors, records, gallery = res.stdout.splitlines()
    assert errors == "['maskwatch', 'maskwatch.errors']"
    assert records == ("['maskwatch', 'maskwatch.config', 'maskwatch.errors', 'maskwatch.records', "
                       "'maskwatch.types']")
    assert gallery == "[]"


# ---------------------------------------------------------------- the walker itself


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("files", "expected"), [
    pytest.param({"__init__.py": "", "a.py": "import pkg.b\n", "b.py": ""}, [], id="no circle"),
    pytest.param({"__init__.py": "", "a.py": "from pkg import b\n",
                  "b.py": "from pkg.a import X\n"},
                 [["pkg.a", "pkg.b"]], id="module level"),
    pytest.param({"__init__.py": "", "a.py": "def f():\n    from pkg.b import Y\n",
                  "b.py": "from typing import TYPE_CHECKING\n"
                          "if TYPE_CHECKING:\n    from pkg.a import X\n"},
                 [["pkg.a", "pkg.b"]], id="deferred and TYPE_CHECKING"),
    pytest.param({"__init__.py": "", "a.py": "from .b import Y\n", "b.py": "from . import a\n"},
                 [["pkg.a", "pkg.b"]], id="relative"),
    pytest.param({"__init__.py": "", "sub/__init__.py": "from .x import X\n",
                  "sub/x.py": "from ..a import A\n", "a.py": "import pkg.sub.x\n"},
                 [["pkg.a", "pkg.sub.x"]], id="relative two levels"),
    pytest.param({"__init__.py": "", "g/__init__.py": "from pkg.g.s import S\n",
                  "g/s.py": "from pkg.g.b import B\n", "g/b.py": ""},
                 [], id="__init__ re-exports its submodules"),
    pytest.param({"__init__.py": "", "g/__init__.py": "from pkg.g.s import S\n",
                  "g/s.py": "from pkg.g import B\n"},
                 [["pkg.g", "pkg.g.s"]], id="submodule imports its package back"),
    pytest.param({"__init__.py": "", "a.py": "def f():\n    import pkg.a\n"}, [["pkg.a"]],
                 id="self-import"),
    pytest.param({"__init__.py": "", "a.py": "import pkgother.b\nimport os\n",
                  "b.py": "import pkg.a\n"},
                 [], id="other packages ignored"),
    pytest.param({"__init__.py": "", "a.py": "import pkg.b\n", "b.py": "import pkg.c\n",
                  "c.py": "import pkg.a\n", "d.py": "import pkg.e\n", "e.py": "import pkg.d\n"},
                 [["pkg.a", "pkg.b", "pkg.c"], ["pkg.d", "pkg.e"]], id="two circles, one of three"),
])
def test_walker_finds_circles(tmp_path: Path, files: dict[str, str],
                              expected: list[list[str]]) -> None:
    assert cycles(import_graph(_tree(tmp_path, files), "pkg")) == expected


def test_every_importing_line_is_kept(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"__init__.py": "", "a.py": "import os\nimport pkg.b\n",
                            "b.py": "def f():\n    import pkg.a\n    from pkg import a\n"})
    graph = import_graph(root, "pkg")
    assert graph["pkg.b"] == {"pkg.a": [2, 3]}
