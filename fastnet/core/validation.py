"""Checks of user input at the public entry points.

Every error names the argument, the constraint and the value received, e.g.
``batch_size must be a positive integer or None, got 0``.
"""
from __future__ import annotations

import difflib
import math
import numbers

import numpy as np


class NotFittedError(RuntimeError):
    """The model was used before it was fitted (or built)."""


# --------------------------------------------------------------------------
# scalar arguments: every module checks its arguments with these
# --------------------------------------------------------------------------
def did_you_mean(value, choices):
    """`` (did you mean 'x'?)`` when ``value`` is close to one of ``choices``."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(argument, value, choices):
    """Raise ``ValueError`` naming ``argument`` unless ``value`` is in ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{argument} must be one of {', '.join(map(repr, choices))}, "
            f"got {value!r}{did_you_mean(value, choices)}"
        )
    return value


def check_int(argument, value, minimum=1, allow_none=False):
    """An integer (not a bool) ``>= minimum``, as a Python int; ``None`` when allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{argument} must be {what}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def check_real(argument, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number (not a bool) within the bounds, as a Python float.

    A non-number or NaN raises ``TypeError``; inf or a value out of bounds ``ValueError``,
    e.g. ``momentum must be in [0, 1), got 1.5``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or value != value:
        raise TypeError(f"{argument} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be finite, got {value!r}")
    bad = (
        (low is not None and (value <= low if low_open else value < low))
        or (high is not None and (value >= high if high_open else value > high)))
    if bad:
        if low is not None and high is not None:
            bounds = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            bounds = f"{'>' if low_open else '>='} {low}"
        else:
            bounds = f"{'<' if high_open else '<='} {high}"
        raise ValueError(f"{argument} must be {bounds}, got {value!r}")
    return float(value)


def check_bool(argument, value):
    """``True`` or ``False`` (NumPy's bools too), as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argument} must be True or False, got {value!r}")
    return bool(value)


def is_device_array(value):
    """A GPU array (CuPy's, or the CuPy contract's): it exports device memory and
    copies itself to the host with ``.get()``."""
    return (not isinstance(value, np.ndarray) and callable(getattr(value, "get", None))
            and (hasattr(value, "__cuda_array_interface__") or hasattr(value, "__dlpack_device__")))


def as_array(argument, value):
    """``value`` as a NumPy array; lists, tuples, GPU arrays and host DLPack arrays
    (``__dlpack__``: PyTorch's CPU tensors, JAX's...: read without a copy) accepted."""
    if value is None:
        raise TypeError(f"{argument} must be an array, got None")
    if is_device_array(value):
        value = value.get()  # a GPU array: copy to the host
    elif not isinstance(value, np.ndarray) and hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            device = getattr(value, "__dlpack_device__", lambda: None)()
            raise TypeError(f"{argument} ({type(value).__name__}, DLPack device {device}) could not be read as "
                            f"a NumPy array: {exc}; give fastnet a CPU array (a PyTorch tensor: "
                            f"tensor.detach().cpu())") from None
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{argument} could not be converted to an array: {exc}") from None


#: Arrays of at most this many values are checked by their sum of squares (``np.vdot``: the
#: BLAS, no NumPy floating-point warnings, so no ``np.errstate``, whose entering costs about
#: 1 µs): float32, Intel Xeon with AMX, 784 values 0.51 µs, against 0.97 for
#: ``np.isfinite(a).all()`` and 2.05 for the sum in ``np.errstate`` (65,536: 4.44, 5.72,
#: 11.88).  The sum stays for larger arrays (``fit``'s, where it was measured: it runs on the
#: calling thread at the memory's speed, where a BLAS dot would wake the BLAS's threads).
SMALL_CHECK = 65536


def check_finite(argument, a):
    """Raise ``ValueError`` saying how many NaN/inf values ``a`` has and where the first is."""
    if a.dtype.kind != "f" or a.size == 0:
        return
    if a.size <= SMALL_CHECK:
        # NaN and inf propagate through the sum of squares too; large finite values may
        # overflow it, and the exact count below then finds nothing
        if math.isfinite(np.vdot(a, a)):
            return
    else:
        # Fast path: NaN and inf propagate through a sum, one pass at the memory's speed
        # (the fastest of the ways measured: docs/pages/decisions.md, "The finite-values check").
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(a.sum()):
                return
    bad = ~np.isfinite(a)
    count = int(bad.sum())
    if count:  # (else a row sum overflowed: large but finite values)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = ", ".join(map(str, first))
        raise ValueError(
            f"{argument} contains {count} NaN or infinite value{'s' if count > 1 else ''}; "
            f"the first is {argument}[{where}] = {a[first].item()!r}"
        )


def feature_names(X):
    """The column names of a DataFrame ``X`` when they are all strings (scikit-learn's rule),
    as an object array; else None (arrays, lists, integer column labels)."""
    columns = getattr(X, "columns", None)
    if columns is None or not hasattr(X, "dtypes"):
        return None
    names = list(columns)
    return np.asarray(names, dtype=object) if names and all(isinstance(c, str) for c in names) else None


def check_feature_names(names, fitted, argument="X"):
    """``X``'s column names (:func:`feature_names`) against those of ``fit`` (``fitted``), as
    scikit-learn checks them: other names or another order raise ``ValueError``; no names
    (an array) where ``fit`` had them warn."""
    import warnings

    if fitted is None:
        return
    if names is None:
        warnings.warn(f"{argument} does not have valid feature names, but the model was fitted with feature "
                      f"names ({', '.join(map(repr, list(fitted)[:10]))}{', ...' if len(fitted) > 10 else ''}): "
                      "the columns are taken in that order", UserWarning, stacklevel=4)
        return
    if list(names) == list(fitted):
        return
    unseen = [n for n in names if n not in set(fitted)]
    missing = [n for n in fitted if n not in set(names)]
    detail = []
    if unseen:
        detail.append(f"feature names unseen at fit time: {unseen[:10]}")
    if missing:
        detail.append(f"feature names seen at fit time, yet now missing: {missing[:10]}")
    if not detail:
        detail.append(f"feature names must be in the same order as they were in fit: {list(fitted)[:10]}, "
                      f"got {list(names)[:10]}")
    raise ValueError(f"The feature names should match those that were passed during fit ({argument}'s "
                     f"columns): {'; '.join(detail)}")


def check_columns(X, argument="X"):
    """A DataFrame's columns must be numbers: categorical (pandas ``category``), object, string,
    bool and date columns are refused, named, before any conversion (a numeric categorical
    would be read as its numbers, an ordering the categories do not have)."""
    dtypes = getattr(X, "dtypes", None)
    columns = getattr(X, "columns", None)
    if dtypes is None or columns is None:
        return
    bad = [(c, t) for c, t in zip(columns, list(dtypes))
           if str(t) == "category" or getattr(t, "kind", "O") not in "iuf"]
    if bad:
        listed = ", ".join(f"{c!r} ({t})" for c, t in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise TypeError(f"{argument} has non-numeric columns: {listed}; encode them as numbers first "
                        "(e.g. pandas.get_dummies, or scikit-learn's OneHotEncoder / OrdinalEncoder)")


def check_range(argument, a, dtype):
    """Values of ``a`` beyond the finite range of ``dtype`` (float64 data for a float32 model:
    they would become infinite) raise ``ValueError`` naming the first."""
    if a.dtype == dtype:  # (the common case, before the finfo lookups)
        return
    dtype = np.dtype(dtype)
    if a.dtype.kind != "f" or dtype.kind != "f" or np.finfo(a.dtype).max <= np.finfo(dtype).max or a.size == 0:
        return
    limit = float(np.finfo(dtype).max)
    if -limit <= float(a.min()) and float(a.max()) <= limit:
        return
    beyond = np.abs(a) > limit
    first = tuple(int(i) for i in np.argwhere(beyond)[0])
    raise ValueError(
        f"{argument} holds {int(beyond.sum())} value{'s' if beyond.sum() > 1 else ''} beyond the range of the "
        f"model's {dtype} (+-{limit:.3g}); the first is {argument}[{', '.join(map(str, first))}] = "
        f"{a[first].item()!r}. Scale the inputs (e.g. scikit-learn's StandardScaler), or use dtype='float64'")


def check_X(X, n_features=None, argument="X", one_sample=False, dtype=None):
    """Validate features: numeric, at least 2-D (trailing axes are flattened), finite.

    With ``one_sample`` (inference), a 1-D array of ``n_features`` values is one sample;
    a 2-D array holding exactly ``n_features`` values in another layout (one ``28 x 28``
    image for 784 features) is ambiguous, and its error says how to pass it as one.
    ``dtype``: the model's; values beyond its range are refused (:func:`check_range`)."""
    if (type(X) is np.ndarray and X.ndim == 2 and X.dtype == dtype and X.shape[0]
            and X.shape[1] == n_features and X.dtype.kind == "f"):
        # the common case in a few steps (predict on a row: 4.5 µs of 28 went to this check)
        check_finite(argument, X)
        return X
    check_columns(X, argument)
    a = as_array(argument, X)
    if a.dtype.kind in "bOUSVcMm":
        kind = {"b": "bool", "O": "object", "U": "string", "S": "bytes", "V": "void",
                "c": "complex", "M": "datetime", "m": "timedelta"}[a.dtype.kind]
        raise TypeError(f"{argument} must hold real numbers, got dtype {a.dtype} ({kind})")
    if one_sample and n_features is not None and a.ndim == 1 and a.size == n_features:
        a = a.reshape(1, n_features)  # (inference) one sample: a row of n_features values
    if a.ndim < 2:
        if a.ndim == 1 and n_features is not None and a.size != n_features:
            raise ValueError(f"{argument} is 1-D with {a.size} values, but the model expects {n_features} "
                             f"features per sample (shape (n_samples, {n_features}))")
        raise ValueError(
            f"{argument} must be 2-D (n_samples, n_features), got shape {a.shape}"
            + ("; for one sample use X.reshape(1, -1), for one feature X.reshape(-1, 1)" if a.ndim == 1 else "")
        )
    if a.shape[0] == 0:
        raise ValueError(f"{argument} is empty: shape {a.shape}")
    if a.ndim > 2:
        a = a.reshape(a.shape[0], -1)
    if a.shape[1] == 0:
        raise ValueError(f"{argument} has no features: shape {a.shape}")
    if n_features is not None and a.shape[1] != n_features:
        one = (f" (if this is one sample of shape {a.shape}, pass {argument}.reshape(1, -1))"
               if a.size == n_features else "")
        raise ValueError(
            f"{argument} has {a.shape[1]} features per sample, but the model expects {n_features}{one}"
        )
    check_finite(argument, a)
    if dtype is not None:
        check_range(argument, a, dtype)
    return a


def single_class(targets, kind, classes=None):
    """The one class of classification ``targets`` when they hold a single one (its label from
    ``classes`` for class ids; 0 or 1 for one sigmoid output), else None."""
    t = np.asarray(targets)
    if kind == "class":
        ids = np.unique(t)
        if ids.size == 1:
            return classes[int(ids[0])].item() if classes is not None else int(ids[0])
    elif kind == "binary" and (t.ndim == 1 or t.shape[1] == 1):
        values = np.unique(t)
        if values.size == 1:
            return int(values[0]) if values[0] in (0, 1) else values[0].item()
    return None


def check_lengths(X, y, argument="y"):
    if len(X) != len(y):
        raise ValueError(f"X and {argument} have different lengths: {len(X)} and {len(y)}")


def check_sample_weight(sample_weight, n, argument="sample_weight"):
    """``None``, or float64 weights of shape ``(n,)``: finite, non-negative, not all zero."""
    if sample_weight is None:
        return None
    w = as_array(argument, sample_weight)
    if w.ndim == 0:
        w = np.full(n, w)
    if w.dtype.kind not in "iuf" and w.dtype.kind != "b":
        raise TypeError(f"{argument} must hold real numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != (n,):
        raise ValueError(f"{argument} must have shape ({n},), one weight per sample, got shape {w.shape}")
    check_finite(argument, w)
    if (w < 0).any():
        i = int(np.argmax(w < 0))
        raise ValueError(f"{argument} must be non-negative, got {w[i].item()!r} at {argument}[{i}]")
    if not w.sum() > 0:
        raise ValueError(f"{argument} sums to 0: no sample would count")
    return w


def class_weight_rows(class_weight, targets, kind, classes, argument="class_weight"):
    """Per-row weights (float64, shape ``(n,)``) from ``class_weight``: a dict ``{label: weight}``
    (labels as the model knows them: ``classes``, its ``classes_``; a class left out weighs 1,
    a key that is no class is refused) or ``"balanced"`` (``n / (n_classes * count(class))``
    over the classes present in ``targets``, scikit-learn's ``compute_sample_weight``).

    ``targets``: class ids (``kind="class"``), or 0/1 targets of one sigmoid output
    (``kind="binary"``, labels 0 and 1).  Regression and multi-output binary targets are
    refused: class weights have no meaning there (use ``sample_weight``)."""
    if kind == "class":
        ids = np.asarray(targets).astype(np.int64)
        labels = list(np.asarray(classes).tolist())
    elif kind == "binary":
        t = np.asarray(targets)
        if t.ndim == 2 and t.shape[1] != 1:
            raise ValueError(f"{argument} needs one class per sample; these targets have {t.shape[1]} outputs "
                             "(multi-label): weigh rows with sample_weight instead")
        t = t.reshape(len(t))
        if not np.all((t == 0) | (t == 1)):
            raise ValueError(f"{argument} needs 0/1 targets for a sigmoid output, got {t[(t != 0) & (t != 1)][0]!r}")
        ids, labels = t.astype(np.int64), [0, 1]
    else:
        raise TypeError(f"{argument} is for classifiers; this model is a regressor: weigh rows with sample_weight")
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"{argument} must be a dict {{label: weight}} or \"balanced\", got {class_weight!r}")
        counts = np.bincount(ids, minlength=len(labels)).astype(np.float64)
        present = counts > 0
        per_class = np.zeros(len(labels))
        per_class[present] = len(ids) / (present.sum() * counts[present])
        return per_class[ids]
    if not isinstance(class_weight, dict):
        raise TypeError(f"{argument} must be a dict {{label: weight}} or \"balanced\", got {class_weight!r}")
    position = {label: i for i, label in enumerate(labels)}
    per_class = np.ones(len(labels))
    for key, value in class_weight.items():
        k = key.item() if isinstance(key, np.generic) else key
        if k not in position:
            raise ValueError(f"{argument} has a key {key!r} that is not a class of this model; its classes are "
                             f"{labels[:10]}{' ...' if len(labels) > 10 else ''}")
        w = check_real(f"{argument}[{key!r}]", value, low=0)
        per_class[position[k]] = w
    return per_class[ids]


def check_verbose(verbose, argument="verbose"):
    """``verbose`` as 0, 1 or 2: ``"auto"`` (Keras's default) is 1, booleans 0 and 1."""
    if isinstance(verbose, str):
        if verbose == "auto":
            return 1
    elif verbose in (0, 1, 2) and not isinstance(verbose, float):
        return int(verbose)
    raise ValueError(f"{argument} must be \"auto\", 0, 1 or 2, got {verbose!r}")


def check_batch_size(batch_size):
    return check_int("batch_size", batch_size, 1, allow_none=True)


def check_epochs(epochs):
    return check_int("epochs", epochs, 0)


#: The end of a class-target error: what to do when ``y`` is a quantity, not a class.
REGRESSION_HINT = (": if y is a quantity to predict (regression), not a class, give the model loss=\"mse\" "
                   "and a linear output, e.g. MLP([n_features, 64, 1], loss=\"mse\") (or use "
                   "fastnet.integrations.sklearn.MLPRegressor)")


def encode_labels(y, n_classes, classes=None, argument="y", learn=True, hint=""):
    """``(targets, classes)``: labels of any kind turned into class ids for ``check_class_targets``.

    ``classes`` (a model's ``classes_``) maps labels to ids by position; a label not in
    it is refused.  Without it (a first fit), integer ids in ``[0, n_classes)`` stay
    ids (``classes = arange(n_classes)``); other labels (strings, booleans, integers
    outside that range) become ids by their sorted order, and there must be exactly
    ``n_classes`` of them (``learn=False``: refused, as a model that has no labels yet
    cannot know what they mean).  Bytes are refused (decode them to ``str``).  One-hot
    rows, and targets no label rule fits (fractions), pass through unchanged for
    ``check_class_targets`` to accept or refuse.
    """
    a = as_array(argument, y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.size == 0:
        return a, classes if classes is not None else np.arange(n_classes)
    numeric = a.dtype.kind in "iuf"
    if numeric:
        with np.errstate(invalid="ignore"):
            integral = bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))
        if not integral:
            return a, classes if classes is not None else np.arange(n_classes)
    elif a.dtype.kind == "S" or (a.dtype.kind == "O" and any(isinstance(v, bytes) for v in a.tolist())):
        raise TypeError(f"{argument} holds bytes labels: decode them to str first ({argument}.astype(str))")
    elif a.dtype.kind not in "bUO":
        return a, classes if classes is not None else np.arange(n_classes)
    if classes is None:
        if numeric and a.min() >= 0 and a.max() < n_classes:
            return a, np.arange(n_classes)
        if not learn:
            raise ValueError(f"{argument} holds labels other than class ids in [0, {n_classes}), but the model "
                             "has no classes_ yet: fit it on these labels first")
        try:
            classes = np.unique(a)
        except TypeError as exc:  # labels of types that do not sort together
            raise TypeError(f"{argument} holds labels that cannot be sorted together ({exc})") from None
        if len(classes) != n_classes:
            shown = ", ".join(map(repr, classes[:10].tolist())) + (", ..." if len(classes) > 10 else "")
            if numeric:
                bad = (a < 0) | (a >= n_classes)
                i = int(np.argmax(bad))
                raise ValueError(
                    f"{argument} holds class ids outside [0, {n_classes}): {argument}[{i}] = {a[i].item()!r} "
                    f"({int(bad.sum())} such labels); the output layer has {n_classes} units. Labels other "
                    f"than class ids are taken when there are exactly {n_classes} distinct ones; here there "
                    f"are {len(classes)} ({shown})" + hint)
            raise ValueError(
                f"{argument} holds {len(classes)} distinct labels ({shown}), but the output layer has "
                f"{n_classes} units: exactly {n_classes} distinct labels are needed")
    try:
        pos = np.searchsorted(classes, a)
    except TypeError:
        pos = None
    if pos is None or not (np.all(pos < len(classes)) and np.all(classes[np.minimum(pos, len(classes) - 1)] == a)):
        bad = ~np.isin(a, classes)
        i = int(np.argmax(bad))
        if classes.dtype.kind in "iu" and np.array_equal(classes, np.arange(n_classes)):  # ids
            raise ValueError(f"{argument} holds class ids outside [0, {n_classes}): {argument}[{i}] = "
                             f"{a[i].item()!r} ({int(bad.sum())} such labels); the output layer has "
                             f"{n_classes} units")
        raise ValueError(f"{argument} holds labels the model was not trained on: {argument}[{i}] = "
                         f"{a[i].item()!r} ({int(bad.sum())} such labels); its classes_ are "
                         f"{classes.tolist()[:10]}")
    return pos.astype(np.int32), classes


def check_class_targets(y, n_classes, argument="y", hint=""):
    """Integer class ids in ``[0, n_classes)`` from ids or one-hot rows; returns int32 ids.
    ``hint`` ends the message of fractional targets (a model's: :data:`REGRESSION_HINT`)."""
    a = as_array(argument, y)
    if a.dtype.kind in "OUSVcMm" or a.size and a.dtype.kind == "b" and a.ndim == 1:
        raise TypeError(f"{argument} must hold integer class ids or one-hot rows, got dtype {a.dtype}")
    if a.ndim == 2 and a.shape[1] == n_classes and n_classes > 1:
        check_finite(argument, a.astype(np.float64) if a.dtype.kind == "b" else a)
        if not np.all((a == 0) | (a == 1)) or not np.all(a.sum(axis=1) == 1):
            raise ValueError(f"{argument} has {n_classes} columns but its rows are not one-hot")
        return np.argmax(a, axis=1).astype(np.int32)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(
            f"{argument} must be class ids of shape (n,) or one-hot rows of shape (n, {n_classes}), "
            f"got shape {a.shape}"
        )
    if a.size == 0:
        raise ValueError(f"{argument} is empty")
    if a.dtype.kind == "f":
        check_finite(argument, a)
        if not np.all(a == np.round(a)):
            i = int(np.argmax(a != np.round(a)))
            raise ValueError(f"{argument} must hold integer class ids, got {a[i].item()!r} at {argument}[{i}]"
                             + hint)
    bad = (a < 0) | (a >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{argument} holds class ids outside [0, {n_classes}): {argument}[{i}] = {a[i].item()!r} "
            f"({int(bad.sum())} such labels); the output layer has {n_classes} units"
        )
    return a.astype(np.int32)


def check_real_targets(y, n_outputs, binary=False, argument="y", hint=""):
    """Float targets shaped (n, n_outputs); 1-D accepted when there is one output.
    ``hint`` ends the message of targets outside [0, 1] (``binary``)."""
    a = as_array(argument, y)
    if a.dtype.kind in "OUSVcMm":
        raise TypeError(f"{argument} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 1 and n_outputs == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] != n_outputs:
        raise ValueError(f"{argument} must have shape (n, {n_outputs}), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{argument} is empty")
    check_finite(argument, a)
    if binary and not np.all((a >= 0) & (a <= 1)):
        i = tuple(int(v) for v in np.argwhere((a < 0) | (a > 1))[0])
        raise ValueError(
            f"{argument} must hold binary targets in [0, 1], got {a[i].item()!r} at {argument}[{i[0]}, {i[1]}]" + hint)
    return a
