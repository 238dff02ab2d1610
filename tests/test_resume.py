"""Kill a training process with SIGKILL (twice, the second time right as it saves), resume, and check the
run finishes with the planned number of epochs and loadable weights."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import os, sys, time, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import numpy as np, tensorflow as tf
    from xai_cxr.config import ModelConfig, TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models import BACKBONES, build_model
    from xai_cxr.models.train import train_two_stage
    out, resume = sys.argv[1], sys.argv[2] == "1"
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 32, 32), dtype=np.uint8), np.arange(64) % 2
    slow = lambda x, y: (tf.numpy_function(lambda a: (time.sleep(0.08), a)[1], [x], tf.float32), y)
    ds = make_dataset(images, labels, BACKBONES["cxr-small"].preprocess, batch_size=8, shuffle=True)
    ds = ds.map(lambda x, y: (tf.ensure_shape(slow(x, y)[0], x.shape), y))
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    cfg = TrainConfig(verbose=0, early_stopping_patience=100, reduce_lr_patience=1).with_epochs(6, 0)
    history = train_two_stage(model, ds, ds.take(2), cfg, out, finetune_from=None, resume=resume)
    print(json.dumps({k: len(v["loss"]) for k, v in history.items()}))
''')


def _epochs_logged(state):
    try:
        return len(json.loads(state.read_text())["state"]["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


def _start(script, out, resume):
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.Popen([sys.executable, str(script), str(out), "1" if resume else "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _kill_when(proc, state, n_epochs, delay, timeout=240):
    t0 = time.time()
    while _epochs_logged(state) < n_epochs:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() - t0 < timeout, "training did not progress"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_then_resume_finishes_with_planned_epochs(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    state = out / "train_state" / "stage1.state.json"
    _kill_when(_start(script, out, False), state, 2, delay=0.3)            # mid-epoch
    killed_at = _epochs_logged(state)
    assert 2 <= killed_at < 6
    _kill_when(_start(script, out, True), state, killed_at + 1, delay=0.0)  # right as it saves
    proc = _start(script, out, True)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1]) == {"stage1": 6}
    assert _epochs_logged(state) == 6
    assert len(json.loads((out / "history.json").read_text())["stage1"]["loss"]) == 6
    from xai_cxr.config import ModelConfig
    from xai_cxr.models import build_model
    build_model(ModelConfig(backbone="cxr-small", weights="none"), 32).load_weights(out / "model.weights.h5")
    assert not list(Path(out).glob("*.tmp*"))


def test_cosine_schedule_with_adamw_trains_and_records_state_without_a_plateau_callback(tmp_path):
    """Under the cosine schedule ReduceLROnPlateau is not used (it would fight the schedule), and the per-epoch
    state is still written; the schedule spans the stage: 1 warm-up epoch, decayed to 0 after the last."""
    import keras
    import numpy as np

    from xai_cxr.config import ModelConfig, TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models import build_model
    from xai_cxr.models.train import train_two_stage
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32)).astype(np.uint8)
    ds = make_dataset(images, np.arange(16) % 2, lambda x: x / 255.0, batch_size=8)
    model = build_model(ModelConfig(backbone="cxr-res", weights="none"), 32)
    cfg = TrainConfig(verbose=0, optimizer="adamw", schedule="cosine", warmup_epochs=1).with_epochs(2, 0)
    history = train_two_stage(model, ds, ds, cfg, tmp_path, finetune_from=None)
    assert len(history["stage1"]["loss"]) == 2
    state = json.loads((tmp_path / "train_state" / "stage1.state.json").read_text())["state"]
    assert len(state["epochs"]) == 2 and "rl_wait" not in state
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    sched = model.optimizer._learning_rate         # 2 steps per epoch (16 images, batch 8), read off the dataset
    assert (sched.warmup_steps, sched.planned_steps) == (2, 4)
    assert float(sched(4)) == pytest.approx(0.0, abs=1e-12)


def _tiny_run(tmp_path, epochs=3, resume=False, **kw):
    import numpy as np

    from xai_cxr.config import ModelConfig, TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models import build_model
    from xai_cxr.models.train import train_two_stage
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32)).astype(np.uint8)
    ds = make_dataset(images, np.arange(16) % 2, lambda x: x / 255.0, batch_size=8)
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    cfg = TrainConfig(verbose=0, early_stopping_patience=100, **kw).with_epochs(epochs, 0)
    return model, ds, lambda: train_two_stage(model, ds, ds, cfg, tmp_path, finetune_from=None, resume=resume)


def test_a_checkpoint_save_that_fails_half_way_leaves_the_previous_best_intact(tmp_path, monkeypatch):
    """The disk fills up while the second improvement is being written: training stops with an error that
    names the file and the fix, no temp file is left, and model.weights.h5 + its state are the first save's."""
    import errno

    import numpy as np

    from xai_cxr.models.callbacks import read_state
    model, ds, train = _tiny_run(tmp_path, epochs=4)
    real_save, saves = type(model).save_weights, []
    losses = iter([1.0, 0.5, 0.25, 0.1])                  # every epoch improves: every epoch saves

    def save_then_fill_disk(self, *a, **k):
        path = k.get("filepath", a[0] if a else "")
        if str(path).endswith(".tmp.weights.h5") and saves:
            with open(path, "wb") as f:
                f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)        # half a file, then ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        if str(path).endswith(".tmp.weights.h5"):
            saves.append([w.copy() for w in self.get_weights()])
        return real_save(self, *a, **k)
    monkeypatch.setattr(type(model), "save_weights", save_then_fill_disk)
    from xai_cxr.models import callbacks
    real_end = callbacks.AtomicBestCheckpoint.on_epoch_end
    monkeypatch.setattr(callbacks.AtomicBestCheckpoint, "on_epoch_end",
                        lambda self, epoch, logs=None: real_end(self, epoch, {"val_loss": next(losses)}))
    with pytest.raises(OSError, match="previous best weights .*intact.*--resume"):
        train()
    assert not list(tmp_path.glob("*.tmp.weights.h5"))
    state = read_state(tmp_path / "train_state" / "stage1.best.json")
    assert (state["best_epoch"], state["best"]) == (0, 1.0)
    fresh, _, _ = _tiny_run(tmp_path / "other", epochs=1)
    fresh.load_weights(tmp_path / "model.weights.h5")
    for a, b in zip(fresh.get_weights(), saves[0]):
        np.testing.assert_array_equal(a, b)


def test_resume_verifies_the_state_checksum_and_says_what_it_restored(tmp_path, capsys):
    _, _, train = _tiny_run(tmp_path, epochs=2)
    train()
    state = tmp_path / "train_state" / "stage1.state.json"
    (tmp_path / "train_state" / "stage1.done.json").unlink()      # as if killed after the last epoch's state
    _, _, again = _tiny_run(tmp_path, epochs=2, resume=True)
    again()
    assert "stage1.state.json (checksum ok): 2 finished epoch(s) restored" in capsys.readouterr().out
    saved = json.loads(state.read_text())
    saved["state"]["es_wait"] += 1                                  # one edited number, checksum unchanged
    state.write_text(json.dumps(saved))
    (tmp_path / "train_state" / "stage1.done.json").unlink()
    _, _, damaged = _tiny_run(tmp_path, epochs=2, resume=True)
    with pytest.raises(ValueError, match="stage1.state.json fails its checksum.*without --resume"):
        damaged()
