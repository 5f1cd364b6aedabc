"""Command line: ``fastnet train mnist``, ``fastnet evaluate``, ``fastnet info``.

Also reachable as ``python -m fastnet``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time

from fastnet.backends.devices import KERNEL_CHOICES, backend_names
from fastnet.train.interrupt import Interrupted, TrainingInterrupted, sigterm_as_interrupt
from fastnet.core.layers import hidden_activations
from fastnet.core.optimizers import OPTIMIZERS
from fastnet.backends.precision import PRECISIONS
from fastnet.core.recipes import BENCH_CONFIGS, RECIPES
from fastnet.core.schedules import SCHEDULES

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
    from fastnet.datasets import load_mnist

    (xtr, ytr), (xte, yte) = load_mnist(cache_dir=cache_dir, path=path)
    if subset:
        xtr, ytr = xtr[:subset], ytr[:subset]
    scale = lambda x: x.reshape(len(x), -1).astype("float32") / 255.0  # noqa: E731
    return (scale(xtr), ytr), (scale(xte), yte)


def build_parser():
    from fastnet import __version__

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
    train.add_argument("--backend", choices=backend_names(), default="cpu", help="(default: %(default)s)")
    train.add_argument("--kernels", choices=KERNEL_CHOICES, default="fused", help="(default: %(default)s)")
    train.add_argument("--precision", choices=PRECISIONS, default="float32",
                       help="the training GEMMs' inputs: float32; bf16 (CPUs with avx512_bf16 or amx_bf16 and "
                            "fastnet-mlp[bf16], or GPUs of compute capability 8.0+); tf32 (GPUs 8.0+); fp16 (GPUs 7.0+, "
                            "with loss scaling); float32 accumulation in all; fastnet info says what this machine "
                            "has (default: %(default)s)")
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
                       help="test on the first N test images only (default: all 10000)")
    train.add_argument("--val-size", type=_positive_int, metavar="N",
                       help="validation images held out at random (--seed) from the training images, for "
                            "choosing the epoch whose weights are kept (default: 5000 of 60000, a twelfth)")
    train.add_argument("--no-augment", action="store_true",
                       help="train without the recipe's augmentation (shifts, rotations, scaling)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the ranks of an MPI job (mpiexec -n N fastnet train mnist "
                            "--distributed; needs fastnet-mlp[mpi]): --batch-size is per rank; rank 0 prints and saves")
    train.add_argument("--save", metavar="PATH",
                       help="write the trained model to PATH, which must end in .npz; the folder must exist "
                            "(also on Ctrl-C or SIGTERM: the best complete epoch so far)")
    train.add_argument("--checkpoint", metavar="PATH",
                       help="write the full training state to PATH after every epoch (the one before kept as "
                            "PATH.prev; the best epoch's model as PATH's stem + .best.npz), for --resume")
    train.add_argument("--resume", metavar="PATH",
                       help="continue the run whose --checkpoint is PATH (same options) up to --epochs in all")
    train.add_argument("--data-dir", help="MNIST cache folder (default: $FASTNET_DATA or ~/.cache/fastnet)")
    train.add_argument("--quiet", action="store_true",
                       help="no progress bar (the one line per epoch is still written, on stderr)")
    train.add_argument("--plots", metavar="DIR", help="write learning curves, confusion matrix, weights... here")

    ev = sub.add_parser("evaluate", help="test accuracy of a saved model on MNIST",
                        description="Test accuracy and loss of a saved model on the 10,000 MNIST test images.")
    ev.add_argument("model", help="a model file (.npz) written by fastnet train --save or model.save()")
    ev.add_argument("--backend", choices=backend_names(), default="cpu",
                    help="where to run the model (default: %(default)s)")
    ev.add_argument("--data-dir", help="MNIST cache folder (default: $FASTNET_DATA or ~/.cache/fastnet)")

    sub.add_parser("info", help="versions, usable backends and the Numba cache location")

    ex = sub.add_parser("export", help="write a saved model (.npz) as an ONNX graph (needs fastnet-mlp[onnx])",
                        description="Write a saved model (.npz) as an ONNX graph (needs fastnet-mlp[onnx]).")
    ex.add_argument("model", help="a model file written by --save or model.save()")
    ex.add_argument("output", help="the .onnx file to write")

    bench = sub.add_parser("bench", help="MNIST training throughput beside PyTorch, scikit-learn, NumPy")
    from fastnet.cli.bench.interleaved import CONFIGS as THREE_CONFIGS

    bench.add_argument("--configs", nargs="+", choices=sorted(BENCH_CONFIGS),
                       help=f"default: all; --load, --processes, --profile: {', '.join(THREE_CONFIGS)}")
    bench.add_argument("--rounds", type=_positive_int,
                       help="timed epochs per system (median); default 3 (--profile: 3 plain and 3 instrumented), "
                            "--load 7, --sweep 5, --inference 10, --processes 5")
    bench.add_argument("--no-peers", action="store_true", help="fastnet systems only")
    bench.add_argument("--no-reference", action="store_true", help="skip fastnet with reference kernels")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--tta", type=float, metavar="ACC",
                      help="instead: time to this test accuracy, same recipe and best recipe vs PyTorch")
    mode.add_argument("--load", choices=["none", "core", "both"],
                      help="instead: interleaved table, fastnet (default and fixed threads) vs pytorch, "
                           "pytorch-tuned, numpy-scratch, with no load, a spinning process on a core, or both")
    mode.add_argument("--sweep", action="store_true",
                      help="instead: hidden width x batch size sweep, fastnet vs pytorch-tuned")
    mode.add_argument("--processes", action="store_true",
                      help="instead: each system in its own process, interleaved rounds, vs pytorch-tuned, "
                           "torch.compile, JAX and the tutorials' NumPy (those installed); with --busy-core, "
                           "one core taken")
    mode.add_argument("--inference", action="store_true",
                      help="instead: predict_proba throughput and single-row latency vs ONNX Runtime, PyTorch")
    mode.add_argument("--profile", action="store_true",
                      help="instead: where a fastnet epoch's time goes (GEMMs and their GFLOP/s, kernels, optimizer, "
                           "gather, the rest) and the epoch against its GEMM floor (its GEMM FLOPs at the chosen "
                           "provider's measured speed)")
    bench.add_argument("--busy-core", action="store_true",
                       help="--processes: one core taken by a busy loop (a spinning Python process, as --load core) "
                            "from after the warm-ups to the last timed round")
    bench.add_argument("--sets", type=_positive_int, metavar="N",
                       help="--processes, --inference: the rounds shared by N sets of worker processes, each set "
                            "started afresh, in turn in the systems' order and the reverse (default 2; a process keeps its own few "
                            "percent of luck through all its rounds); --tta: N runs, each with fresh workers on its "
                            "own seed (initial weights, data order), the median ratio (default 3)")
    bench.add_argument("--bf16", action="store_true",
                       help="--processes: bfloat16 training instead, fastnet precision='bf16' vs PyTorch's bf16 "
                            "autocast (tuned), with fastnet in float32 for the accuracy; --profile: the "
                            "precision='bf16' epoch against its bfloat16 GEMMs' floor")
    bench.add_argument("--fixed-threads", type=_positive_int, nargs="+", metavar="K",
                       help="--load: BLAS thread counts of the fastnet-Kthreads systems (default: 1 and all cores)")
    bench.add_argument("--rows", type=_positive_int, metavar="N",
                       help="train on the first N training images (--sweep default: 10000; others: all)")
    bench.add_argument("--png", metavar="PATH", help="--sweep: write the heatmap here")
    bench.add_argument("--calls", type=_positive_int, default=2000, help="--inference: single-row calls per system")
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


def _check_plots_destination(folder):
    """--plots: matplotlib importable and ``folder`` a folder that is or can be made writable."""
    from fastnet.plots.figure import INSTALL_HINT

    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"--plots {folder!r}: {INSTALL_HINT} ({exc})") from None
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):  # the nearest existing folder would hold the new ones
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"--plots {folder!r}: {probe!r} is not a folder")
    if not os.access(probe, os.W_OK):
        raise ValueError(f"--plots {folder!r}: the folder {probe!r} is not writable")


def _best_path(checkpoint):
    """Where ``--checkpoint PATH`` keeps the model of the best epoch so far: PATH's stem + .best.npz."""
    return os.path.splitext(checkpoint)[0] + ".best.npz"


