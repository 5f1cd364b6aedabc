"""Command line: ``fastnet train mnist``, ``fastnet evaluate``, ``fastnet info``.

Also reachable as ``python -m fastnet``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .backend import BACKEND_NAMES, KERNEL_CHOICES
from .layers import hidden_activations
from .optimizers import OPTIMIZERS
from .recipes import BENCH_CONFIGS, RECIPES
from .schedules import SCHEDULES

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def load_mnist_arrays(subset=None, cache_dir=None, path=None):
    """MNIST as float32 rows in [0, 1] and int labels: ``(Xtr, ytr), (Xte, yte)``."""
    from .datasets import load_mnist

    (xtr, ytr), (xte, yte) = load_mnist(cache_dir=cache_dir, path=path)
    if subset:
        xtr, ytr = xtr[:subset], ytr[:subset]
    scale = lambda x: x.reshape(len(x), -1).astype("float32") / 255.0  # noqa: E731
    return (scale(xtr), ytr), (scale(xte), yte)


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(prog="fastnet", description="Small, fast multilayer perceptrons.")
    parser.add_argument("--version", action="version", version=f"fastnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model on a data set (mnist)",
                           description="Train a multilayer perceptron on MNIST. Options left out come from "
                                       "--recipe (shown as 'default recipe: ...').")
    d = RECIPES["default"]
    from_recipe = lambda value: f"(default recipe: {value})"  # noqa: E731
    train.add_argument("dataset", choices=["mnist"])
    train.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                       help="preset hyper-parameters; other flags override them (default: %(default)s)")
    train.add_argument("--backend", choices=BACKEND_NAMES, default="cpu", help="(default: %(default)s)")
    train.add_argument("--kernels", choices=KERNEL_CHOICES, default="fused", help="(default: %(default)s)")
    train.add_argument("--hidden", type=_positive_int, nargs="+", metavar="UNITS",
                       help="hidden layer sizes " + from_recipe(" ".join(map(str, d["hidden"]))))
    train.add_argument("--activation", choices=hidden_activations(), help=from_recipe(d["activation"]))
    train.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help=from_recipe(d["optimizer"]))
    train.add_argument("--lr", type=_positive_float, help="learning rate " + from_recipe(d["lr"]))
    train.add_argument("--batch-size", type=_positive_int, help=from_recipe(d["batch_size"]))
    train.add_argument("--epochs", type=_positive_int, help=from_recipe(d["epochs"]))
    train.add_argument("--schedule", choices=tuple(SCHEDULES), help=from_recipe(d["schedule"]))
    train.add_argument("--dropout", type=float, help="dropout rate in [0, 1) " + from_recipe(d["dropout"]))
    train.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    train.add_argument("--subset", type=_positive_int, metavar="N",
                       help="train on the first N training images only (default: all 60000)")
    train.add_argument("--test-subset", type=_positive_int, metavar="N",
                       help="validate and test on the first N test images only (default: all 10000)")
    train.add_argument("--save", metavar="PATH", help="write the trained model (.npz); the folder must exist")
    train.add_argument("--data-dir", help="MNIST cache folder (default: $FASTNET_DATA or ~/.cache/fastnet)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--plots", metavar="DIR", help="write learning curves, confusion matrix, weights... here")

    ev = sub.add_parser("evaluate", help="test accuracy of a saved model on MNIST")
    ev.add_argument("model")
    ev.add_argument("--backend", choices=BACKEND_NAMES, default="cpu")
    ev.add_argument("--data-dir")

    sub.add_parser("info", help="versions, usable backends and the Numba cache location")

    ex = sub.add_parser("export", help="write a saved model (.npz) as an ONNX graph (needs fastnet[onnx])")
    ex.add_argument("model", help="a model file written by --save or model.save()")
    ex.add_argument("output", help="the .onnx file to write")

    bench = sub.add_parser("bench", help="MNIST training throughput beside PyTorch, scikit-learn, NumPy")
    bench.add_argument("--configs", nargs="+", choices=sorted(BENCH_CONFIGS), help="default: all")
    bench.add_argument("--rounds", type=_positive_int, default=3, help="timed epochs per system (median)")
    bench.add_argument("--no-peers", action="store_true", help="fastnet systems only")
    bench.add_argument("--no-reference", action="store_true", help="skip fastnet with reference kernels")
    bench.add_argument("--tta", type=float, metavar="ACC",
                       help="instead: time to this test accuracy, fastnet default recipe vs PyTorch's")
    bench.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    bench.add_argument("--data-dir")
    return parser


def _check_destination(option, path):
    """Refuse, before any work, a file path that cannot be written: its folder missing,
    not a folder or not writable, or the path itself a folder."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ValueError(f"{option} {path!r} is a folder: give a file path such as {os.path.join(path, 'model.npz')!r}")
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise ValueError(f"{option} {path!r}: the folder {folder!r} {what}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path!r}: the folder {folder!r} is not writable")


def _recipe(args):
    recipe = dict(RECIPES[args.recipe])
    for key in ("hidden", "activation", "optimizer", "lr", "batch_size", "epochs", "schedule", "dropout"):
        value = getattr(args, key)
        if value is not None:
            recipe[key] = value
    return recipe


