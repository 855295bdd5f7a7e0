"""A training run killed mid-way (SIGKILL) and resumed with `--resume` finishes the same run.

Each case trains `configs/smoke.yaml` on synthetic films in a subprocess, kills it as soon as
the first epoch shows in `history.csv`, resumes it, and checks the bundle, the split and the
history. Streaming (`--cache-views 0`) and cached (`--cache-views 2`) runs resume differently
(tf.data vs feature cache), so both are covered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pneumo.bundle import read_manifest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
EPOCHS = (4, 3)  # per stage; enough that a kill after the first epoch lands mid-training
STAGES = ("head", "finetune")
BACKUP_META = Path("work") / "stage0_backup" / "training_metadata.json"


def train_args(data: Path, out: Path, cache_views: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pneumo", "train", "--config", str(SMOKE), "--data", str(data),
            "--out", str(out), "--epochs", ",".join(map(str, EPOCHS)),
            "--cache-views", str(cache_views), *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


def history_rows(out: Path) -> int:
    try:
        return len(pd.read_csv(out / "history.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return 0  # not written yet, or caught mid-append


def backed_up_epochs(out: Path) -> int:
    """Epochs of the first stage that its backup (the resume point) holds."""
    try:
        return json.loads((out / BACKUP_META).read_text())["epoch"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def start_and_kill(args: list[str], out: Path, kill_when: str, timeout: float = 180) -> str:
    """Run `args`, SIGKILL it once the first epoch is in history.csv ("history": anywhere in
    the saving that follows, racy on purpose) or in the backup ("backup": a clean resume
    point); return its output so far."""
    done = {"history": lambda: history_rows(out) >= 1, "backup": lambda: backed_up_epochs(out) >= 1}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env(),
                            cwd=REPO)
    deadline = time.monotonic() + timeout
    try:
        while not done[kill_when]():
            if proc.poll() is not None:
                pytest.fail(f"training ended before the kill:\n{proc.stdout.read()[-3000:]!r}")
            if time.monotonic() > deadline:
                pytest.fail("no epoch finished in time")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc.stdout.read().decode(errors="replace")


def assert_history_complete(history: pd.DataFrame) -> None:
    """Every stage ran, each epoch once, numbered 1..n without a gap."""
    assert list(dict.fromkeys(history["stage"])) == list(STAGES), history
    for stage, limit in zip(STAGES, EPOCHS):
        epochs = history.loc[history.stage == stage, "epoch"].tolist()
        assert epochs == list(range(1, len(epochs) + 1)), f"{stage}: epochs {epochs}"
        assert 1 <= len(epochs) <= limit


@pytest.mark.parametrize("cache_views, kill_when", [(0, "history"), (2, "backup")],
                         ids=["streaming-racy-kill", "cached-after-backup"])
def test_killed_run_resumes_to_a_complete_bundle(synthetic_data, tmp_path, cache_views,
                                                 kill_when):
    out = tmp_path / "run"
    args = train_args(synthetic_data, out, cache_views)
    start_and_kill(args, out, kill_when)
    assert not (out / "manifest.json").exists(), "killed too late: the run had finished"
    assert (out / "work").is_dir()
    split_before = (out / "split.csv").read_bytes()
    killed_history = pd.read_csv(out / "history.csv")
    resume_point = backed_up_epochs(out)

    run = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env(),
                         cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Traceback" not in run.stderr

    manifest = read_manifest(out, verify=True)  # every file present, every sha256 right
    assert {"model.keras", "gate.npz", "split.csv", "history.csv"} <= set(manifest["files"])
    assert not (out / "work").exists(), "resumable state must go once the bundle is complete"
    assert (out / "split.csv").read_bytes() == split_before
    history = pd.read_csv(out / "history.csv")
    assert_history_complete(history)
    assert len(history) >= len(killed_history)
    # Epochs up to the backup were not trained again: their rows are the killed run's, to
    # the digit (a run that restarted from scratch would have rewritten them).
    kept = killed_history[(killed_history.stage == "head") & (killed_history.epoch <= resume_point)]
    assert len(kept) == resume_point
    pd.testing.assert_frame_equal(history.iloc[:resume_point], kept, check_exact=True)
    if kill_when == "backup":
        assert resume_point >= 1


def test_train_into_non_empty_folder_needs_resume(synthetic_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "split.csv").write_text("path,patient_id,label,split\n")
    run = subprocess.run(train_args(synthetic_data, out, 0), capture_output=True, text=True,
                         env=env(), cwd=REPO, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("pneumo: error: ")]
    assert len(errors) == 1 and "--resume" in errors[0] and str(out) in errors[0], run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["split.csv"], "nothing written"


# ----------------------------------------------------------------------------- the callbacks
# Fast, deterministic versions of what the kill above hits by chance.


def test_epoch_recorder_drops_the_rows_a_resumed_run_redoes(tmp_path):
    from pneumo.training import EpochRecorder

    path = tmp_path / "history.csv"
    path.write_text("stage,epoch,loss,seconds\nhead,1,0.9,1\nhead,2,0.8,1\n"
                    "finetune,1,0.7,1\nfinetune,2,0.6,1\nfinet")  # killed mid-append
    recorder = EpochRecorder(path, "finetune")
    recorder.on_train_begin()
    recorder.on_epoch_begin(1)  # the backup holds finetune epoch 1: epoch 2 is redone
    recorder.on_epoch_end(1, {"loss": 0.5})
    frame = pd.read_csv(path)
    assert list(zip(frame.stage, frame.epoch, frame.loss)) == [
        ("head", 1, 0.9), ("head", 2, 0.8), ("finetune", 1, 0.7), ("finetune", 2, 0.5)]


def test_backup_survives_a_kill_while_saving(tmp_path, monkeypatch):
    import keras

    from pneumo.training import AtomicBackup

    def model():
        net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        net.compile(optimizer="sgd", loss="mse")
        return net

    backup_dir = tmp_path / "backup"
    first = model()
    callback = AtomicBackup(str(backup_dir))
    callback.set_model(first)
    callback.on_epoch_end(0)  # epoch 1 backed up
    saved = [w.copy() for w in first.get_weights()]

    def killed_mid_write(*args, **kwargs):
        path = kwargs.get("filepath") or args[0]
        Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # a truncated HDF5 file
        raise KeyboardInterrupt("killed")

    first.set_weights([w + 1 for w in saved])
    monkeypatch.setattr(first, "save_weights", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        callback.on_epoch_end(1)

    resumed = model()
    restore = AtomicBackup(str(backup_dir))
    restore.set_model(resumed)
    restore.on_train_begin()  # must not raise on the half-written file
    assert resumed._initial_epoch == 1
    for got, want in zip(resumed.get_weights(), saved):
        assert (got == want).all()

    # The next stage fits the same model with a fresh backup folder: it starts at epoch 0.
    next_stage = AtomicBackup(str(tmp_path / "next_stage_backup"))
    next_stage.set_model(resumed)
    next_stage.on_train_begin()
    assert not resumed._initial_epoch


def test_weight_average_is_the_mean_of_its_epochs_and_survives_a_repeat(tmp_path):
    import keras
    import numpy as np

    from pneumo.training import WeightAverage

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "average.weights.h5"
    average = WeightAverage(net, path, start=2)
    epoch_weights = {}
    for epoch in range(4):  # 0-based: epochs 1..4, the mean takes 2, 3, 4
        net.set_weights([np.full_like(w, 10.0 * (epoch + 1) + i)
                         for i, w in enumerate(net.get_weights())])
        epoch_weights[epoch + 1] = [w.copy() for w in net.get_weights()]
        average.on_epoch_end(epoch)
        # training goes on from the epoch's own weights
        for got, want in zip(net.get_weights(), epoch_weights[epoch + 1]):
            np.testing.assert_array_equal(got, want)
        if epoch == 2:  # a resumed run redoes epoch 3 with other weights: not counted again
            net.set_weights([w + 1000 for w in net.get_weights()])
            WeightAverage(net, path, start=2).on_epoch_end(2)
            net.set_weights(epoch_weights[3])
    assert WeightAverage(net, path, start=2).epochs() == [2, 3, 4]
    net.load_weights(path)
    for i, got in enumerate(net.get_weights()):
        np.testing.assert_allclose(got, np.mean([epoch_weights[e][i] for e in (2, 3, 4)], axis=0),
                                   rtol=1e-6)


def test_a_stage_that_averages_ends_on_the_average(synthetic_data, tmp_path, monkeypatch):
    """Through the trainer: the bundle's network is the mean of the averaged epochs' weights,
    not the best epoch's (nor the last)."""
    import keras
    import numpy as np

    import pneumo.training.run as run
    from pneumo.config import load_config

    seen = {}

    class Spy(run.WeightAverage):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch + 1] = [w.copy() for w in self.full_model.get_weights()]
            super().on_epoch_end(epoch, logs)

    monkeypatch.setattr(run, "WeightAverage", Spy)
    cfg = load_config(SMOKE, {"train.cache_views": 2, "train.litert": "off"})
    cfg.train.stages[1].epochs = 3
    cfg.train.stages[1].average_from = 2
    out = run.train(cfg, synthetic_data, tmp_path / "bundle")
    stage = json.loads((out / "metrics.json").read_text())["timing"]["stages"][1]
    assert stage["averaged_epochs"] == [2, 3]
    shipped = keras.models.load_model(out / "model.keras", compile=False).get_weights()
    mean = [(a + b) / 2 for a, b in zip(seen[2], seen[3])]
    assert any(not np.allclose(a, b) for a, b in zip(seen[2], seen[3]))  # the epochs differ
    for got, want in zip(shipped, mean):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
