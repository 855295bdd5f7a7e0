"""Every data layout becomes (path, label, patient_id); splits are by patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pneumo.datasets import (class_weights, detect_layout, discover, limit_per_class,
                             split_by_patient)
from pneumo.layouts import parse_label, patient_id_from_name
from pneumo.errors import DataError
from pneumo.pipeline import oversample_indices


@pytest.mark.parametrize("name, patient", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person12_virus_44.jpeg", "person12"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("other_name.png", "other_name"),
])
def test_patient_ids_from_kaggle_names(name, patient):
    assert patient_id_from_name(name) == patient


def test_parse_label_accepts_numbers_and_names():
    assert [parse_label(v) for v in (0, 1, "NORMAL", "pneumonia", "1")] == [0, 1, 0, 1, 1]
    with pytest.raises(DataError):
        parse_label("maybe")


def test_class_folders(synthetic_data):
    frame = discover(synthetic_data)
    assert detect_layout(synthetic_data) == "folders"
    assert len(frame) == 48 and frame.label.sum() == 24
    assert frame.patient_id.nunique() == 24  # two films per patient


def test_kaggle_layout_uses_train_for_training_and_test_for_evaluation(tmp_path, synthetic_data):
    import shutil

    for split in ("train", "test"):
        shutil.copytree(synthetic_data, tmp_path / split)
    (tmp_path / "test" / "NORMAL" / "IM-0000-0001.png").unlink()
    assert detect_layout(tmp_path) == "kaggle"
    assert len(discover(tmp_path, "train")) == 48
    test = discover(tmp_path, "evaluate")
    assert len(test) == 47 and all("/test/" in p for p in test.path)


def test_manifest_relative_paths_and_named_labels(tmp_path, synthetic_data):
    files = sorted((synthetic_data / "PNEUMONIA").iterdir())[:3] + sorted(
        (synthetic_data / "NORMAL").iterdir())[:2]
    rows = [{"path": str(p.relative_to(synthetic_data)),
             "label": "PNEUMONIA" if p.parent.name == "PNEUMONIA" else 0,
             "patient_id": f"pid{i}"} for i, p in enumerate(files)]
    csv = synthetic_data / "manifest.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    frame = discover(csv)
    assert detect_layout(csv) == "manifest"
    assert frame.label.tolist() == [1, 1, 1, 0, 0]
    assert frame.patient_id.tolist() == [f"pid{i}" for i in range(5)]
    assert all(Path(p).is_file() for p in frame.path)
    csv.unlink()


def test_manifest_without_label_column_is_refused(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("path\na.png\n")
    with pytest.raises(DataError, match="label"):
        discover(csv)


def write_dicom(path: Path, pixels: np.ndarray, patient: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientID, ds.PatientName = patient, "Doe^Jane"
    ds.Modality, ds.PhotometricInterpretation = "CR", "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_rsna_layout_with_synthetic_dicoms(tmp_path):
    images = tmp_path / "stage_2_train_images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for pid in ("a1", "b2", "c3"):
        write_dicom(images / f"{pid}.dcm", rng.integers(0, 4096, (64, 64)), pid)
    # b2 has two boxes (two rows, Target 1); c3 is listed but has no image; a1 is normal.
    (tmp_path / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\na1,,,,,0\nb2,1,1,5,5,1\nb2,9,9,5,5,1\nc4,,,,,0\n")
    frame = discover(tmp_path)
    assert detect_layout(tmp_path) == "rsna"
    assert dict(zip(frame.patient_id, frame.label)) == {"a1": 0, "b2": 1}
    from pneumo.preprocess import load_model_input

    x = load_model_input(frame.path[0], 32)
    assert x.shape == (32, 32, 3) and x.dtype == np.uint8 and x.max() > 200


def test_unknown_layout_is_explained(tmp_path):
    with pytest.raises(DataError, match="not a known layout"):
        discover(tmp_path)
    with pytest.raises(DataError, match="no such"):
        discover(tmp_path / "missing")


def test_split_keeps_patients_together_and_is_seeded(synthetic_data):
    frame = discover(synthetic_data)
    a = split_by_patient(frame, 0.25, 0.25, seed=1)
    b = split_by_patient(frame, 0.25, 0.25, seed=1)
    c = split_by_patient(frame, 0.25, 0.25, seed=2)
    assert a.equals(b) and not a.split.equals(c.split)
    assert (a.groupby("patient_id").split.nunique() == 1).all()
    for split in ("train", "val", "test"):
        assert set(a[a.split == split].label) == {0, 1}  # stratified by patient label


def test_split_rejects_bad_fractions(synthetic_data):
    with pytest.raises(DataError):
        split_by_patient(discover(synthetic_data), 0.6, 0.5, 0)


def test_limit_per_class_takes_whole_patients_first(synthetic_data):
    frame = limit_per_class(discover(synthetic_data), 6, seed=0)
    assert frame.label.value_counts().to_dict() == {0: 6, 1: 6}
    assert frame.patient_id.nunique() == 6


def test_class_weights_and_oversampling_balance_classes():
    labels = np.array([0] * 10 + [1] * 30)
    w = class_weights(labels)
    assert w[0] * 10 == pytest.approx(w[1] * 30) and w[0] == pytest.approx(2.0)
    idx = oversample_indices(labels, seed=0)
    assert np.bincount(labels[idx]).tolist() == [30, 30]
    with pytest.raises(DataError):
        class_weights(np.ones(5))


def test_no_patient_crosses_splits_on_the_real_data(shared_data):
    train = shared_data / "chest_xray" / "train"
    frame = split_by_patient(discover(train), 0.15, 0.15, seed=42)
    assert len(frame) == 5216
    crossing = frame.groupby("patient_id").split.nunique()
    assert (crossing == 1).all(), crossing[crossing > 1].index.tolist()[:5]
    # byte-identical duplicates are the same patient's film: they must share a split too
    import hashlib

    digests = frame.path.map(lambda p: hashlib.md5(Path(p).read_bytes()).hexdigest())
    dup = frame.assign(d=digests).groupby("d").split.nunique()
    assert (dup == 1).all()
    shares = frame.split.value_counts(normalize=True)
    assert 0.12 < shares["val"] < 0.18 and 0.12 < shares["test"] < 0.18


# --------------------------------------------------------------------------- one layout reader


def _one_level_down(synthetic_data: Path, root: Path) -> Path:
    """The synthetic films in root/site_a/{NORMAL,PNEUMONIA}/ (class folders one level down)."""
    import shutil

    for name in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(synthetic_data / name, root / "site_a" / name)
    return root


def _manifest_with_a_bad_label(synthetic_data: Path, root: Path) -> Path:
    """The synthetic films flat in root/imgs/ with root/list.csv; line 4's label is bad."""
    import shutil

    (root / "imgs").mkdir(parents=True)
    rows = []
    for film in sorted(synthetic_data.rglob("*.png")):
        shutil.copy(film, root / "imgs" / film.name)
        rows.append({"path": f"imgs/{film.name}", "label": film.parent.name,
                     "patient_id": patient_id_from_name(film.name)})
    rows[2]["label"] = "unsure"
    pd.DataFrame(rows).to_csv(root / "list.csv", index=False)
    return root