def cmd_train(args):
    import fastnet

    recipe = _recipe(args)
    # Everything the user typed is checked before the data loads and training starts.
    if not 0 <= recipe["dropout"] < 1:
        raise ValueError(f"--dropout {recipe['dropout']}: a dropout rate must be in [0, 1)")
    if args.save:
        _check_destination("--save", args.save)
    model = fastnet.MLP([784, *recipe["hidden"], 10], activation=recipe["activation"],
                        dropout=recipe["dropout"], backend=args.backend, kernels=args.kernels, seed=args.seed)
    t0 = time.perf_counter()
    (xtr, ytr), (xte, yte) = load_mnist_arrays(args.subset, cache_dir=args.data_dir)
    if args.subset and args.subset > len(xtr):
        print(f"note: --subset {args.subset} is more than the {len(xtr)} training images: all are used",
              file=sys.stderr)
    if args.test_subset:
        if args.test_subset > len(xte):
            print(f"note: --test-subset {args.test_subset} is more than the {len(xte)} test images: all are used",
                  file=sys.stderr)
        xte, yte = xte[:args.test_subset], yte[:args.test_subset]
    print(f"MNIST: {len(xtr)} training, {len(xte)} test images ({time.perf_counter() - t0:.1f}s to load)")
    print(f"model: 784-{'-'.join(map(str, recipe['hidden']))}-10 {recipe['activation']}, "
          f"{recipe['optimizer']} lr={recipe['lr']} ({recipe['schedule']}), batch {recipe['batch_size']}, "
          f"{recipe['epochs']} epochs, dropout {recipe['dropout']}, backend {model.backend_!r}")
    t1 = time.perf_counter()
    try:
        history = model.fit(xtr, ytr, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                            optimizer=recipe["optimizer"], lr=recipe["lr"], lr_schedule=recipe["schedule"],
                            validation_data=(xte, yte), verbose=0 if args.quiet else 1, diagnose=False)
    except fastnet.TrainingDivergedError as exc:
        print(f"training diverged: {exc}", file=sys.stderr)
        print(fastnet.diagnose(model.history_, model, xtr, error=exc), file=sys.stderr)
        return 1
    train_seconds = time.perf_counter() - t1
    result = model.evaluate(xte, yte)
    epoch_seconds = sum(history["seconds"])
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}")
    print(f"training: {train_seconds:.1f}s, {len(xtr) * len(history) / epoch_seconds:,.0f} samples/s "
          f"(the first epoch includes Numba compilation unless cached); total {time.perf_counter() - t0:.1f}s")
    print("note: the validation figures above are on the test set, which is not used for training")
    print(fastnet.diagnose(history, model, xtr, max_samples=2000))
    if args.plots:
        from .plots import write_training_plots

        for path in write_training_plots(model, history, xte, yte, args.plots, image_shape=(28, 28)):
            print(f"plot: {path}")
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0


def cmd_evaluate(args):
    import fastnet

    model = fastnet.load(args.model, backend=args.backend)
    _, (xte, yte) = load_mnist_arrays(cache_dir=args.data_dir)
    result = model.evaluate(xte, yte)
    print(f"{args.model}: test accuracy {result['accuracy']:.4f}, test loss {result['loss']:.4f}")
    return 0


def cmd_bench(args):
    import json

    from . import benchmark as B

    (X, y), (Xt, yt) = load_mnist_arrays(cache_dir=args.data_dir)
    print(f"machine: {B.machine_description()}")
    if args.tta:
        return _bench_tta(args, B, X, y, Xt, yt)
    systems = B.available_systems(include_reference=not args.no_reference, include_peers=not args.no_peers)
    print("systems: " + ", ".join(s.name for s in systems))

    def progress(config, system, r, rounds):
        print(f"  {config}: {system} round {r}/{rounds}", file=sys.stderr, flush=True)

    rows = B.run(X, y, configs=args.configs, systems=systems, rounds=args.rounds, progress=progress)
    print(B.format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": B.machine_description(), "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _bench_tta(args, B, X, y, Xt, yt):
    import json

    results = {
        "fastnet (default recipe)": B.fastnet_time_to_accuracy(X, y, Xt, yt, RECIPES["default"], args.tta),
        "pytorch (784-512-512-10, Adam 1e-3, batch 128)": B.time_to_accuracy(
            B.TorchSystem(), X, y, Xt, yt, BENCH_CONFIGS["relu512x2-adam"], target=args.tta),
    }
    for name, (seconds, epochs, accs) in results.items():
        shown = f"{seconds:.1f}s" if seconds is not None else "not reached"
        print(f"{name}: {shown} of training to {args.tta:.3f} test accuracy ({epochs} epochs; "
              f"accuracy per epoch {', '.join(f'{a:.4f}' for a in accs)})")
    (f, *_), (t, *_) = results.values()
    if f and t:
        print(f"fastnet / PyTorch time to {args.tta}: {f / t:.2f}x (evaluation time excluded for both)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": B.machine_description(), "tta": results}, fh, indent=2)
    return 0


def cmd_export(args):
    import fastnet

    model = fastnet.load(args.model, backend="cpu")
    proto = model.to_onnx(args.output)
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"wrote {args.output}: opset {proto.opset_import[0].version}, {len(proto.graph.node)} nodes ({', '.join(ops)}), "
          f"input X (batch, {model.n_features_in_}), output Y (batch, {model.n_outputs_})")
    return 0


def cmd_info(args):
    from . import info

    print(info.report())
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info, "bench": cmd_bench,
               "export": cmd_export}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        if os.environ.get("FASTNET_DEBUG"):
            raise
        print(f"fastnet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
