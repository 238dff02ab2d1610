"""Multi-worker training on TensorFlow's own engine: two worker processes on 127.0.0.1 (TF_CONFIG), the package's
training loop, against a single process with the same global batch."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from xai_cxr.runtime import cluster_from_env

SCRIPT = textwrap.dedent('''
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    from xai_cxr.runtime import cluster_from_env, multi_worker_strategy
    strategy = multi_worker_strategy()                    # first, before any other TensorFlow op
    import numpy as np, tensorflow as tf, keras
    from xai_cxr.config import TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models.train import seed_everything, train_two_stage
    out = sys.argv[1]
    seed_everything(0)
    strategy = strategy or tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (32, 16, 16), dtype=np.uint8), np.arange(32) % 2
    ds = make_dataset(images, labels, lambda x: x / 255.0, batch_size=8)      # global batch 8
    with strategy.scope():                                # no BatchNorm: its moving statistics are per worker
        inp = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
        model.set_weights([np.random.default_rng(1).normal(0, 0.3, w.shape).astype("float32")
                           for w in model.get_weights()])
    cfg = TrainConfig(verbose=0, label_smoothing=0.0, early_stopping_patience=100).with_epochs(3, 0)
    cluster = cluster_from_env()
    task = "single" if cluster is None else f"{cluster['task'][0]}{cluster['task'][1]}"
    train_two_stage(model, ds, ds, cfg, os.path.join(out, task), finetune_from=None, strategy=strategy)
    np.savez(os.path.join(out, task + ".npz"), *model.get_weights())
    print(json.dumps({"task": task, "replicas": strategy.num_replicas_in_sync}))
''')


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _weights(path):
    z = np.load(path)
    return [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]


def test_tf_config_is_read_with_tensorflows_chief_convention():
    two = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}
    assert cluster_from_env({}) is None
    assert cluster_from_env({"TF_CONFIG": json.dumps({**two, "task": {"type": "worker", "index": 0}})}) == \
        {"workers": 2, "task": ("worker", 0), "chief": True}
    assert cluster_from_env({"TF_CONFIG": json.dumps({**two, "task": {"type": "worker", "index": 1}})})["chief"] \
        is False
    one = {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}
    assert cluster_from_env({"TF_CONFIG": json.dumps(one)}) is None
    with pytest.raises(ValueError, match="TF_CONFIG is not valid"):
        cluster_from_env({"TF_CONFIG": "{nope"})


@pytest.mark.slow
def test_two_workers_on_localhost_end_identical_and_equal_to_one_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("TF_CONFIG", None)
    single = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        cfg = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], text=True,
                                      env=dict(env, TF_CONFIG=json.dumps(cfg)), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1])["replicas"] == 2
    w0, w1, ref = (_weights(tmp_path / f"{t}.npz") for t in ("worker0", "worker1", "single"))
    for a, b, r in zip(w0, w1, ref):
        np.testing.assert_allclose(a, b, atol=1e-6)                  # the workers stay in lockstep
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)       # = one process with the same global batch
    assert (tmp_path / "worker0" / "model.weights.h5").is_file()


def test_only_the_chief_writes_into_the_weights_and_results_folders(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from xai_cxr import pipeline, runtime
    from xai_cxr.commands import training as commands
    seen = []
    monkeypatch.setattr(pipeline, "run", lambda *a: seen.append(a[4:6]) or {})
    args = SimpleNamespace(strategy=object(), weights_dir=str(tmp_path / "w"), results_dir=str(tmp_path / "r"),
                           resume=False, mlflow=False, bbox_csv=None)
    for index, chief in ((0, True), (1, False)):
        monkeypatch.setattr(runtime, "cluster_from_env",
                            lambda i=index, c=chief: {"workers": 2, "task": ("worker", i), "chief": c})
        commands._run(args, None, None, None, None)
    assert seen == [(str(tmp_path / "w"), str(tmp_path / "r")),
                    (str(tmp_path / "w" / "_worker1"), str(tmp_path / "r" / "_worker1"))]
