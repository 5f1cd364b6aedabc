"""Helpers of the tests that start processes: whether one is still running."""
import os


def alive(pid):
    """True while ``pid`` runs (a zombie, ended but not yet reaped, is not running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
