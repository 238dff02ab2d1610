"""Multi-label mode: NIH ChestX-ray14 CSV format, focal loss / weighted BCE, per-label metrics, boxes."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from xai_cxr.data import DatasetLayoutError, scan_labels_csv
from xai_cxr.data.phantom import make_phantom

FINDINGS = ("Effusion", "Pneumonia")


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    """48 phantom images named like NIH files; Pneumonia = has a lesion, Effusion = a random half."""
    root = tmp_path_factory.mktemp("nih")
    rng = np.random.default_rng(0)
    rows, boxes = [], []
    for i in range(48):
        img, lesion, _ = make_phantom(rng, 64, n_lesions=i % 2, lesion_radius=(6.0, 10.0))
        name = f"{i:08d}_000.png"
        sub = root / "images_001" / "images"
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / name), img)
        found = [f for f, on in (("Effusion", rng.random() < 0.5), ("Pneumonia", i % 2)) if on]
        rows.append({"Image Index": name, "Finding Labels": "|".join(found) or "No Finding",
                     "Patient ID": i // 2, "Follow-up #": 0})
        if lesion.any():
            ys, xs = np.nonzero(lesion)
            boxes.append({"Image Index": name, "Finding Label": "Pneumonia", "Bbox [x": xs.min(), "y": ys.min(),
                          "w": xs.max() - xs.min() + 1, "h]": ys.max() - ys.min() + 1})
    pd.DataFrame(rows).to_csv(root / "Data_Entry_2017.csv", index=False)
    pd.DataFrame(boxes).to_csv(root / "BBox_List_2017.csv", index=False)
    return root


def test_scan_builds_multi_hot_labels_and_patient_wise_split(nih):
    df = scan_labels_csv(nih / "Data_Entry_2017.csv", nih, FINDINGS, test_fraction=0.25, seed=1)
    csv = pd.read_csv(nih / "Data_Entry_2017.csv").set_index("Image Index")
    for _, row in df.iterrows():
        expected = [float(f in csv.loc[row.path.split("/")[-1], "Finding Labels"].split("|")) for f in FINDINGS]
        assert list(row.label_vec) == expected
    assert not set(df[df.split == "train"].patient_id) & set(df[df.split == "test"].patient_id)
    assert 0.15 < (df.split == "test").mean() < 0.35


@pytest.mark.parametrize("problem, match", [
    ("missing_column", r"lacks column\(s\) \['Patient ID'\]"),
    ("unknown_label", r"column 'Finding Labels'.*row 3: \['Hernia'\]"),
    ("missing_image", r"column 'Image Index'.*rows 2 \(nope.png\)"),
])
def test_bad_csv_errors_name_rows_and_columns(nih, tmp_path, problem, match):
    df = pd.read_csv(nih / "Data_Entry_2017.csv")
    if problem == "missing_column":
        df = df.drop(columns="Patient ID")
    elif problem == "unknown_label":
        df.loc[1, "Finding Labels"] = "Hernia"
    else:
        df.loc[0, "Image Index"] = "nope.png"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetLayoutError, match=match):
        scan_labels_csv(tmp_path / "bad.csv", nih, FINDINGS)


def test_label_in_only_one_split_warns(nih, tmp_path):
    df = pd.read_csv(nih / "Data_Entry_2017.csv")
    df["Finding Labels"] = "No Finding"
    df.loc[0, "Finding Labels"] = "Pneumonia"
    df.to_csv(tmp_path / "one.csv", index=False)
    with pytest.warns(UserWarning, match=r"only one split.*Pneumonia"):
        scan_labels_csv(tmp_path / "one.csv", nih, FINDINGS)


def test_multilabel_metrics_match_sklearn_per_label():
    from sklearn.metrics import f1_score, roc_auc_score

    from xai_cxr.tasks import get_task
    rng = np.random.default_rng(3)
    y = (rng.random((40, 3)) < 0.4).astype(float)
    y[:, 2] = 0                                                     # a label absent from the test split
    p = np.clip(y * 0.5 + rng.random((40, 3)) * 0.6, 0, 1)
    m = get_task("multilabel").metrics(y, p, ("A", "B", "C"))
    for k, name in enumerate("AB"):
        assert m["per_label"][name]["auroc"] == pytest.approx(roc_auc_score(y[:, k], p[:, k]))
        assert m["per_label"][name]["f1"] == pytest.approx(f1_score(y[:, k], p[:, k] >= 0.5))
    assert np.isnan(m["per_label"]["C"]["auroc"])
    assert m["macro"]["auroc"] == pytest.approx(np.mean([m["per_label"][n]["auroc"] for n in "AB"]))


def test_weighted_bce_matches_numpy():
    from xai_cxr.models.train import weighted_bce
    y = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    p = np.array([[0.8, 0.3], [0.4, 0.6], [0.9, 0.2]], np.float32)
    w = np.array([2.0, 0.5], np.float32)
    expected = -(w * y * np.log(p) + (1 - y) * np.log(1 - p)).mean(-1)
    np.testing.assert_allclose(np.asarray(weighted_bce(w)(y, p)), expected, rtol=1e-5)


def test_cli_multilabel_trains_sigmoid_model_with_per_label_metrics_and_boxes(nih, tmp_path):
    """One multi-label run (the loss choice is checked where it acts: test_tasks.py): the per-label AUROCs in
    metrics.json equal scikit-learn's on the saved model's own test predictions, the box count is the CSV's."""
    from sklearn.metrics import roc_auc_score

    from xai_cxr.cli import main
    from xai_cxr.data import load_images
    from xai_cxr.models import ModelFolder
    from xai_cxr.models.predict import predict_images
    from xai_cxr.tasks import get_task
    assert main(["train", "--task", "multilabel", "--labels-csv", str(nih / "Data_Entry_2017.csv"),
                 "--bbox-csv", str(nih / "BBox_List_2017.csv"), "--classes", ",".join(FINDINGS),
                 "--loss", "bce", "--data-dir", str(nih), "--backbone", "cxr-small", "--weights", "none",
                 "--image-size", "64", "--batch-size", "8", "--epochs1", "2", "--validation", "holdout:0.2",
                 "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["task"] == "multilabel" and list(m["per_label"]) == list(FINDINGS)
    model, card = ModelFolder(tmp_path / "w").load()
    assert card.task == "multilabel" and model.layers[-1].activation.__name__ == "sigmoid"
    df = get_task("multilabel").scan(nih, FINDINGS, card.seed, str(nih / "Data_Entry_2017.csv"))
    test = load_images(df[df.split == "test"], 64, progress=False)
    proba = predict_images(model, test.images)
    for k, name in enumerate(FINDINGS):
        assert m["per_label"][name]["auroc"] == pytest.approx(roc_auc_score(test.labels[:, k], proba[:, k]), abs=1e-6)
    boxes = json.loads((tmp_path / "r" / "bbox_localization.json").read_text())
    listed = set(pd.read_csv(nih / "BBox_List_2017.csv")["Image Index"])
    assert boxes["n_boxes"] == sum(p.split("/")[-1] in listed for p in test.manifest.path)
    assert (tmp_path / "r" / "sample_results.png").is_file()
    # evaluate reads the task and the split seed from the card: the same test split, the same per-label AUROC
    assert main(["evaluate", "--weights-dir", str(tmp_path / "w"), "--data-dir", str(nih), "--seed", "7",
                 "--labels-csv", str(nih / "Data_Entry_2017.csv"), "--results-dir", str(tmp_path / "e")]) == 0
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["n_images"] == m["n_images"]
    for name, row in m["per_label"].items():
        np.testing.assert_allclose(again["per_label"][name]["auroc"], row["auroc"], atol=1e-6, equal_nan=True)

