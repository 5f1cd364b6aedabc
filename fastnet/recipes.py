"""Training configurations: one table for ``fastnet train --recipe`` and ``fastnet bench``.

Each entry is a whole configuration of an MNIST multilayer perceptron (hidden
sizes, activation, optimizer, learning rate and schedule, batch size, epochs,
dropout) and says what it is for: a ``"recipe"`` of the command line (chosen by
measurement, see ``examples/README.md``) or a ``"bench"`` configuration of
``fastnet.benchmark`` (one timed epoch per round: ``epochs`` and the schedule
are not used there).
"""
from __future__ import annotations


def _config(purpose, *, hidden, activation, optimizer, lr, batch_size, epochs=1, schedule="constant", dropout=0.0):
    return dict(purpose=purpose, hidden=list(hidden), activation=activation, optimizer=optimizer, lr=lr,
                batch_size=batch_size, epochs=epochs, schedule=schedule, dropout=dropout)


CONFIGS = {
    # 98.4% test accuracy in 6 epochs (~8 s here); reaches 98% in 4 to 5.
    "default": _config("recipe", hidden=[256, 256], activation="relu", optimizer="adam", lr=2e-3,
                       batch_size=128, epochs=6, schedule="onecycle"),
    # 98.76% in 15 epochs (~45 s here), with dropout.
    "best": _config("recipe", hidden=[512, 512], activation="relu", optimizer="adam", lr=2e-3,
                    batch_size=128, epochs=15, schedule="onecycle", dropout=0.2),
    # The tutorials' 784-40-30-10 net.
    "tiny": _config("recipe", hidden=[40, 30], activation="relu", optimizer="adam", lr=3e-3,
                    batch_size=64, epochs=10),
    # The benchmark's configurations: the tutorials' sigmoid net with SGD, a wide ReLU net
    # with Adam, each at batch 128 and 1024.
    "sigmoid128-sgd": _config("bench", hidden=[128], activation="sigmoid", optimizer="sgd", lr=0.1,
                              batch_size=128),
    "relu512x2-adam": _config("bench", hidden=[512, 512], activation="relu", optimizer="adam", lr=1e-3,
                              batch_size=128),
    "sigmoid128-sgd-b1024": _config("bench", hidden=[128], activation="sigmoid", optimizer="sgd", lr=0.1,
                                    batch_size=1024),
    "relu512x2-adam-b1024": _config("bench", hidden=[512, 512], activation="relu", optimizer="adam", lr=1e-3,
                                    batch_size=1024),
}

#: ``fastnet train --recipe`` choices.
RECIPES = {name: c for name, c in CONFIGS.items() if c["purpose"] == "recipe"}
#: ``fastnet bench --configs`` choices.
BENCH_CONFIGS = {name: c for name, c in CONFIGS.items() if c["purpose"] == "bench"}