def _file_epoch(path):
    """The epoch (``n_iter``) a model file was saved at, or None when it cannot be read."""
    from fastnet.core.npzfile import Archive, ModelFileError, NotAnArchive

    try:
        with Archive(path, "model file", ModelFileError) as archive:
            meta = archive.read_meta()
    except (ModelFileError, NotAnArchive, OSError):
        return None
    return meta.get("n_iter") if isinstance(meta, dict) else None


def _selection(epochs, checkpoint, resume):
    """The model selection of ``fastnet train``: the weights of the epoch of best validation
    accuracy are kept.  With ``--checkpoint`` the best epoch's model is written beside it (after
    the checkpoint of the same epoch), so that ``--resume`` continues the selection: primed with
    the resumed history's best epoch and those weights (the checkpoint's own when it is the last)."""
    import fastnet

    class Selection(fastnet.EarlyStopping):
        def on_train_begin(self, model):
            super().on_train_begin(model)
            values = model.history_.history.get("val_accuracy") if model.n_iter_ else None
            if not values:
                return
            i = max(range(len(values)), key=lambda j: (values[j], -j))  # the first best, as EarlyStopping's
            epoch, last = model.history_.epochs[i], model.history_.epochs[-1]
            if epoch == last:
                weights = model.get_weights()
            elif resume and _file_epoch(_best_path(resume)) == epoch:
                weights = fastnet.load(_best_path(resume), backend="cpu").get_weights()
            else:
                print(f"note: the model of the best epoch so far ({epoch}) is not in {_best_path(resume)!r}: the "
                      f"selection continues from epoch {last}", file=sys.stderr)
                return
            self.best, self.best_epoch, self.best_weights, self.wait = values[i], epoch, weights, last - epoch

        def on_epoch_end(self, model, epoch, logs):
            super().on_epoch_end(model, epoch, logs)
            if checkpoint and self.best_epoch == epoch:
                model.save(_best_path(checkpoint))

    return Selection(patience=epochs, monitor="val_accuracy", restore_best=True)


