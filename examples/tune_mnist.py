"""A Ray Tune sweep on MNIST: 16 trials, learning rate x width x schedule, stopped early by ASHA.

    pip install '.[ray]'
    python examples/tune_mnist.py            # the whole sweep: 10 epochs on 54,000 images
    python examples/tune_mnist.py --small    # a quick check: 3 epochs on 5,000 images

Each trial trains a 784-W-W-10 ReLU net (Adam, batch 128) with ``fastnet.integrations.tune.trainable``
and reports the validation loss and accuracy (6,000 or 500 training images held out; the
test set is not looked at while choosing) to Tune after every epoch.  ASHA
(``reduction_factor=2``) compares the trials that reached epoch 1, 2, 4, 8 and stops
those in the worse half.  A local Ray runs 2 trials at a time (``--num-cpus``), one CPU
and one BLAS thread each.

Printed: the trials as a Markdown table, best first, the best config, and the test
accuracy of the best trial's last checkpoint.
"""
import argparse
import time

from ray import tune

from fastnet.cli import load_mnist_arrays
from fastnet.integrations.tune import run_sweep

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--small", action="store_true", help="3 epochs on the first 5,000 training images")
parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 10, --small 3)")
parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray: trials at a time (default 2)")
parser.add_argument("--storage", default=None, help="Tune's results and checkpoints (default ~/ray_results)")
parser.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Tune's progress output")
args = parser.parse_args()

space = {
    "lr": tune.grid_search([3e-4, 1e-3, 3e-3, 1e-2]),
    "width": tune.grid_search([128, 512]),
    "schedule": tune.grid_search(["constant", "onecycle"]),
    "depth": 2,
    "optimizer": "adam",
    "batch_size": 128,
    "epochs": args.epochs or (3 if args.small else 10),
    "subset": 5000 if args.small else None,   # None: all 60,000 training images
    "validation_split": 0.1,
    "seed": 0,
}

t0 = time.perf_counter()
sweep = run_sweep(space, scheduler="asha", grace_period=1, reduction_factor=2, num_cpus=args.num_cpus,
                  storage_path=args.storage, name="tune_mnist", verbose=args.verbose)
wall = time.perf_counter() - t0

print()
print(sweep.markdown())
print()
stopped = sum(row["stopped_early"] for row in sweep.table)
print(f"{len(sweep.table)} trials, {stopped} stopped early by ASHA; sweep {sweep.seconds:.0f} s "
      f"(with Ray's start and stop: {wall:.0f} s)")
best = {k: sweep.best_config[k] for k in ("lr", "width", "schedule")}
print(f"best config: {best}: val_accuracy {sweep.best_metrics['val_accuracy']:.4f} "
      f"after {sweep.best_metrics['epoch']} epochs")
_, (X_test, y_test) = load_mnist_arrays()
print(f"its test accuracy (last checkpoint, 10,000 test images): {sweep.best_model().score(X_test, y_test):.4f}")