def _zipped(root: Path) -> Path:
    import zipfile

    archive = root.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(root).as_posix())
    return archive


def test_discover_reads_class_folders_one_level_down_for_training(tmp_path, synthetic_data):
    """Class folders anywhere in the tree (as a ZIP is read): the same table as at the root."""
    frame = discover(_one_level_down(synthetic_data, tmp_path / "films"))
    assert detect_layout(tmp_path / "films") == "folders"
    at_root = discover(synthetic_data)
    assert frame.label.tolist() == at_root.label.tolist()
    assert frame.patient_id.tolist() == at_root.patient_id.tolist()
    assert [Path(p).name for p in frame.path] == [Path(p).name for p in at_root.path]
    assert all(Path(p).is_file() for p in frame.path)


def test_discover_refuses_a_manifest_row_it_cannot_use_naming_its_line(tmp_path, synthetic_data):
    """Training and calibration fit on the table: a manifest with an unusable row is refused
    (evaluate lists the row and scores the rest), every bad row named by its line."""
    root = _manifest_with_a_bad_label(synthetic_data, tmp_path / "site")
    with pytest.raises(DataError, match=r"list\.csv line 4 \(imgs/.*\): label 'unsure'"):
        discover(root / "list.csv")


@pytest.mark.parametrize("make", [_one_level_down, _manifest_with_a_bad_label])
def test_evaluate_scores_a_folder_as_its_zip(make, tmp_path, synthetic_data, tiny_bundle):
    """`pneumo evaluate` on a folder and on the same folder zipped: the same films, labels,
    patients, probabilities, figures and problems ((a) class folders one level down: 48 films;
    (b) a manifest with one bad label: the row listed, the other 47 scored)."""
    from pneumo.evaluate import evaluate
    from pneumo.predict import Predictor

    root = make(synthetic_data, tmp_path / "films")
    archive = _zipped(root)
    predictor = Predictor.load(tiny_bundle)
    data = root / "list.csv" if (root / "list.csv").is_file() else root
    folder, folder_table = evaluate(predictor, data, bootstrap=50, show_progress=False)
    zipped, zip_table = evaluate(predictor, archive, bootstrap=50, show_progress=False)

    def strip(text: str) -> str:
        return text.replace(f"{root}/", "").replace(f"{archive.name}/", "")

    expected = 47 if data.suffix == ".csv" else 48
    assert folder["n"] == zipped["n"] == expected
    assert [strip(u) for u in folder["unreadable"]] == [strip(u) for u in zipped["unreadable"]]
    assert folder["n_unreadable"] == zipped["n_unreadable"] == 48 - expected
    for key in ("auc", "auc_ci", "sensitivity", "specificity", "threshold", "confusion_matrix"):
        assert folder[key] == zipped[key], key
    assert folder_table["path"].map(strip).tolist() == zip_table["path"].map(strip).tolist()
    for column in ("label", "patient_id", "probability", "sha256"):
        assert folder_table[column].tolist() == zip_table[column].tolist(), column
