import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["XAI_CXR_NO_DOWNLOAD"] = "1"          # no test reaches the network; download tests opt in explicitly

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KERMANY224 = SHARED / "kermany224" / "chest_xray"


def build_tiny(head: str = "gap", seed: int = 0, size: int = 8, channels: int = 1, filters: int = 3):
    """Input(size, size, channels) → Conv2D(3×3, valid, relu, name="conv") → GAP|Flatten → Dense(2, softmax),
    with fixed random weights."""
    import keras
    from keras import layers
    inp = keras.Input((size, size, channels))
    x = layers.Conv2D(filters, 3, activation="relu", name="conv")(inp)
    x = layers.GlobalAveragePooling2D()(x) if head == "gap" else layers.Flatten()(x)
    out = layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def write_dicom(path, pixels, photometric="MONOCHROME2", slope=None, intercept=None, with_pixels=True,
                window=None, **tags):
    """Write a small uncompressed DICOM of ``pixels`` (uint8/uint16); ``window`` = (centre, width); other
    keyword arguments become tags (e.g. PatientName)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for k, v in tags.items():
        setattr(ds, k, v)
    if with_pixels:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def kermany224():
    if not KERMANY224.is_dir():
        pytest.skip(f"real Kermany images not present at {KERMANY224} (../shared/data is only on project machines)")
    return KERMANY224


@pytest.fixture(scope="session")
def phantom_weights(tmp_path_factory):
    """A cxr-small phantom model trained for one epoch through the app/API fallback path (seconds):
    returns its weights folder. For plumbing tests (app, API, report), not for accuracy."""
    from xai_cxr.serve.inference import phantom_predictor
    base = tmp_path_factory.mktemp("phantom_cache")
    return Path(phantom_predictor(base, n_train=16, epochs=(1, 0)).source.rsplit(": ", 1)[1])


def write_standin_imagenet(path):
    """A stand-in for Keras's ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``: VGG19 with fixed random
    weights written in the same legacy HDF5 layout Keras ships (``layer_names`` attribute, one group per layer).
    Returns the block1_conv1 kernel written, to check that a model really loaded this file."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format
    keras.utils.set_random_seed(7)
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(32, 32, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg)
    return vgg.get_layer("block1_conv1").kernel.numpy()


@pytest.fixture(scope="session")
def standin_keras_home(tmp_path_factory):
    """A KERAS_HOME whose models/ holds the stand-in VGG19 ImageNet file: (keras_home, file, block1 kernel)."""
    home = tmp_path_factory.mktemp("keras_home")
    path = home / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    kernel = write_standin_imagenet(path)
    return home, path, kernel


# --- the quick suite's per-test time budget (tests/timing.py) -------------------------------------------------
_durations: dict[str, float] = {}
_over: dict[str, float] = {}
_factor = [1.0]


def pytest_runtest_logreport(report):
    if "slow" not in report.keywords:
        _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    import timing
    budget = timing.budget_s()
    if budget <= 0 or not timing.over_budget(_durations, budget, 1.0):
        return
    _factor[0] = timing.slowness()
    _over.update(timing.over_budget(_durations, budget, _factor[0]))
    if _over and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _over:
        import timing
        terminalreporter.section("per-test time budget exceeded", red=True)
        terminalreporter.write_line(
            f"a test not marked slow must finish within {timing.budget_s():g} s × {_factor[0]:.2f} (this machine's "
            "slowness against the reference CPU, tests/timing.py): make it cheaper or mark it slow")
        for name, t in sorted(_over.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"  {t:6.1f} s  {name}")
