"""scikit-learn estimators: ``MLPClassifier`` and ``MLPRegressor`` on fastnet.

Real scikit-learn estimators (``BaseEstimator`` with the classifier/regressor
mixins): ``clone``, pipelines, ``GridSearchCV``, ``cross_val_score``, joblib and
pickling work, and both pass scikit-learn's own estimator checks
(``tests/integrations/test_sklearn.py`` runs ``parametrize_with_checks`` on them).  Input
checks are scikit-learn's (``validate_data``: ``n_features_in_``,
``feature_names_in_``, sparse input refused with a hint to ``.toarray()``); the
network and its training are fastnet's (``fastnet.MLP`` and ``fit``).

Parameters are named as in scikit-learn's ``MLPClassifier`` where there is a
counterpart (``hidden_layer_sizes``, ``activation``, ``batch_size``,
``max_iter``, ``learning_rate_init``, ``random_state``, ``early_stopping``,
``validation_fraction``, ``n_iter_no_change``, ``tol``, ``shuffle``,
``verbose``, ``alpha``, ``warm_start``), plus fastnet's own (``optimizer``,
``schedule``, ``dropout``, ``weight_decay``, ``backend``, ``dtype``).
``activation="logistic"`` is scikit-learn's name for ``"sigmoid"``.  The default
``dtype`` is float64, as in scikit-learn; ``dtype="float32"`` trains faster.

``alpha`` is scikit-learn's L2 penalty, with scikit-learn's arithmetic: each batch of
``m`` rows adds ``alpha / (2 m) * sum(||W||^2)`` over the weight matrices (not the
biases) to the loss, so the gradient of each weight matrix gains ``alpha / m * W``
(with sample weights, the penalty keeps scikit-learn's ratio to the weighted data term),
and ``loss_curve_``, ``loss_``, ``best_loss_`` and the ``n_iter_no_change`` rule read
the penalised loss, as scikit-learn's do.  fastnet's ``weight_decay`` is another
thing: ``weight_decay * w`` added to every parameter's gradient (biases too) whatever
the batch size.  ``warm_start=True``: ``fit`` continues from the fitted network (the
same classes and features required), with a new optimizer, ``loss_curve_`` and
``validation_scores_`` extended and the stopping rule's count and best carried over,
as scikit-learn's.  ``coefs_``/``intercepts_`` are scikit-learn's lists of
``(n_in, n_out)`` and ``(n_out,)`` arrays (host copies; for two classes the last
layer is the single logistic unit scikit-learn has, the difference of fastnet's two
softmax units, which gives the same probabilities).  A ``fit`` that runs ``max_iter``
epochs without meeting the stopping rule warns ``ConvergenceWarning``.

Needs scikit-learn (``pip install ".[sklearn]"`` in fastnet's clone).
"""
from __future__ import annotations

import copy
import numbers
import threading
import warnings
from dataclasses import dataclass

import numpy as np

try:
    import sklearn  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - the hint is tested in a subprocess
    if exc.name != "sklearn":
        raise
    raise ModuleNotFoundError(
        "fastnet.integrations.sklearn needs scikit-learn: pip install \".[sklearn]\" in fastnet's clone "
        "(or pip install scikit-learn)", name="sklearn") from None
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

import functools

from sklearn.model_selection import train_test_split

from fastnet.core.callbacks import Callback
from fastnet.core.losses import BinaryCrossEntropy, CrossEntropy, MeanSquaredError
from fastnet.core.optimizers import Optimizer, get_optimizer
from fastnet.core.sequential import MLP
from fastnet.train.fit import _select_optimizer
from fastnet.core.validation import check_bool, check_columns, check_int, check_real

#: scikit-learn's activation names that fastnet spells differently.
_SKLEARN_NAMES = {"logistic": "sigmoid"}