def _split_validation(xtr, ytr, size, seed):
    """``(Xtrain, ytrain), (Xval, yval)``: ``size`` rows held out at random (``seed``)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(xtr))
    val, keep = np.sort(order[:size]), np.sort(order[size:])
    return (xtr[keep], ytr[keep]), (xtr[val], ytr[val])


def _recipe(args):
    recipe = dict(RECIPES[args.recipe])
    for key in ("hidden", "activation", "optimizer", "lr", "batch_size", "epochs", "schedule", "dropout"):
        value = getattr(args, key)
        if value is not None:
            recipe[key] = value
    return recipe


def cmd_train(args):
    if not args.distributed:
        return _train(args, None)
    from fastnet.train import distributed

    comm = distributed.init()  # before the model: picks this rank's GPU
    if comm.is_root:
        return _train(args, comm)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # rank 0 reports for all
        return _train(args, comm)


def _train(args, comm):
    import fastnet

    recipe = _recipe(args)
    # Everything the user typed is checked before the data loads and training starts.
    if not 0 <= recipe["dropout"] < 1:
        raise ValueError(f"--dropout {recipe['dropout']}: a dropout rate must be in [0, 1)")
    if args.save:
        from fastnet.core.model import check_model_path

        _check_destination("--save", args.save)
        check_model_path(args.save, "--save")
    if args.checkpoint:
        _check_destination("--checkpoint", args.checkpoint)
    if args.resume and not os.path.isfile(args.resume):
        raise ValueError(f"--resume {args.resume!r}: no such checkpoint file")
    if args.plots:
        _check_plots_destination(args.plots)
    model = fastnet.MLP([784, *recipe["hidden"], 10], activation=recipe["activation"],
                        dropout=recipe["dropout"], backend=args.backend, kernels=args.kernels, seed=args.seed,
                        precision=args.precision)
    t0 = time.perf_counter()
    if comm is not None and not comm.is_root:
        comm.broadcast_object(None, "rank 0's loading of MNIST")  # rank 0 fills the cache first
    (xtr, ytr), (xte, yte) = load_mnist_arrays(args.subset, cache_dir=args.data_dir)
    if comm is not None and comm.is_root:
        comm.broadcast_object(None, "rank 0's loading of MNIST")
    if args.subset and args.subset > len(xtr):
        print(f"note: --subset {args.subset} is more than the {len(xtr)} training images: all are used",
              file=sys.stderr)
    if args.test_subset:
        if args.test_subset > len(xte):
            print(f"note: --test-subset {args.test_subset} is more than the {len(xte)} test images: all are used",
                  file=sys.stderr)
        xte, yte = xte[:args.test_subset], yte[:args.test_subset]
    print(f"MNIST: {len(xtr)} training, {len(xte)} test images ({time.perf_counter() - t0:.1f}s to load)")
    n_all = len(xtr)
    n_val = args.val_size if args.val_size else max(1, min(5000, n_all // 12))
    if not 1 <= n_val < n_all:
        raise ValueError(f"--val-size {n_val}: the validation split must leave training images "
                         f"(there are {n_all})")
    (xtr, ytr), (xva, yva) = _split_validation(xtr, ytr, n_val, args.seed)
    print(f"validation: {n_val:,} of the {n_all:,} training images, held out at random with seed {args.seed} "
          f"(training on the other {len(xtr):,}); the test images are evaluated once, after training")
    augment = None
    if recipe.get("augment") and not args.no_augment:
        augment = fastnet.Augment(**recipe["augment"], image_shape=(28, 28))
    batch = f"batch {recipe['batch_size']}" if comm is None else (
        f"batch {recipe['batch_size']} per rank x {comm.size} ranks ({comm.name}) = {recipe['batch_size'] * comm.size}")
    print(f"model: 784-{'-'.join(map(str, recipe['hidden']))}-10 {recipe['activation']}, "
          f"{recipe['optimizer']} lr={recipe['lr']} ({recipe['schedule']}), {batch}, "
          f"{recipe['epochs']} epochs, dropout {recipe['dropout']}, weight decay {recipe.get('weight_decay', 0.0)}, "
          f"augmentation {augment if augment is not None else 'none'}, backend {model.backend_!r}")
    # Model selection on the validation split: the weights of its best epoch are kept.
    select = _selection(recipe["epochs"], args.checkpoint, args.resume)
    callbacks = [fastnet.ModelCheckpoint(args.checkpoint)] if args.checkpoint else []  # (before the selection's)
    root = comm is None or comm.is_root
    t1 = time.perf_counter()
    try:
        history = model.fit(xtr, ytr, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                            optimizer=recipe["optimizer"], lr=recipe["lr"], lr_schedule=recipe["schedule"],
                            weight_decay=recipe.get("weight_decay") or None, augment=augment,
                            early_stopping=select, validation_data=(xva, yva), callbacks=callbacks,
                            resume=args.resume, verbose=2 if args.quiet else 1, diagnose=False,
                            distributed=comm is not None)
    except fastnet.TrainingDivergedError as exc:
        print(f"training diverged: {exc}", file=sys.stderr)
        print(fastnet.diagnose(model.history_, model, xtr, error=exc), file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        return _keep_interrupted(args, model, select, exc) if root else exc.exit_status
    train_seconds = time.perf_counter() - t1
    if root and args.save:  # saved first: a signal after training loses nothing
        model.save(args.save)
        print(f"saved to {args.save}" + (f" (the weights of epoch {select.best_epoch})" if select.best_epoch else ""))
    result = model.evaluate(xte, yte, return_dict=True)
    epoch_seconds = sum(history["seconds"])
    if select.best_epoch is not None:
        print(f"kept the weights of epoch {select.best_epoch} of {model.n_iter_}: best validation accuracy "
              f"{select.best:.4f}")
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  ({len(xte):,} test images, "
          f"evaluated once)")
    print(f"training: {train_seconds:.1f}s, {len(xtr) * len(history) / epoch_seconds:,.0f} samples/s "
          f"(the first epoch includes Numba compilation unless cached); total {time.perf_counter() - t0:.1f}s")
    print(fastnet.diagnose(history, model, xtr, max_samples=2000))
    if args.checkpoint and root:
        print(f"checkpoint: {args.checkpoint} (epoch {model.n_iter_})")
    if args.plots and root:  # after the model is saved
        from fastnet.plots import write_training_plots

        for path in write_training_plots(model, model.history_, xte, yte, args.plots, image_shape=(28, 28)):
            print(f"plot: {path}")
    return 0


def _keep_interrupted(args, model, select, exc):
    """Ctrl-C or SIGTERM stopped ``fit`` at a step boundary (the epoch cut short undone): save what
    there is, say what was kept and where, and return the conventional exit status."""
    print(f"{exc}", file=sys.stderr)
    kept = []
    if model.n_iter_ == 0:
        print("no epoch was completed: nothing saved", file=sys.stderr)
        return exc.exit_status
    if args.save:
        model.save(args.save)
        best = f"the weights of epoch {select.best_epoch}, the best" if select.best_epoch else "the weights"
        kept.append(f"{args.save} ({best} of the {model.n_iter_} epochs completed)")
    if args.checkpoint:
        kept.append(f"{args.checkpoint} (checkpoint of epoch {model.n_iter_}: continue with --resume "
                    f"{args.checkpoint} and the same options)")
    print("kept: " + "; ".join(kept) if kept else "nothing saved (no --save or --checkpoint given)",
          file=sys.stderr)
    return exc.exit_status


def cmd_evaluate(args):
    import math

    import fastnet

    model = fastnet.load(args.model, backend=args.backend)
    _, (xte, yte) = load_mnist_arrays(cache_dir=args.data_dir)
    result = model.evaluate(xte, yte, return_dict=True)
    print(f"{args.model}: test accuracy {result['accuracy']:.4f}, test loss {result['loss']:.4f}")
    if not math.isfinite(result["loss"]):  # overflowing outputs: no result to trust
        print(f"fastnet: error: the test loss of {args.model} is {result['loss']}: the model's outputs overflow "
              "(weights too large, or saved from a diverged training)", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args):
    import json

    from fastnet.cli.bench import commands as bench_commands
    from fastnet.cli.bench import systems as bench_systems

    for option in ("json", "png"):
        if getattr(args, option):
            _check_destination(f"--{option}", getattr(args, option))
    if args.bf16 and not (args.processes or args.profile):
        raise ValueError("--bf16 goes with --processes or --profile")
    if args.bf16:  # (before any worker starts: the bf16 one would fail after the others' warm-ups)
        from fastnet.backends.precision import bf16_problem

        why = bf16_problem()
        if why is not None:
            raise ValueError(f"--bf16: precision='bf16' is not available here: {why}")
    if args.sets and not (args.processes or args.inference or args.tta):
        raise ValueError("--sets goes with --processes, --inference or --tta")
    if args.busy_core and not args.processes:
        raise ValueError("--busy-core goes with --processes (the in-process mode's busy core is --load core)")
    if args.processes:  # (each worker loads MNIST itself)
        return bench_commands.processes(args)
    (X, y), (Xt, yt) = load_mnist_arrays(cache_dir=args.data_dir)
    rows = args.rows or (bench_commands.SWEEP_ROWS if args.sweep else None)
    X, y = X[:rows], y[:rows]
    print(f"machine: {bench_systems.machine_description()}")
    if args.tta:
        return bench_commands.tta(args, X, y, Xt, yt)
    if args.load:
        return bench_commands.interleaved(args, X, y)
    if args.sweep:
        return bench_commands.sweep(args, X, y)
    if args.inference:
        return bench_commands.inference(args, X, y, Xt)
    if args.profile:
        return bench_commands.profile(args, X, y)
    systems = bench_systems.available_systems(include_reference=not args.no_reference, include_peers=not args.no_peers)
    print("systems: " + ", ".join(s.name for s in systems))

    def progress(config, system, r, rounds):
        print(f"  {config}: {system} round {r}/{rounds}", file=sys.stderr, flush=True)

    rows = bench_systems.run(X, y, configs=args.configs, systems=systems, rounds=args.rounds or 3, progress=progress)
    print(bench_systems.format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": bench_systems.machine_description(), "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_export(args):
    import fastnet

    _check_destination("output", args.output)  # before the model is read or anything written
    model = fastnet.load(args.model, backend="cpu")
    proto = model.to_onnx(args.output)
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"wrote {args.output}: opset {proto.opset_import[0].version}, {len(proto.graph.node)} nodes ({', '.join(ops)}), "
          f"input X (batch, {model.n_features_in_}), output Y (batch, {model.n_outputs_})")
    return 0


def cmd_info(args):
    from fastnet.cli import info

    print(info.report())
    note = kernel_cache_note()
    if note:
        print(note)
    return 0


def kernel_cache_note():
    """A line for ``fastnet info`` when the kernel cache folder cannot be written (Numba then
    compiles every kernel again in each new process), else None.  Tried, not guessed from
    permission bits (root, read-only mounts): a temporary file in the folder, or, when the
    folder is missing, a temporary folder in the nearest one that exists (removed at once)."""
    import tempfile

    from fastnet.cli.info import numba_cache_dir

    folder = numba_cache_dir()
    probe = folder
    while not os.path.exists(probe):  # the nearest existing folder would hold the new ones
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        what = "is not a folder" if probe == folder else f"cannot be created ({probe!r} is a file)"
    else:
        try:
            if probe == folder:
                with tempfile.TemporaryFile(dir=folder):
                    pass
            else:
                os.rmdir(tempfile.mkdtemp(dir=probe))
            return None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            what = (f"is not writable ({reason})" if probe == folder
                    else f"cannot be created ({probe!r}: {reason})")
    return (f"  warning: the kernel cache {folder!r} {what}: compiled kernels are not kept, so every new "
            "process compiles them again (seconds); set FASTNET_KERNEL_CACHE to a writable folder")


@contextlib.contextmanager
def _orderly_output():
    """For the command's run: stdout written line by line, and SIGTERM raising like Ctrl-C
    (:class:`fastnet.train.interrupt.Interrupted`; ``fit`` stops at a step boundary on either).  Under
    cron or ``> log 2>&1`` the lines of stdout (else block-buffered) and stderr then land in the
    order written, each whole, and a killed run keeps what it printed."""
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):  # a replaced or closed stdout
        pass
    replace = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    if replace:
        signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        yield
    finally:
        if replace:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info, "bench": cmd_bench,
               "export": cmd_export}[args.command]
    try:
        with _orderly_output():
            return handler(args)
    except Interrupted as exc:
        print(f"fastnet: {exc}", file=sys.stderr)
        return exc.exit_status
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
