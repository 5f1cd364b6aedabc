"""fastnet.train.progress: one tqdm bar helper, used by the epoch bar and the MNIST download bar."""
import io

from fastnet.train import progress
from fastnet.train.progress import EpochProgress, format_logs


def test_bar_is_tqdm_on_the_stream_or_a_silent_stand_in(capsys):
    stream = io.StringIO()
    bar = progress.bar(4, "work", unit="item", stream=stream, mininterval=0)
    for _ in range(4):
        bar.update(1)
    bar.close()
    out = stream.getvalue()
    assert "work: 100%" in out and "4/4" in out and out.endswith("\n")
    quiet = progress.bar(4, "work", enabled=False)
    quiet.update(4)
    quiet.close()
    assert capsys.readouterr() == ("", "")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_epoch_progress_bar_then_one_line():
    stream = _Terminal()  # the bar is drawn on terminals only
    p = EpochProgress(2, 3, steps=5, stream=stream)
    for step in range(1, 6):
        p.update(step)
    p.close({"loss": 0.25, "accuracy": 0.5, "val_loss": None, "lr": 0.01, "seconds": 2.0}, 100)
    out = stream.getvalue()
    assert "epoch 2/3:" in out  # the bar's label
    last = out.rsplit("\r", 1)[-1]  # the bar is cleared (leave=False), then the summary line
    assert last == "epoch 2/3  loss 0.2500  accuracy 0.5000  lr 0.01  2.00s (50 samples/s)\n"


def test_a_file_gets_the_line_without_the_bar():
    stream = io.StringIO()  # not a terminal: a log file
    p = EpochProgress(2, 3, steps=5, stream=stream)
    for step in range(1, 6):
        p.update(step)
    p.close({"loss": 0.25, "seconds": 2.0}, 100)
    assert stream.getvalue() == "epoch 2/3  loss 0.2500  2.00s (50 samples/s)\n"


def test_disabled_epoch_progress_prints_nothing(capsys):
    stream = io.StringIO()
    p = EpochProgress(1, 1, steps=3, enabled=False, stream=stream)
    for step in range(1, 4):
        p.update(step)
    p.close({"loss": 1.0}, 10)
    assert stream.getvalue() == "" and capsys.readouterr() == ("", "")


def test_epoch_progress_defaults_to_stderr(capsys):
    p = EpochProgress(1, 1, steps=2)
    p.update(2)
    p.close({"loss": 1.0, "seconds": 1.0}, 10)
    captured = capsys.readouterr()
    assert captured.out == "" and "epoch 1/1  loss 1.0000" in captured.err


def test_format_logs():
    assert format_logs({"loss": 0.123456, "lr": 0.00012345, "seconds": 3.0, "val_loss": None}) == (
        "loss 0.1235  lr 0.000123")