class _NoImprovementStop(Callback):
    """scikit-learn's stopping rule (``BaseMultilayerPerceptron._update_no_improvement_count``).

    After each epoch, with ``best`` the lowest training loss so far (``score``: the highest
    validation score), an epoch counts as no improvement when its loss is above
    ``best - tol`` (its score below ``best + tol``), and the count goes back to 0 otherwise;
    ``best`` itself follows any improvement, however small.  Training stops once the count
    exceeds ``n_iter_no_change``: at the earliest at epoch ``n_iter_no_change + 2``, as
    scikit-learn's ``n_iter_`` (the first epoch always improves on the infinite start).

    ``score(model)``: the validation score (``early_stopping``); the weights of the epoch
    that raised the best score are put back at the end (the initial weights if none did).

    ``start``: ``(count, best)`` carried over from an earlier fit (``warm_start``,
    ``partial_fit``), as scikit-learn keeps ``_no_improvement_count`` and ``best_loss_``
    (``best_validation_score_``) between them.  ``stopped``: the rule stopped the run.
    """

    def __init__(self, n_iter_no_change, tol, score=None, start=None):
        self.n_iter_no_change, self.tol, self.score, self.start = n_iter_no_change, tol, score, start

    def on_train_begin(self, model):
        self.count, self.best = self.start or (0, np.inf if self.score is None else -np.inf)
        self.best_weights = None if self.score is None else model.get_weights()
        self.stopped = False
        self.scores = []

    def on_epoch_end(self, model, epoch, logs):
        if self.score is None:
            loss = logs["loss"]
            self.count = self.count + 1 if loss > self.best - self.tol else 0
            if loss < self.best:
                self.best = loss
        else:
            score = self.score(model)
            self.scores.append(score)
            self.count = self.count + 1 if score < self.best + self.tol else 0
            if score > self.best:
                self.best = score
                self.best_weights = model.get_weights()
        if self.count > self.n_iter_no_change:
            model.stop_training = self.stopped = True

    def on_train_end(self, model):
        if self.best_weights is not None:
            model.set_weights(self.best_weights)


class _L2Penalty(Callback):
    """scikit-learn's ``alpha``: before each optimizer step, ``alpha * c / m * W`` is added to
    the gradient of each weight matrix ``W`` (not the biases), ``m`` the batch's rows; and
    each epoch's loss gains the penalty of its batches, ``sum_b alpha * c * ||W_b||^2 / 2``
    over ``n`` rows, as scikit-learn's ``loss_curve_`` (``||W_b||^2``: the weights the
    batch's gradient was taken at).  ``c`` is 1 without sample weights, else ``n / sum(w)``:
    fastnet scales the weights to a mean of 1 where scikit-learn divides by each batch's
    weight sum, and ``c`` keeps the penalty's ratio to the data term scikit-learn's.

    ``on_epoch_end`` writes the penalised loss into ``logs["loss"]`` (for the stopping rule,
    which follows it) and into ``curve``."""

    def __init__(self, alpha, n, batch, c=1.0):
        self.alpha, self.n, self.batch, self.c = alpha, n, batch, c
        self.curve = []

    def bind(self, model):
        pairs = [(name, a) for name, a in model.parameters()]
        grads = [g for layer in model.layers for g in layer.grads()]
        self._weights = [(a, g) for (name, a), g in zip(pairs, grads) if name.endswith(".W")]
        self._xp = model.backend_.xp

    def on_epoch_begin(self, model, epoch, logs):
        self.step_in_epoch, self.penalty = 0, 0.0

    def before_step(self):
        m = min(self.batch, self.n - self.step_in_epoch * self.batch)
        self.step_in_epoch += 1
        k = self.alpha * self.c
        squares = 0.0
        for w, g in self._weights:
            flat = w.reshape(-1)
            squares += float(self._xp.dot(flat, flat))
            g += (k / m) * w
        self.penalty += 0.5 * k * squares / self.n

    def on_epoch_end(self, model, epoch, logs):
        logs["loss"] = logs["loss"] + self.penalty
        self.curve.append(logs["loss"])


def _penalised_step(optimizer, penalty, lr):
    """The optimizer's step after the ``alpha`` penalty's gradient is added (an instance
    attribute for the fit's duration: the class's ``step`` does the update)."""
    penalty.before_step()
    type(optimizer).step(optimizer, lr)


