"""The package's shape: few entries at the top of ``fastnet/``, short import chains, no
module that only re-exports another's names, no function of more than 8 parameters
outside the public option lists.

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


#: Parameters a function of ``fastnet/`` may take (positional and keyword-only, not ``self``/``cls``
#: nor ``*args``/``**kwargs``); more are grouped into an object (``sklearn._Call``,
#: ``gemm_onednn._Problem``).  ``kernels/`` is not scanned: Numba kernels take flat arguments.
MAX_PARAMETERS = 8
#: Public option lists (one reason each): the names users know from Keras, scikit-learn and Ray Tune, documented.
ALLOWED_PARAMETERS = {
    "fastnet/train/fit.py:fit": "Keras's Model.fit options (epochs, batch_size, validation_split, callbacks...)",
    "fastnet/core/model.py:Network.__init__": "the public constructor: layers, loss, backend, dtype, seed...",
    "fastnet/core/sequential.py:MLP.__init__": "the public constructor: sizes, activation, dropout and Network's",
    "fastnet/integrations/sklearn.py:_FastnetMLP.__init__":
        "MLPRegressor's constructor: scikit-learn's MLPRegressor parameters (stored only)",
    "fastnet/integrations/sklearn.py:MLPClassifier.__init__":
        "scikit-learn's MLPClassifier parameters, class_weight included (stored only)",
    "fastnet/core/callbacks.py:EarlyStopping.__init__": "Keras's EarlyStopping options",
    "fastnet/train/checkpoint.py:ModelCheckpoint.__init__": "Keras's ModelCheckpoint options, and every=/path=",
    "fastnet/integrations/tune.py:run_sweep": "public: Ray Tune's Tuner/ASHA options a sweep passes on",
    "fastnet/plots/predictions.py:plot_top_k": "public plot function: the figure's options, each with a default",
    "fastnet/plots/units.py:plot_top_activating": "public plot function: the figure's options, each with a default",
}


def parameter_counts(base):
    """``{"path:qualname": parameters}`` of every function and method under the folder ``base``
    (paths from its parent: ``fastnet/...``)."""
    counts = {}

    def visit(node, path, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
                if names and names[0] in ("self", "cls"):
                    names = names[1:]
                counts[f"{path}:{prefix}{child.name}"] = len(names)
                visit(child, path, f"{prefix}{child.name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, path, f"{prefix}{child.name}.")
            else:
                visit(child, path, prefix)

    for file in sorted(base.rglob("*.py")):
        visit(ast.parse(file.read_text()), file.relative_to(base.parent).as_posix(), "")
    return counts


def test_no_function_takes_more_than_8_parameters():
    counts = parameter_counts(ROOT / "fastnet")
    over = {name: n for name, n in counts.items() if n > MAX_PARAMETERS}
    unlisted = {name: n for name, n in over.items() if name not in ALLOWED_PARAMETERS}
    assert not unlisted, f"more than {MAX_PARAMETERS} parameters (group them into an object): {unlisted}"
    stale = sorted(set(ALLOWED_PARAMETERS) - set(over))
    assert not stale, f"allowed but gone or at most {MAX_PARAMETERS} parameters now: {stale}"


def test_the_parameter_count_sees_a_long_private_function(tmp_path):
    """(the measure itself: self, *args and **kwargs are not counted; nested functions and
    methods are found)"""
    package = tmp_path / "fastnet"
    package.mkdir()
    (package / "m.py").write_text(
        "def _f(a, b, c, d, e, f, g, h, *args, i=0, **kwargs):\n"
        "    def inner(a, b, c, d, e, f, g, h, i):\n        pass\n"
        "class C:\n    def method(self, a, b, c, d, e, f, g, h):\n        pass\n")
    counts = parameter_counts(package)
    assert counts == {"fastnet/m.py:_f": 9, "fastnet/m.py:_f.<locals>.inner": 9, "fastnet/m.py:C.method": 8}
