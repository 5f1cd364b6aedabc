"""The installed CuPy's names and signatures, and binding calls against them.

The CuPy contract (:mod:`fastnet.cuda_sim.contract`) accepts exactly the arguments
the installed CuPy accepts.  This module reads that contract from ``cupy``
(which imports without a GPU): a function's signature from ``inspect``, or,
for Cython methods that ``inspect`` cannot read, from the signature line
Cython writes at the top of the docstring.  :func:`bind_signature` binds a
call and raises :class:`ContractError` where CuPy would refuse it.

It knows nothing of the contract's arrays or module object.
"""
from __future__ import annotations

import ast
import functools
import inspect

__all__ = [
    "ContractError",
    "available",
    "bind_method",
    "bind_signature",
    "binary_names",
    "binary_signature",
    "installed_cupy",
    "is_ufunc",
    "method_signature",
    "signature_from_doc",
    "signature_of",
]


class ContractError(TypeError):
    """A call that CuPy would refuse (or that would silently copy to the host)."""


@functools.lru_cache(maxsize=None)
def installed_cupy():
    """The ``cupy`` package (its names and signatures only: nothing here touches a device)."""
    import cupy

    return cupy


def available():
    """``(True, version)`` when CuPy imports (its contract can be checked), else ``(False, why)``."""
    try:
        return True, installed_cupy().__version__
    except Exception as exc:  # ImportError, or a broken install
        return False, f"{type(exc).__name__}: {exc}"


def signature_from_doc(obj):
    """Cython methods carry ``cls.name(self, a, b=None, *, c=1) -> T`` as their first doc line."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if not doc:
        return None
    line = doc.splitlines()[0]
    head, _, _ = line.partition(" -> ")
    name, paren, params = head.partition("(")
    if not paren or not params.endswith(")"):
        return None
    params = params[:-1]
    # Cython writes C types before some names ("tuple max_version=None"): keep the last word.
    cleaned = []
    for p in _split_params(params):
        lhs, eq, rhs = p.partition("=")
        cleaned.append(lhs.split()[-1] + eq + rhs if lhs.strip() else p)
    try:
        tree = ast.parse(f"def f({', '.join(cleaned)}): pass")
    except SyntaxError:
        return None
    args = tree.body[0].args
    P = inspect.Parameter
    out = []

    def default(node):
        try:
            return ast.literal_eval(node)
        except ValueError:
            return None

    positional = args.posonlyargs + args.args
    defaults = [P.empty] * (len(positional) - len(args.defaults)) + [default(d) for d in args.defaults]
    for a, d in zip(positional, defaults):
        out.append(P(a.arg, P.POSITIONAL_OR_KEYWORD, default=d))
    if args.vararg:
        out.append(P(args.vararg.arg, P.VAR_POSITIONAL))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append(P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else default(d)))
    if args.kwarg:
        out.append(P(args.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(out)


def _split_params(params):
    depth, cur, parts = 0, "", []
    for ch in params:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def signature_of(obj):
    """CuPy's signature of ``obj`` (None when it has none to read)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = signature_from_doc(obj)
    if sig is not None:
        params = list(sig.parameters.values())
        if params and params[0].name == "self":
            sig = sig.replace(parameters=params[1:])
    return sig


@functools.lru_cache(maxsize=None)
def method_signature(name):
    """CuPy's signature of the ``cupy.ndarray`` method ``name`` (without ``self``)."""
    return signature_of(getattr(installed_cupy().ndarray, name))


def is_ufunc(obj):
    """Whether ``obj`` is a CuPy ufunc (bound by ``nin``/``nout``, not by a signature)."""
    return type(obj).__name__ == "ufunc"


def bind_signature(sig, where, args, kwargs):
    """``{name: value}`` of the bound arguments; ContractError where CuPy would refuse them."""
    if sig is None:
        return None
    try:
        return sig.bind(*args, **kwargs).arguments
    except TypeError as exc:
        raise ContractError(f"{where}{sig}: {exc}") from None


def bind_method(name, args, kwargs):
    """Bind a call to an ndarray method against CuPy's signature."""
    return bind_signature(method_signature(name), f"cupy.ndarray.{name}", args, kwargs)


# --------------------------------------------------------------------------
# compiled modules that need a GPU library to import (cuBLAS's binding)
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _binary(module):
    """The bytes of compiled module ``module`` (found, not imported: CuPy's cuBLAS binding
    loads libcublas when imported, which a machine without the CUDA libraries lacks)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ContractError(f"CuPy has no module {module!r}")
    with open(spec.origin, "rb") as f:
        return f.read()


def binary_signature(module, name):
    """The signature Cython wrote into the docstring of ``module.name`` (as
    :func:`signature_from_doc` reads it), from the compiled file."""
    import re

    found = re.search(rb"(?<![A-Za-z0-9_])" + re.escape(name.encode()) + rb"\(([^()]*)\)", _binary(module))
    if found is None:
        raise ContractError(f"{module}.{name}: no such function in the installed CuPy")

    class _Doc:
        __doc__ = f"{name}({found.group(1).decode()})"

    sig = signature_from_doc(_Doc)
    if sig is None:
        raise ContractError(f"{module}.{name}: its signature line could not be read")
    return sig


def binary_names(module, names):
    """The subset of ``names`` (module-level constants or functions) that compiled
    ``module`` defines."""
    import re

    data = _binary(module)
    return {n for n in names if re.search(rb"(?<![A-Za-z0-9])" + re.escape(n.encode()) + rb"(?![A-Za-z0-9_])", data)}