class _Curve(Callback):
    """Each epoch's loss, as ``loss_curve_`` holds it (without ``alpha``)."""

    def __init__(self):
        self.curve = []

    def on_epoch_end(self, model, epoch, logs):
        self.curve.append(logs["loss"])


def _all_or_nothing(method):
    """A fit that raises leaves the estimator as it was (labels, network, n_features_in_)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        before = dict(vars(self))
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise
    return wrapper


#: Held while a fit's new state is published into an estimator and while one is read whole
#: (a snapshot for predict, a pickle): a reader sees the old fit or the new one, never a mix.
_PUBLISH = threading.RLock()


def _published(method):
    """``fit`` as a transaction: it runs on a copy of the estimator (a new network, new labels,
    ``n_features_in_``...), and its attributes replace the estimator's in one step at the end.
    Meanwhile ``predict`` and pickles from other threads see the previous fit whole; a fit that
    raises leaves the estimator as it was."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        work = self._snapshot()
        method(work, *args, **kwargs)
        with _PUBLISH:
            vars(self).clear()
            vars(self).update(vars(work))
        return self
    return wrapper


@dataclass(frozen=True)
class _Call:
    """What one ``fit`` or ``partial_fit`` asks of ``_FastnetMLP._train``: up to ``epochs``;
    ``seed`` and ``stratify`` (the labels to stratify on, or None) for the validation split;
    ``incremental`` (``partial_fit``); ``continued`` (the fitted network trains on:
    ``warm_start``, ``partial_fit``); ``depth``: the estimator's own frames above ``_train``,
    for the warning's ``stacklevel``."""
    epochs: int
    seed: int = 0
    stratify: np.ndarray | None = None
    incremental: bool = False
    continued: bool = False
    depth: int = 0


