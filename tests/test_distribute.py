"""Training under tf.distribute.MirroredStrategy gives the same step as on one device."""
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, sys, tempfile
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from xai_cxr.config import ModelConfig, StageConfig, TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models import BACKBONES, build_model
    from xai_cxr.models.train import distribution_strategy, seed_everything, train_two_stage

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32), dtype=np.uint8)
    labels = np.arange(16) % 2
    prep = BACKBONES["vgg19"].preprocess
    cfg = TrainConfig(stage1=StageConfig(epochs=1, learning_rate=1e-3), verbose=0, deterministic=False)
    out = {}
    for name, devices in (("single", None), ("mirrored", ["/cpu:0", "/cpu:1"])):
        strategy = distribution_strategy(devices)
        seed_everything(0, deterministic=False)
        with strategy.scope():
            # no BatchNorm (per-replica batch statistics differ by design) and no dropout (random masks)
            model = build_model(ModelConfig(backbone="vgg19", weights="none", dense_units=8, dropout=(0.0, 0.0)), 32)
        init = model.get_layer("head_predictions").kernel.numpy().ravel().tolist()
        ds = make_dataset(images, labels, prep, batch_size=16)       # one global batch = one step
        hist = train_two_stage(model, ds, ds, cfg, tempfile.mkdtemp(), finetune_from=None, strategy=strategy)
        out[name] = {"replicas": strategy.num_replicas_in_sync, "loss": hist["stage1"]["loss"][0], "init": init,
                     "kernel": model.get_layer("head_predictions").kernel.numpy().ravel().tolist()}
    print("RESULT" + json.dumps(out))
''')


def test_one_training_step_under_mirrored_strategy_on_two_cpus_matches_one_device():
    """Two logical CPU devices must be configured before TensorFlow starts, hence a subprocess."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    res = json.loads(line[0][len("RESULT"):])
    assert res["single"]["replicas"] == 1 and res["mirrored"]["replicas"] == 2
    assert res["single"]["init"] == res["mirrored"]["init"]                  # same seeded start
    assert abs(res["single"]["loss"] - res["mirrored"]["loss"]) < 1e-4 * max(1.0, abs(res["single"]["loss"]))
    a, b = (res[k]["kernel"] for k in ("single", "mirrored"))
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    assert max(abs(x - y) for x, y in zip(a, res["single"]["init"])) > 1e-6    # the step did change weights
