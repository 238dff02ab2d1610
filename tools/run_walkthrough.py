"""Run the walkthrough notebook on real films and keep it with its outputs: docs/walkthrough-kermany.ipynb.

The notebook (eXplainable-ai.ipynb, written by tools/make_notebook.py) is executed top to bottom with the parameters
below in a work folder where ``chest_xray`` is the 224-px Kermany copy and ``external-adult`` the 44 adult films
(links into ../shared/data); a first markdown cell says when, on what CPU and how long it ran, and where the data
come from. tests/test_notebook.py checks that the kept copy's code cells are the notebook's with these parameters,
so a change to the walkthrough makes the copy stale until this is run again.

    python tools/run_walkthrough.py                  # ~1 h on a 2-core CPU (training is ~25 min of it)
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "eXplainable-ai.ipynb"
OUT = ROOT / "docs" / "walkthrough-kermany.ipynb"
SHARED = ROOT.parent / "shared" / "data"
PARAMETERS = {"DATA_DIR": "chest_xray", "RECIPE": "cxr-res", "EXTERNAL_DIR": "external-adult/chest_xray"}
LINKS = {"chest_xray": SHARED / "kermany224" / "chest_xray", "external-adult": SHARED / "external-adult"}
HEADER_TAG = "walkthrough-header"


def with_parameters(nb, values: dict) -> nbformat.NotebookNode:
    """The notebook with the parameter cell's lines ``NAME = ...`` set to ``values`` (each name must be there)."""
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "the notebook has one parameter cell"
    lines = params[0].source.splitlines()
    for name, value in values.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        assert len(hits) == 1, f"parameter {name} not found in the parameter cell"
        comment = lines[hits[0]].partition("#")[2]
        lines[hits[0]] = f"{name} = {value!r}" + (f"   #{comment}" if comment else "")
    params[0].source = "\n".join(lines)
    return nb


def code_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def expected_code_cells() -> list[str]:
    """The code cells the kept copy must have: the notebook's, with ``PARAMETERS``."""
    return code_cells(with_parameters(nbformat.read(NOTEBOOK, as_version=4), PARAMETERS))


def header(started: dt.datetime, minutes: float, machine: str) -> str:
    return f"""# The walkthrough, run on real films

This is `eXplainable-ai.ipynb` executed top to bottom, outputs kept, so that its figures and numbers can be read
without running anything. Ran {started:%Y-%m-%d} (UTC), **{minutes:.0f} minutes** on {machine}, no GPU, with
`python tools/run_walkthrough.py`; parameters: {", ".join(f"`{k} = {v!r}`" for k, v in PARAMETERS.items())}.

- `chest_xray`: the Kaggle "Chest X-Ray Images (Pneumonia)" films of Kermany et al. 2018 (Cell; data CC BY 4.0),
  here as 224-px copies; training uses a patient-grouped 10% holdout for validation, the test split stays unseen
  until section 4.
- `external-adult`: 44 adult films from one hospital in Spain — 18 "no finding", 26 COVID-19 pneumonia — from the
  Actualmed COVID-19 Chest X-ray Dataset (research use), used only in section 6c to check the model off its home
  ground; they choose nothing.

The model is the `cxr-res` recipe (no pretrained weights, 160 px), trained here once; numbers from one training run
(one seed) vary by about ±0.01–0.02 between seeds (docs/results.md)."""


def compress_images(nb, above_kb: int = 100, quality: int = 85) -> None:
    """PNG outputs larger than ``above_kb`` re-encoded as JPEG (films and heat maps: photographs, not line art), so
    that the kept notebook stays a few MB; the pixels' size is unchanged."""
    import base64
    import io

    from PIL import Image
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data and len(data["image/png"]) > above_kb * 1000 * 4 / 3:
                image = Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB")
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=quality)
                del data["image/png"]
                data["image/jpeg"] = base64.b64encode(buffer.getvalue()).decode()


def main(argv=None) -> int:
    from xai_cxr.runtime import cpu_line
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "walkthrough")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--timeout", type=int, default=4 * 3600, help="seconds a cell may run")
    args = p.parse_args(argv)
    import nbclient
    args.work.mkdir(parents=True, exist_ok=True)
    for name, target in LINKS.items():
        link = args.work / name
        if not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), PARAMETERS)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.time()
    nbclient.NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.work)}}).execute()
    minutes = (time.time() - t0) / 60
    cell = nbformat.v4.new_markdown_cell(header(started, minutes, cpu_line()))
    cell.metadata["tags"] = [HEADER_TAG]
    nb.cells.insert(0, cell)
    compress_images(nb)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, args.out)
    print(f"{args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