class _FastnetMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the network, the training run."""

    def _snapshot(self):
        """A shallow copy of the estimator as it is between two fits (see :func:`_published`)."""
        copy = object.__new__(type(self))
        with _PUBLISH:
            vars(copy).update(vars(self))
        return copy

    def __getstate__(self):
        with _PUBLISH:  # a pickle taken during a fit holds the previous fit, whole
            return dict(super().__getstate__())  # (a copy: object's is the live __dict__)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # dense arrays only
        return tags

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam",
                 learning_rate_init=1e-3, batch_size="auto", max_iter=200, schedule="constant",
                 weight_decay=0.0, dropout=0.0, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, shuffle=True, random_state=None, backend="cpu",
                 dtype="float64", verbose=0, alpha=0.0001, warm_start=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.schedule = schedule
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.shuffle = shuffle
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype
        self.verbose = verbose
        self.alpha = alpha
        self.warm_start = warm_start

    # -- what the subclasses say -------------------------------------------
    def _output(self):
        """``(output activation, loss)`` of the network for the encoded targets."""
        raise NotImplementedError

    # -- the network and its training ---------------------------------------
    def _seed(self):
        rs = self.random_state
        if rs is None or isinstance(rs, np.random.RandomState):
            rs = np.random.mtrand._rand if rs is None else rs
            return int(rs.randint(np.iinfo(np.int32).max))
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and rs >= 0:
            return int(rs)
        raise ValueError(f"random_state must be None, a non-negative int or a RandomState, got {rs!r}")

    def _new_network(self, n_features, n_outputs, seed):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        output, loss = self._output()
        return MLP([n_features, *sizes, n_outputs], activation=_SKLEARN_NAMES.get(self.activation, self.activation),
                   output=output, loss=loss, dropout=self.dropout, backend=self.backend, dtype=self.dtype,
                   seed=seed)

    def _warm(self):
        """``fit`` continues the fitted network (``warm_start``), else trains a new one."""
        return check_bool("warm_start", self.warm_start) and hasattr(self, "model_")

    def _train(self, X, target, sample_weight, call):
        """``fit`` (``call.incremental`` False): up to ``call.epochs`` with scikit-learn's stopping
        rule and, with ``early_stopping``, a random (stratified for classes) validation split, a
        new optimizer; ``partial_fit``: one epoch on all the rows, the optimizer continued, as
        scikit-learn's partial_fit does.  Either continues ``loss_curve_``, the stopping rule's
        count and best when the network is continued (``call.continued``: ``warm_start``,
        ``partial_fit``)."""
        epochs, seed, incremental, continued = call.epochs, call.seed, call.incremental, call.continued
        alpha = check_real("alpha", self.alpha, low=0)
        n_iter_no_change = check_int("n_iter_no_change", self.n_iter_no_change)
        tol = check_real("tol", self.tol, low=0)
        validation = score = None
        early_stopping = not incremental and check_bool("early_stopping", self.early_stopping)
        if early_stopping:
            # scikit-learn's split: train_test_split(test_size=validation_fraction), stratified
            # for a single-output classifier only (two classes), from the random_state
            parts = [X, target] + ([sample_weight] if sample_weight is not None else [])
            fraction = check_real("validation_fraction", self.validation_fraction, low=0, high=1,
                                  low_open=True, high_open=True)
            n_val = int(np.ceil(len(X) * fraction))
            if n_val >= len(X):
                raise ValueError(f"validation_fraction={self.validation_fraction!r} leaves no training rows "
                                 f"of {len(X)}")
            if n_val < 2:
                raise ValueError(f"The validation set is too small ({n_val} of {len(X)} rows with "
                                 f"validation_fraction={self.validation_fraction!r}). Increase 'validation_fraction' "
                                 "or the size of your dataset.")
            try:
                split = train_test_split(*parts, test_size=fraction, random_state=seed, stratify=call.stratify)
            except ValueError:  # a class too rare to stratify on: a plain random split
                split = train_test_split(*parts, test_size=fraction, random_state=seed)
            X, Xv, target, tv = split[:4]
            sample_weight, wv = split[4:6] if sample_weight is not None else (None, None)
            validation = (Xv, tv)
            score = functools.partial(self._validation_score, Xv, tv, wv)
        n = len(X)
        batch = min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)
        # scikit-learn's rule on the training loss (with early_stopping, on the validation
        # score: accuracy, R^2), its weights of the best score put back at the end; its count
        # and best carried over when the network is continued
        start = None
        if continued and getattr(self, "_stop_state", None) is not None:
            count, best_loss, best_score = self._stop_state
            best = best_score if early_stopping else best_loss
            start = (count, best) if best is not None else None
        rule = _NoImprovementStop(n_iter_no_change, tol, score, start)
        curve = _Curve()
        callbacks = [curve, rule]
        if incremental:  # the optimizer (and its state) of the earlier calls, as fit's default
            opt = _select_optimizer(self.model_, self.optimizer, self.learning_rate_init, self.weight_decay)
        else:  # a new one, also for warm_start (scikit-learn's)
            opt = copy.deepcopy(self.optimizer) if isinstance(self.optimizer, Optimizer) else self.optimizer
            opt = get_optimizer(opt, self.learning_rate_init, self.weight_decay)
        penalty = None
        if alpha > 0:
            c = 1.0 if sample_weight is None else len(sample_weight) / float(np.sum(sample_weight))
            penalty = _L2Penalty(alpha, n, batch, c if np.isfinite(c) else 1.0)
            callbacks = [penalty] + callbacks[1:]  # the penalised loss, before the rule reads it
            if opt is not self.model_.optimizer_:
                self.model_.attach_optimizer(opt)
            penalty.bind(self.model_)
            opt.step = functools.partial(_penalised_step, opt, penalty)
        try:
            self.model_.fit(X, target, epochs=epochs, batch_size=batch, optimizer=opt,
                            lr=self.learning_rate_init, lr_schedule=self.schedule, weight_decay=self.weight_decay,
                            validation_data=validation,
                            callbacks=callbacks, shuffle=self.shuffle, verbose=self.verbose,
                            sample_weight=sample_weight, diagnose=False)
        finally:
            vars(opt).pop("step", None)
        this = (penalty or curve).curve
        self.n_iter_ = self.model_.n_iter_ if incremental else len(this)
        self.loss_curve_ = (list(self.loss_curve_) if continued else []) + list(this)
        self.loss_ = self.loss_curve_[-1]
        self.t_ = (self.t_ if continued else 0) + n * len(this)
        if early_stopping:
            self.best_loss_ = None
            self.validation_scores_ = (list(self.validation_scores_ or []) if continued else []) + rule.scores
            self.best_validation_score_ = rule.best
        else:
            self.best_loss_ = rule.best
            self.validation_scores_ = self.best_validation_score_ = None
        self._stop_state = (rule.count, self.best_loss_, self.best_validation_score_)
        if not incremental and not rule.stopped and len(this) == epochs:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({epochs}) reached and the optimization "
                          "hasn't converged yet.", ConvergenceWarning, stacklevel=4 + call.depth)
        return self

    def _layers(self):
        """``[(W, b)]`` per dense layer: host copies, in scikit-learn's shapes."""
        check_is_fitted(self)
        params = self.model_.get_weights()
        return [(params[k], params[k[:-1] + "b"]) for k in params if k.endswith(".W")]

    @property
    def coefs_(self):
        """The weight matrices, scikit-learn's list of ``(n_in, n_out)`` arrays (copies)."""
        return [w for w, _ in self._layers()]

    @property
    def intercepts_(self):
        """The biases, scikit-learn's list of ``(n_out,)`` arrays (copies)."""
        return [b for _, b in self._layers()]

    @property
    def n_layers_(self):
        """Layers counted as scikit-learn does: input, hidden and output."""
        return len(self.coefs_) + 1

    def _validation_score(self, Xv, tv, wv, model):
        """The score ``early_stopping`` follows, as scikit-learn's on the held-out rows."""
        raise NotImplementedError

    def _validate(self, X, *args, **kwargs):
        """scikit-learn's ``validate_data``, after fastnet's refusal of categorical, object and
        other non-numeric DataFrame columns, named (scikit-learn would read a numeric
        categorical as its numbers)."""
        check_columns(X)
        return validate_data(self, X, *args, **kwargs)

    def _check_X(self, X, reset):
        return self._validate(X, reset=reset, dtype=(np.float64, np.float32))

    def _outputs(self, X):
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return self.model_._outputs(X).astype(np.float64)


