"""The package's shape: few entries at the top of ``fastnet/``, short import chains, no
module that only re-exports another's names.

An import chain is a path through the imports a module runs when it is imported (its
module-level ``import`` and ``from ... import`` statements, ``fastnet.kernels`` being
the repository's ``kernels/``); importing ``fastnet.cli`` runs every module of its
longest chain, one inside the other.  The numbers are the limits the re-layout into
subpackages set (before it: 60 entries, a chain of 16).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_ENTRIES = 12
LONGEST_CHAIN = 10


def _modules():
    """Dotted name -> (path, is_package) for every module of fastnet and fastnet.kernels."""
    found = {}
    for base, prefix in ((ROOT / "fastnet", "fastnet"), (ROOT / "kernels", "fastnet.kernels")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            package = parts[-1] == "__init__"
            if package:
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = (path, package)
    return found


def _import_time_statements(body):
    """The import statements a module body runs on import (not inside functions or classes,
    nor under ``if TYPE_CHECKING``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" in ast.unparse(node.test):
                yield from _import_time_statements(node.orelse)
            else:
                yield from _import_time_statements(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _import_time_statements(node.body + node.orelse + node.finalbody
                                               + [s for h in node.handlers for s in h.body])
        elif isinstance(node, ast.With):
            yield from _import_time_statements(node.body)


def import_graph():
    modules = _modules()
    graph = {}
    for name, (path, package) in modules.items():
        here = name if package else name.rpartition(".")[0]
        edges = set()
        for node in _import_time_statements(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def longest_chain(graph):
    """The longest path of modules (a list), or raises on an import cycle."""
    best, state = {}, {}

    def visit(node):
        if state.get(node) == "open":
            raise AssertionError(f"import cycle through {node}")
        if node not in best:
            state[node] = "open"
            tails = [visit(n) for n in sorted(graph[node])]
            best[node] = [node, *max(tails, key=len, default=[])]
            state[node] = "done"
        return best[node]

    return max((visit(n) for n in sorted(graph)), key=len)


def test_few_entries_at_the_packages_top():
    entries = sorted(p.name for p in (ROOT / "fastnet").iterdir() if p.name != "__pycache__")
    assert len(entries) <= TOP_ENTRIES, entries


def test_the_longest_import_chain_is_short():
    chain = longest_chain(import_graph())
    assert len(chain) <= LONGEST_CHAIN, " -> ".join(chain)


def test_the_chain_measure_sees_a_long_chain(tmp_path):
    """(the measure itself: a chain of 3 modules is 3 long, a cycle is refused)"""
    graph = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}
    assert longest_chain(graph) == ["a", "b", "c"]
    graph["c"] = {"a"}
    try:
        longest_chain(graph)
    except AssertionError as e:
        assert "cycle" in str(e)
    else:
        raise AssertionError("a cycle was not found")


def test_no_module_only_re_exports():
    """Every module defines something: a function, a class or a value, not only names
    imported from elsewhere.  A package's ``__init__.py`` may be only its docstring, or
    its namespace: names from its own submodules (``fastnet.datasets.load_mnist``)."""
    only_imports = []
    for name, (path, package) in _modules().items():
        body = ast.parse(path.read_text()).body
        rest = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom))
                and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # docstrings
                and not (isinstance(n, ast.Assign) and [ast.unparse(t) for t in n.targets] == ["__all__"])]
        imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))
                   and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        if package and all(isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith(name + "."))
                           for n in imports):
            continue  # a package's namespace over its own submodules
        if imports and not rest:
            only_imports.append(name)
    assert not only_imports, only_imports
