"""Progress in a log: one line per finished epoch or trial, with elapsed time and an ETA."""

import subprocess
import sys

from nascli.log_progress import LogProgress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_one_line_per_finished_epoch_with_elapsed_and_eta():
    lines, clock = [], Clock()
    progress = LogProgress("train", lines.append, "epoch", clock=clock)
    for epoch in (1, 2, 3, 4):
        for step in (1, 2, 3):
            clock.now += 10.0  # 30 s an epoch
            progress({"epoch": epoch, "epochs": 4, "step": step, "steps": 3, "loss": 1.0 / epoch})
    assert len(lines) == 4 and "epoch 1/4" in lines[0] and "loss 1" in lines[0]
    assert lines[0].endswith("| 30s elapsed, ETA 1m30s") and lines[3].endswith("| 2m00s elapsed, ETA 0s")


def test_each_trial_is_a_line_and_fast_steps_are_throttled_to_tenths():
    lines, clock = [], Clock()
    search = LogProgress("search", lines.append, "trial", clock=clock)
    for trial in (1, 2, 3):
        clock.now += 60.0
        search({"step": trial, "steps": 20, "reward": -1.5})
    assert len(lines) == 3 and "3/20" in lines[2] and "reward -1.5" in lines[2] and "ETA 17m00s" in lines[2]
    lines.clear()
    evaluate = LogProgress("eval", lines.append, clock=clock)
    for image in range(1, 101):
        clock.now += 0.01
        evaluate({"step": image, "steps": 100})
    assert len(lines) == 10 and "100/100" in lines[-1]


def test_a_new_arm_restarts_the_clock_of_its_eta():
    lines, clock = [], Clock()
    progress = LogProgress("retrain", lines.append, "epoch", clock=clock)
    for arch in ("control", "trial-18"):
        for epoch in (1, 2):
            clock.now += 100.0 if arch == "control" else 10.0
            progress({"epoch": epoch, "epochs": 2, "step": 1, "steps": 1, "arch": arch})
    assert "trial-18 epoch 1/2" in lines[2] and lines[2].endswith("| 10s elapsed, ETA 10s")


def test_duration_reads_as_a_person_writes_it():
    assert [duration(s) for s in (4.4, 75, 3725)] == ["4s", "1m15s", "1h02m"]


def test_train_on_a_pipe_prints_a_line_per_epoch(tiny_coco, tmp_path):
    """Where rich's bar would print nothing until the end (stderr not a terminal)."""
    done = subprocess.run([sys.executable, "-m", "nascli", "train", "--data", str(tiny_coco[0]), "--out",
                           str(tmp_path / "run"), "--epochs", "2", "--width", "16", "--min-size", "64"],
                          stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    epochs = [line for line in done.stderr.splitlines() if " train " in line and "elapsed, ETA" in line]
    assert len(epochs) == 2 and "epoch 1/2" in epochs[0] and "epoch 2/2" in epochs[1], done.stderr