class MLPClassifier(ClassifierMixin, _FastnetMLP):
    """A multilayer perceptron classifier: softmax outputs and cross-entropy (sigmoid
    outputs and binary cross-entropy for multi-label indicator targets).

    Labels may be anything ``np.unique`` sorts (strings, non-contiguous integers,
    booleans): ``classes_`` holds them and ``predict`` returns them.  ``class_weight``
    (``"balanced"`` or ``{label: weight}``) multiplies ``sample_weight``.

    Attributes (after fit): ``classes_``, ``n_features_in_``, ``feature_names_in_``
    (from a DataFrame), ``model_`` (the fastnet network), ``loss_curve_``, ``loss_``,
    ``n_iter_``, ``n_outputs_``, ``out_activation_``, ``n_layers_``, ``t_``, ``coefs_``,
    ``intercepts_``, ``best_loss_``, ``validation_scores_``, ``best_validation_score_``
    (scikit-learn's names, shapes and meanings; ``n_iter_`` after ``partial_fit`` counts
    every call's epoch, where scikit-learn's says 1).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam",
                 learning_rate_init=1e-3, batch_size="auto", max_iter=200, schedule="constant",
                 weight_decay=0.0, dropout=0.0, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, shuffle=True, random_state=None, backend="cpu",
                 dtype="float64", verbose=0, alpha=0.0001, warm_start=False, class_weight=None):
        super().__init__(hidden_layer_sizes, activation, optimizer=optimizer,
                         learning_rate_init=learning_rate_init, batch_size=batch_size, max_iter=max_iter,
                         schedule=schedule, weight_decay=weight_decay, dropout=dropout,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, tol=tol, shuffle=shuffle,
                         random_state=random_state, backend=backend, dtype=dtype, verbose=verbose,
                         alpha=alpha, warm_start=warm_start)
        self.class_weight = class_weight

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _output(self):
        loss = BinaryCrossEntropy if self._multilabel else CrossEntropy
        return loss.fused_activation, loss.name

    def _targets(self, y, classes=None, reset=True):
        """Encoded targets: class ids, or the 0/1 indicator matrix (multi-label)."""
        if y is not None and getattr(y, "ndim", np.ndim(y)) == 2 and np.shape(y)[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        multilabel = type_of_target(y) == "multilabel-indicator"
        if reset:
            self._multilabel = multilabel
            if multilabel:
                self.classes_ = np.arange(np.shape(y)[1])
            else:
                self._encoder = LabelEncoder().fit(y if classes is None else classes)
                self.classes_ = self._encoder.classes_
                if len(self.classes_) < 2:
                    raise ValueError(f"the training data holds one class ({self.classes_[0]!r}): a classifier "
                                     "needs at least 2 classes")
        if self._multilabel:
            return np.asarray(y, dtype=np.float64)
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(f"y holds labels not in classes_ {list(self.classes_)}: {list(unseen)}")
        return self._encoder.transform(y).astype(np.int32)

    def _weights(self, y, sample_weight, X):
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if self.class_weight is not None and not self._multilabel:
            balanced = compute_sample_weight(self.class_weight, y)
            sample_weight = balanced if sample_weight is None else sample_weight * balanced
        return sample_weight

    @_published
    def fit(self, X, y, sample_weight=None):
        """Train a new network on ``(X, y)`` for up to ``max_iter`` epochs (predict and pickles
        from other threads meanwhile see the previous fit)."""
        max_iter = check_int("max_iter", self.max_iter)
        warm = self._warm()
        X, y = self._validate(X, y, dtype=(np.float64, np.float32), multi_output=True, reset=not warm)
        if warm:
            self._check_same_classes(y)
            target = self._targets(y, reset=False)
            self.model_ = copy.deepcopy(self.model_)  # (this fit's; the published one stays as it is)
        else:
            target = self._targets(y)
        weights = self._weights(y, sample_weight, X)
        seed = self._seed()
        if not warm:
            self._set_outputs()
            self.model_ = self._new_network(X.shape[1], len(self.classes_), seed)
        binary = not self._multilabel and len(self.classes_) == 2  # scikit-learn stratifies only then
        return self._train(X, target, weights, _Call(max_iter, seed, target if binary else None, continued=warm))

    def _set_outputs(self):
        """scikit-learn's ``n_outputs_`` and ``out_activation_``: one logistic unit for two
        classes (fastnet's network has two softmax units, ``coefs_`` shows their difference)."""
        binary = not self._multilabel and len(self.classes_) == 2
        self.n_outputs_ = 1 if binary else len(self.classes_)
        self.out_activation_ = "softmax" if self.n_outputs_ > 1 and not self._multilabel else "logistic"

    def _check_same_classes(self, y):
        """``warm_start``: the classes of ``y`` are those of the fitted network (scikit-learn's check)."""
        if self._multilabel:
            if type_of_target(y) != "multilabel-indicator" or np.shape(y)[1] != len(self.classes_):
                raise ValueError(f"warm_start: y must be a multi-label indicator of {len(self.classes_)} labels, "
                                 "as in the previous call to fit")
            return
        got = np.unique(column_or_1d(y) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else y)
        if not np.array_equal(got, self.classes_):
            raise ValueError(f"warm_start can only be used where `y` has the same classes as in the previous "
                             f"call to fit. Previously got {self.classes_}, `y` has {got}")

    def _layers(self):
        layers = super()._layers()
        if self.n_outputs_ == 1 and not self._multilabel:  # two softmax units -> one logistic unit
            w, b = layers[-1]
            layers[-1] = (w[:, 1:] - w[:, :1], b[1:] - b[:1])
        return layers

    @_all_or_nothing
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on ``(X, y)``; the first call needs ``classes`` (every label there will be)."""
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        X, y = self._validate(X, y, dtype=(np.float64, np.float32), multi_output=True, reset=first)
        if first:
            target = self._targets(y, classes=classes)
            self._set_outputs()
            self.model_ = self._new_network(X.shape[1], len(self.classes_), self._seed())
        else:
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(f"classes={list(classes)} differs from the first call's {list(self.classes_)}")
            target = self._targets(y, reset=False)
        return self._train(X, target, self._weights(y, sample_weight, X),
                           _Call(1, incremental=True, continued=not first))

    def _validation_score(self, Xv, tv, wv, model):
        """Accuracy (of whole rows, multi-label), weighted by the held-out rows' sample weights."""
        p = model._outputs(Xv)
        predicted = (p >= 0.5).astype(np.int64) if self._multilabel else np.argmax(p, axis=1)
        return accuracy_score(np.asarray(tv, dtype=np.int64), predicted, sample_weight=wv)

    def predict_proba(self, X):
        """Class probabilities ``(n, n_classes)`` (per label for multi-label)."""
        return self._snapshot()._outputs(X)

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Labels from ``classes_`` (the 0/1 indicator matrix for multi-label)."""
        fitted = self._snapshot()  # one fit's network and labels, however a re-fit elsewhere goes
        p = fitted._outputs(X)
        if fitted._multilabel:
            return (p >= 0.5).astype(np.int64)
        return fitted.classes_[np.argmax(p, axis=1)]


class MLPRegressor(RegressorMixin, _FastnetMLP):
    """A multilayer perceptron regressor: linear outputs and the mean squared error;
    ``y`` of shape ``(n,)`` or ``(n, n_outputs)`` (``predict`` returns the same shape).

    Attributes (after fit): ``n_features_in_``, ``feature_names_in_`` (from a
    DataFrame), ``model_``, ``loss_curve_``, ``loss_``, ``n_iter_``, ``n_outputs_``,
    ``out_activation_``, ``n_layers_``, ``t_``, ``coefs_``, ``intercepts_``, ``best_loss_``,
    ``validation_scores_``, ``best_validation_score_`` (scikit-learn's names and shapes).
    The loss is fastnet's mean squared error (twice scikit-learn's ``0.5 * mean``): its
    ``loss_curve_`` and ``tol`` read on that scale.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _output(self):
        return "linear", MeanSquaredError.name

    def _validation_score(self, Xv, tv, wv, model):
        """R^2 (averaged over the outputs), NaN for non-finite predictions, as scikit-learn's
        (and for a single held-out row, where R^2 is undefined)."""
        p = model._outputs(Xv)
        return r2_score(tv, p, sample_weight=wv) if np.isfinite(p).all() and len(p) > 1 else np.nan

    def _fit(self, X, y, sample_weight, reset, epochs, incremental):
        X, y = self._validate(X, y, dtype=(np.float64, np.float32), multi_output=True, y_numeric=True,
                             reset=reset)
        if not reset and not incremental:  # warm_start: this fit's copy of the network
            self.model_ = copy.deepcopy(self.model_)
        if reset:
            self._y_1d = y.ndim == 1
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        seed = self._seed() if reset or not incremental else 0
        if reset:
            self.n_outputs_ = y.shape[1]
            self.out_activation_ = "identity"
            self.model_ = self._new_network(X.shape[1], self.n_outputs_, seed)
        elif y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y.shape[1]} outputs, the model {self.n_outputs_}")
        return self._train(X, y, sample_weight, _Call(epochs, seed, incremental=incremental, continued=not reset,
                                                      depth=1))

    @_published
    def fit(self, X, y, sample_weight=None):
        """Train a new network on ``(X, y)`` for up to ``max_iter`` epochs (predict and pickles
        from other threads meanwhile see the previous fit)."""
        return self._fit(X, y, sample_weight, reset=not self._warm(), epochs=check_int("max_iter", self.max_iter),
                         incremental=False)

    @_all_or_nothing
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on ``(X, y)``, continuing the network of earlier calls."""
        return self._fit(X, y, sample_weight, reset=not hasattr(self, "model_"), epochs=1, incremental=True)

    def predict(self, X):
        fitted = self._snapshot()
        p = fitted._outputs(X)
        return p[:, 0] if fitted._y_1d else p
