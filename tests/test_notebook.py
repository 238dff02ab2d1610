"""The notebook is the front door: it is what tools/make_notebook.py writes, and it runs top to bottom on
phantoms as the base install runs it (optional packages absent) and on a real-layout Kermany folder with the
default VGG19 path (stand-in ImageNet weights); the model it trains is usable by `xai-cxr explain`."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "eXplainable-ai.ipynb"
BLOCK_OPTIONAL = """import sys
for name in ("lime", "shap", "skimage", "streamlit"):   # as after `pip install -e .` without the app extra
    sys.modules[name] = None"""


def _source(nb):
    return [(c.cell_type, c.source) for c in nb.cells]


def test_committed_notebook_is_what_make_notebook_writes(tmp_path):
    shutil.copytree(ROOT / "tools", tmp_path / "tools")
    subprocess.run([sys.executable, "tools/make_notebook.py"], cwd=tmp_path, check=True)
    assert _source(nbformat.read(tmp_path / "eXplainable-ai.ipynb", 4)) == _source(nbformat.read(NOTEBOOK, 4)), \
        "eXplainable-ai.ipynb is stale: run `python tools/make_notebook.py`"


def _with_parameters(**values) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name, value in values.items():
        lines = params[0].source.splitlines()
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        assert len(hits) == 1, f"parameter {name} not found in the parameter cell"
        lines[hits[0]] = f"{name} = {value!r}"
        params[0].source = "\n".join(lines)
    return nb


def _execute(nb, cwd: Path):
    nbclient = pytest.importorskip("nbclient")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    text = "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/markdown", "")
                                               or o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells for o in c.get("outputs", []))
    (cwd / "notebook_output.txt").write_text(text)
    return text


@pytest.mark.slow
def test_notebook_runs_on_phantoms_as_the_base_install_would(tmp_path):
    nb = _with_parameters(QUICK=True, RUN_EXTRAS=True, DATA_DIR="no_such_folder")
    nb.cells.insert(0, nbformat.v4.new_code_cell(BLOCK_OPTIONAL))
    text = _execute(nb, tmp_path)
    assert "LIME and SHAP skipped: lime, shap, skimage not installed" in text
    assert "synthetic phantoms" in text and "max |notebook − package|" in text
    assert "pointing_game" in text and "equal to scikit-learn's" in text
    assert (tmp_path / "sample_results" / "sample_results.png").stat().st_size > 10_000
    card = json.loads((tmp_path / "saved_weights" / "model_config.json").read_text())
    assert card["image_size"] == 64 and card["backbone"] == "cxr-small"


@pytest.mark.slow
def test_notebook_default_vgg19_path_on_nested_kaggle_layout(kermany224, standin_keras_home, tmp_path, monkeypatch):
    """Real films in the Kaggle zip's nested layout, RECIPE left at "reference" (VGG19), ImageNet from the stand-in
    file; then `xai-cxr explain` uses the model the notebook trained."""
    home, _, _ = standin_keras_home
    monkeypatch.setenv("KERAS_HOME", str(home))              # inherited by the kernel
    data = tmp_path / "chest_xray" / "chest_xray"
    for split, n in (("train", 24), ("test", 8)):
        for label in ("NORMAL", "PNEUMONIA"):
            (data / split / label).mkdir(parents=True)
            for f in sorted((kermany224 / split / label).iterdir())[:n]:
                shutil.copy(f, data / split / label / f.name)
    nb = _with_parameters(QUICK=True)
    text = _execute(nb, tmp_path)
    assert "one folder down" in text and "chest_xray/chest_xray" in text
    assert "vgg19 (weights: imagenet)" in text
    assert "stage1: Adam(learning_rate=0.0003, clipnorm=None)" in text
    assert "stage2: Adam(learning_rate=1e-05, clipnorm=1.0)" in text
    assert "block5_conv1, block5_conv2, block5_conv3, block5_conv4, head_dense, head_predictions" in text
    assert "layer block5_conv3: max |notebook − package|" in text
    assert (tmp_path / "sample_results" / "sample_results.png").is_file()
    card = json.loads((tmp_path / "saved_weights" / "model_config.json").read_text())
    assert (card["backbone"], card["image_size"], card["target_layer"]) == ("vgg19", 64, "block5_conv3")

    from xai_cxr import cli
    film = next((data / "test" / "PNEUMONIA").iterdir())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["explain", str(film), "--out", str(tmp_path / "explain"), "--device", "cpu"]) == 0
    assert len(list((tmp_path / "explain").glob("*.png"))) == 1


@pytest.mark.slow
def test_notebook_on_phantoms_probes_the_model_and_its_planted_tag_teaches_the_right_lesson(tmp_path):
    """The notebook's default parameters on phantoms (no data): section 6b prints the verdict table for the model it
    trained, and its planted-tag half shows a model that uses the tag (most normal films flip when it is added) beside
    a control in which Grad-CAM stays off the tag (within a random map's sensitivity + 0.05)."""
    import pandas as pd

    from xai_cxr.explain.metrics.shortcut import FALSE_ALARM_MARGIN
    text = _execute(_with_parameters(DATA_DIR="no_such_folder"), tmp_path)
    assert "What this model reads" in text and "width × 0.8…1.25" in text
    runs = pd.read_csv(tmp_path / "sample_results" / "shortcut" / "confounder_tag" / "confounder_runs.csv")
    tagged, control = runs[runs.degree == 1.0].iloc[0], runs[runs.degree == 0.0].iloc[0]
    assert tagged.flips >= 0.5 * tagged.negatives, "the tagged model must use the tag"
    assert control.flips <= 0.05 * control.negatives, "the clean model must ignore the tag"
    table = pd.read_csv(tmp_path / "sample_results" / "shortcut" / "confounder_tag" / "confounder_audit.csv")
    ctl = table[table.degree == 0.0].set_index("method")
    assert ctl.loc["gradcam", "over_random"] <= FALSE_ALARM_MARGIN
    assert "uses the tag" in text and "quiet for gradcam" in text and "CANNOT TELL" not in text


def test_every_code_cell_of_the_notebook_compiles():
    """A cell with a broken string or indentation fails here in milliseconds, not minutes into a notebook run."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        source = "\n".join(line for line in cell.source.splitlines() if not line.strip().startswith("%"))
        compile(source, f"code cell {i}", "exec")


def test_the_walkthrough_kept_with_its_outputs_runs_the_notebooks_code_or_is_stale():
    """docs/walkthrough-kermany.ipynb (the notebook run on Kermany films, outputs kept) has exactly the notebook's
    code cells with its parameters: when the walkthrough changes, this fails until the copy is run again."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("run_walkthrough", ROOT / "tools" / "run_walkthrough.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    kept = nbformat.read(tool.OUT, as_version=4)
    assert tool.code_cells(kept) == tool.expected_code_cells(), \
        "docs/walkthrough-kermany.ipynb is stale: run `python tools/run_walkthrough.py`"
    code = [c for c in kept.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run top to bottom, every cell"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert kept.cells[0].metadata.get("tags") == [tool.HEADER_TAG]
