"""Evaluate-on-your-films, compare and no-verdict: the library parts, TensorFlow-free.

Uploads (every layout, every refusal), scoring with a stub predictor, the paired statistics
against independent computations, the verdict wording and the NOT VALID report.
"""

from __future__ import annotations

import io
import stat
import zipfile
import zlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.errors import DataError, ImageError
from pneumo.layouts import Film
from pneumo.uploads import labelled_films


def make_zip(entries: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:  # a symbolic link member pointing outside
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buf.getvalue()


def names(upload) -> list[tuple[str, int]]:
    return sorted((f.name, f.label) for f in upload.films)


def problems(upload) -> dict[str, str]:
    return {p.name: p.error for p in upload.problems}


# ----------------------------------------------------------------------------- layouts


def test_class_folders_anywhere_in_the_tree_and_unlabelled_files_listed():
    up = labelled_films([("set.zip", make_zip({
        "set/NORMAL/IM-0001-0001.jpeg": b"n", "set/pneumonia/person1_virus_1.jpeg": b"p",
        "set/stray.jpeg": b"?", "set/notes.txt": b"t", "__MACOSX/set/._x": b"junk",
        "set/.DS_Store": b"junk"}))])
    assert names(up) == [("set.zip/set/NORMAL/IM-0001-0001.jpeg", 0),
                         ("set.zip/set/pneumonia/person1_virus_1.jpeg", 1)]
    assert [f.patient_id for f in sorted(up.films, key=lambda f: f.label)] == ["IM-0001",
                                                                               "person1"]
    assert set(problems(up)) == {"set.zip/set/stray.jpeg", "set.zip/set/notes.txt"}
    assert "no label" in problems(up)["set.zip/set/stray.jpeg"]
    assert up.layout == "class folders" and up.counts == {
        "films": 2, "normal": 1, "pneumonia": 1, "problems": 2}
    assert up.films[0].source() in (b"n", b"p")


def test_kaggle_layout_uses_test_split_like_the_cli():
    up = labelled_films([("k.zip", make_zip({
        "chest_xray/train/NORMAL/a.jpeg": b"1", "chest_xray/test/NORMAL/b.jpeg": b"2",
        "chest_xray/test/PNEUMONIA/c.jpeg": b"3"}))])
    assert [n for n, _ in names(up)] == ["k.zip/chest_xray/test/NORMAL/b.jpeg",
                                         "k.zip/chest_xray/test/PNEUMONIA/c.jpeg"]
    assert "test/ split" in problems(up)["k.zip/chest_xray/train/NORMAL/a.jpeg"]


def test_manifest_with_loose_images_and_zipped_images():
    manifest = (b"path,label,patient_id\nimgs/a.png,NORMAL,P1\nb.png,1,P2\n"
                b"missing.png,0,P3\n../../etc/passwd,1,P4\nc.png,maybe,P5\n")
    up = labelled_films([("list.csv", manifest), ("imgs.zip", make_zip({
        "imgs/a.png": b"a", "b.png": b"b", "c.png": b"c", "extra.png": b"e"}))])
    assert up.layout == "CSV manifest"
    assert names(up) == [("imgs.zip/b.png", 1), ("imgs.zip/imgs/a.png", 0)]
    assert {f.patient_id for f in up.films} == {"P1", "P2"}
    found = problems(up)
    assert "not in the upload" in found["missing.png"]
    assert "not in the upload" in found["../../etc/passwd"]  # never resolved outside
    assert "not 0/1" in next(v for k, v in found.items() if "line 6" in k)
    assert "not listed in the manifest" in found["imgs.zip/extra.png"]


def test_rsna_layout():
    labels = b"patientId,x,Target\nabc,1,0\ndef,2,1\ndef,3,0\n"
    up = labelled_films([("r.zip", make_zip({
        "stage_2_train_labels.csv": labels, "stage_2_train_images/abc.dcm": b"d1",
        "stage_2_train_images/def.dcm": b"d2", "stage_2_train_images/zzz.dcm": b"d3"}))])
    assert up.layout == "RSNA"
    assert names(up) == [("r.zip/stage_2_train_images/abc.dcm", 0),
                         ("r.zip/stage_2_train_images/def.dcm", 1)]
    assert "no label" in problems(up)["r.zip/stage_2_train_images/zzz.dcm"]


# ----------------------------------------------------------------------------- folder = its ZIP


def zip_folder(root, out):
    """`root`'s files into the ZIP `out`, paths relative to `root` (as a user zips a folder)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(root).as_posix())
    return out


def as_read(films, problems, prefix: str):
    """Films (relative name, label, patient, bytes) and problems (relative name, reason) with
    the folder's path or the ZIP's name taken off the front, to compare the two readings."""
    def rel(name):
        assert name.startswith(prefix), (name, prefix)
        return name[len(prefix):]

    def content(film):
        src = film.source()
        return src if isinstance(src, bytes) else open(src, "rb").read()

    return ([(rel(f.name), f.label, f.patient_id, content(f)) for f in films],
            sorted((rel(p.name), p.error) for p in problems))


def folder_and_zip(root, tmp_path, data=None):
    """What `pneumo evaluate` reads from `root` (or `data` in it) on disk and from `root`
    zipped."""
    from pneumo.evaluate import _labelled

    archive = zip_folder(root, tmp_path / f"{root.name}.zip")
    films, found, layout = _labelled(data or root)
    zfilms, zfound, zlayout = _labelled(archive)
    assert zlayout == f"ZIP: {layout}"
    return (as_read(films, found, f"{root}/"), as_read(zfilms, zfound, f"{archive.name}/"),
            films)


def test_a_folder_and_its_zip_agree_on_class_folders_one_level_down(tmp_path):
    """The issue's case (a): 40 films in films/site_a/{NORMAL,PNEUMONIA}/ were refused as a
    folder and scored (n = 40) as a ZIP. Now both give the same 40 films, labels, patients,
    and the same two problems."""
    root = tmp_path / "films"
    for label, name in enumerate(("NORMAL", "PNEUMONIA")):
        (root / "site_a" / name).mkdir(parents=True)
        for i in range(20):
            file = f"person{i}_virus_{i}.png" if label else f"IM-{i:04d}-0001.png"
            (root / "site_a" / name / file).write_bytes(b"%d-%d" % (label, i))
    (root / "site_a" / "stray.png").write_bytes(b"?")
    (root / "site_a" / "notes.txt").write_bytes(b"t")
    (root / "site_a" / ".DS_Store").write_bytes(b"junk")
    folder, zipped, films = folder_and_zip(root, tmp_path)
    assert folder == zipped
    read, found = folder
    assert len(read) == 40 and [y for _, y, _, _ in read] == [0] * 20 + [1] * 20
    assert read[0][:3] == ("site_a/NORMAL/IM-0000-0001.png", 0, "IM-0000")
    assert read[20][:3] == ("site_a/PNEUMONIA/person0_virus_0.png", 1, "person0")
    assert [name for name, _ in found] == ["site_a/notes.txt", "site_a/stray.png"]
    assert "no label" in dict(found)["site_a/stray.png"]
    # On disk a film is its path, read when scored: the folder is not loaded into memory.
    assert all(isinstance(f.source(), str) for f in films)


def test_a_folder_and_its_zip_agree_on_a_manifest_with_one_bad_label(tmp_path):
    """The issue's case (b): a CSV manifest of 40 films with one bad label was refused as a
    folder (or CSV) and scored with n = 39 as a ZIP. Now the bad row is a problem with its line
    and reason on both, and the other 39 are read with the manifest's patients."""
    from pneumo.evaluate import _labelled

    root = tmp_path / "site"
    (root / "imgs").mkdir(parents=True)
    rows = ["path,label,patient_id"]
    for i in range(40):
        (root / "imgs" / f"f{i:02d}.png").write_bytes(b"%d" % i)
        rows.append(f"imgs/f{i:02d}.png,{'maybe' if i == 7 else ('NORMAL', 1)[i % 2]},P{i // 2}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    csv, zipped, _ = folder_and_zip(root, tmp_path, root / "list.csv")  # --data site/list.csv
    assert csv == zipped
    read, found = csv
    assert len(read) == 39 and "imgs/f07.png" not in [name for name, *_ in read]
    assert read[:2] == [("imgs/f00.png", 0, "P0", b"0"), ("imgs/f01.png", 1, "P0", b"1")]
    assert found == [("list.csv line 9 (imgs/f07.png)",
                      "label 'maybe' is not 0/1 or NORMAL/PNEUMONIA; not used")]
    # The folder the CSV sits in reads the same (the manifest is its layout).
    films, problems, layout = _labelled(root)
    assert layout == "CSV manifest" and as_read(films, problems, f"{root}/") == csv


# ----------------------------------------------------------------------------- refusals


def test_path_tricks_links_nested_archives_are_refused_by_name():
    up = labelled_films([("t.zip", make_zip({
        "NORMAL/ok.png": b"1", "PNEUMONIA/ok.png": b"2", "../NORMAL/up.png": b"3",
        "/abs/NORMAL/x.png": b"4", "NORMAL/inner.zip": make_zip({"NORMAL/a.png": b"5"})},
        links=("NORMAL/link.png",)))])
    assert [n for n, _ in names(up)] == ["t.zip/NORMAL/ok.png", "t.zip/PNEUMONIA/ok.png"]
    found = problems(up)
    assert "outside the archive" in found["t.zip/../NORMAL/up.png"]
    assert "outside the archive" in found["t.zip//abs/NORMAL/x.png"]
    assert "links" in found["t.zip/NORMAL/link.png"]
    assert "archives inside" in found["t.zip/NORMAL/inner.zip"]


def test_forged_size_is_refused_when_read(monkeypatch):
    data = bytearray(make_zip({"NORMAL/a.png": b"\0" * 5_000, "PNEUMONIA/b.png": b"ok"}))
    # Declare 10 bytes for the 5,000-byte member (local header and central directory).
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig) + offset
        data[at:at + 4] = (10).to_bytes(4, "little")
    up = labelled_films([("forged.zip", bytes(data))])
    film = next(f for f in up.films if f.name.endswith("a.png"))
    with pytest.raises(DataError, match="declares|could not be extracted"):
        film.source()


def test_limits_give_clear_errors(monkeypatch):
    from pneumo import uploads

    entries = {f"NORMAL/{i}.png": b"x" for i in range(6)}
    with pytest.raises(DataError, match="at most 5"):
        labelled_films([("many.zip", make_zip(entries))], max_films=5)
    monkeypatch.setattr(uploads, "MAX_TOTAL_BYTES", 1_000)
    with pytest.raises(DataError, match="over the"):
        labelled_films([("big.zip", make_zip({"NORMAL/a.png": b"\0" * 5_000}))])
    with pytest.raises(DataError, match="no labelled films"):
        labelled_films([("none.zip", make_zip({"a.png": b"1"}))])
    with pytest.raises(DataError, match="not a readable ZIP|no labelled films"):
        labelled_films([("fake.zip", b"PK\x03\x04junk")])


# ----------------------------------------------------------------------------- scoring


class StubResult:
    def __init__(self, probability: float, assessed: bool, threshold: float = 0.5,
                 code: str = "unlike_training"):
        self.probability, self.threshold = probability, threshold
        self.flags = [] if assessed else [{"code": code, "message": "unlike the training films"}]
        self.in_population = self.assessed = assessed
        self.ood_score = 0.5 if assessed else 3.0
        self.population_reasons = [] if assessed else ["unlike the training films"]
        self.reasons = list(self.population_reasons)
        self.review_codes: list[str] = []
        self.label = ("PNEUMONIA" if probability >= threshold else "NORMAL") if assessed \
            else "NOT ASSESSED"


class StubPredictor:
    """predict_batch over bytes b"<probability>" (b"bad" is unreadable, b"ood:" flagged)."""

    name, directory, threshold = "stub", "/stub", 0.5

    def __init__(self):
        self.calls = []
        self.pulled = 0

    def predict_batch(self, sources, cam="none", batch_size=32, names=None):
        self.calls.append(len(sources))
        out = []
        for src in sources:
            if src == b"bad":
                out.append(ImageError("bad: the file is empty"))
            elif src.startswith(b"ood:"):
                out.append(StubResult(float(src[4:]), False))
            elif src.startswith(b"turned:"):
                out.append(StubResult(float(src[7:]), False, code="rotated"))
            else:
                out.append(StubResult(float(src), True))
        return out

    def iter_predict(self, sources, cam="none", batch_size=32, names=None, tta=False):
        for source in sources:  # one at a time: what is pulled shows how lazily it is read
            self.pulled += 1
            yield from self.predict_batch([source])


def stub_films(probs: list[float], labels: list[int]) -> list[Film]:
    return [Film(f"f{i}.png", y, f"P{i}", lambda p=p: str(p).encode())
            for i, (p, y) in enumerate(zip(probs, labels))]


def test_score_films_keeps_order_counts_gate_and_lists_unreadable():
    from pneumo.evaluate import evaluate_films

    rng = np.random.default_rng(0)
    labels = list(rng.integers(0, 2, 70))
    probs = [float(np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2), 0.01, 0.99)) for y in labels]
    films = stub_films(probs, labels)
    films.append(Film("broken.png", 1, "PX", lambda: b"bad"))
    films.append(Film("photo.png", 0, "PY", lambda: b"ood:0.97"))
    seen = []
    stub = StubPredictor()
    ev = evaluate_films(stub, films, name="set", source="set.zip", layout="class folders",
                        bootstrap=200, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(32, 72), (64, 72), (72, 72)]  # the progress moves while films stream
    assert stub.pulled == 72
    assert [p.name for p in ev.problems] == ["broken.png"]
    assert ev.n == 71 and ev.metrics["n_not_assessed"] == 1
    expected = roc_auc_score(labels + [0], probs + [0.97])
    assert ev.metrics["auc"] == pytest.approx(expected, abs=1e-12)
    assert not ev.table.set_index("path").loc["photo.png", "assessed"]


@pytest.mark.parametrize("prefix, shift", [(b"ood:", True), (b"turned:", False)])
def test_evaluation_points_to_calibration_when_most_films_are_unlike_the_training_site(
        prefix, shift):
    """Issue 23: most of an upload refused only as unlike the training films is a site
    difference: the summary says so once and points to calibration; refusals for a named
    reason (here: rotated) are not."""
    from pneumo.evaluate import evaluate_films, summary_lines

    labels = [0, 1] * 5
    films = [Film(f"f{i}.png", y, f"P{i}", lambda i=i, y=y: (prefix if i < 7 else b"")
                  + str(0.2 + 0.6 * y).encode()) for i, y in enumerate(labels)]
    ev = evaluate_films(StubPredictor(), films, name="site", source="site.zip",
                        layout="class folders", bootstrap=50)
    code = "unlike_training" if shift else "rotated"
    assert ev.metrics["n_not_assessed"] == 7 and ev.metrics["not_assessed_reasons"] == {code: 7}
    assert ev.metrics["site_shift"] is shift
    assert list(ev.table["gate_reasons"][:7]) == [code] * 7 and ev.table["gate_reasons"][9] == ""
    text = "\n".join(summary_lines({**ev.metrics, "model": "stub", "data": "site.zip",
                                     "threshold_source": "bundle"}))
    assert f"reason codes: {code} 7" in text
    assert ("Calibrate the model to your site" in text) is shift


def test_errors_at_and_results_csv_at_the_live_threshold():
    from pneumo.evaluate import errors_at, results_csv

    table = pd.DataFrame({"path": ["a", "b", "c", "d", "e"], "patient_id": list("abcde"),
                          "label": [0, 0, 1, 1, 0], "probability": [0.9, 0.6, 0.2, 0.8, 0.95],
                          "assessed": [True, True, True, True, False], "ood_score": [0.5] * 5})
    wrong = errors_at(table, 0.5)
    assert list(wrong["path"]) == ["e", "a", "c", "b"]  # most confident mistake first
    assert list(wrong["error"]) == ["false positive", "false positive", "false negative",
                                    "false positive"]
    assert list(errors_at(table, 0.92)["path"]) == ["c", "d", "e"]
    csv = pd.read_csv(io.BytesIO(results_csv(table, 0.5)))
    assert csv.set_index("path").loc["e", "call"] == "NOT ASSESSED"
    assert list(csv["call"][:4]) == ["PNEUMONIA", "PNEUMONIA", "NORMAL", "PNEUMONIA"]


# ----------------------------------------------------------------------------- compare, stats


def test_paired_auc_difference_against_independent_computations():
    from pneumo.stats import delong_test, paired_auc_difference

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    shared = rng.normal(0, 1, 300)  # film difficulty both models see
    a = 1.2 * y + shared + rng.normal(0, 0.5, 300)
    b = 0.6 * y + shared + rng.normal(0, 0.5, 300)
    out = paired_auc_difference(y, a, b, n_boot=2000)
    truth = roc_auc_score(y, a) - roc_auc_score(y, b)
    assert out["auc_difference"] == pytest.approx(truth, abs=1e-12)
    assert out["ci"][0] < truth < out["ci"][1] and out["ci"][0] > 0
    # The paired bootstrap's spread agrees with DeLong's standard error (±25%).
    assert (out["ci"][1] - out["ci"][0]) / 3.92 == pytest.approx(out["delong_se"], rel=0.25)
    assert out["delong_p"] < 0.01
    same = delong_test(y, a, a)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    with pytest.raises(DataError):
        paired_auc_difference(np.zeros(10), a[:10], b[:10])


def test_compare_tables_disagreements_and_side_by_side():
    from pneumo.compare import compare_tables, side_by_side

    base = dict(patient_id=list("abcd"), label=[0, 1, 1, 0], assessed=[True] * 4,
                ood_score=[0.5] * 4)
    ta = pd.DataFrame({"path": list("abcd"), "probability": [0.2, 0.9, 0.7, 0.6], **base})
    tb = pd.DataFrame({"path": list("dcba"), "probability": [0.1, 0.3, 0.8, 0.4],
                       **{k: v[::-1] for k, v in base.items()}})
    out = compare_tables(ta, tb, 0.5, 0.5, bootstrap=50)
    dis = out["disagreements"].set_index("path")
    assert set(dis.index) == {"c", "d"}  # b: c 0.3 vs 0.7; d 0.1 vs 0.6
    assert dis.loc["c", "right"] == "A" and dis.loc["d", "right"] == "B"
    assert out["a"]["auc"] == roc_auc_score([0, 1, 1, 0], [0.2, 0.9, 0.7, 0.6])
    table = side_by_side(out, ("A", "B"))
    assert table.set_index("metric").loc["threshold", "A"] == "0.5000"


def test_wilson_interval_known_values():
    from pneumo.stats import wilson_interval

    low, high = wilson_interval([0, 5, 10], [10, 10, 10])
    assert low[0] == 0 and high[0] == pytest.approx(0.2775, abs=1e-3)
    assert (low[1], high[1]) == pytest.approx((0.2366, 0.7634), abs=1e-3)
    assert np.isnan(wilson_interval([0], [0])[0][0])


# ----------------------------------------------------------------------------- verdict, report


def test_verdict_wording_and_record():
    from pneumo import verdict

    flagged = StubResult(0.997, False)
    flagged.to_dict = lambda: {"probability": 0.997, "label": "NOT ASSESSED"}
    assert verdict.display_label(flagged) == verdict.NOT_ASSESSED_LABEL
    assert verdict.population_reasons(flagged) == ["unlike the training films"]
    record = verdict.record(flagged)
    assert record["probability"] is None and record["label"] == "NOT ASSESSED"
    assert list(record)[:2] == ["assessed", "population_reasons"]  # the warning first
    assert verdict.record(flagged, show_probability=True)["probability"] == 0.997
    ok = StubResult(0.2, True)
    assert verdict.display_label(ok) == "NORMAL" and verdict.is_assessed(ok)
    assert [verdict.format_probability(p) for p in (1.0, 0.99949, 0.0, 0.0004, 0.5)] == [
        ">99.9%", "99.9%", "<0.1%", "<0.1%", "50.0%"]


def test_review_flags_come_from_codes_not_from_the_words():
    """The gate's reasons and the review reasons stay apart whatever their words: a gate
    message that begins like a review sentence is still the gate's, and the short flag is
    built from the codes."""
    from pneumo import verdict
    from pneumo.predict import PredictionResult

    lookalike = "The probability is close to the decision threshold of another model."
    refused = PredictionResult(0.9, "NOT ASSESSED", 0.5, False, 3.0, 0.0, True,
                               reasons=[lookalike], population_reasons=[lookalike])
    assert verdict.population_reasons(refused) == [lookalike]
    assert verdict.review_reasons(refused) == [] and verdict.review_flag(refused) == ""
    flagged = PredictionResult(0.55, "PNEUMONIA", 0.5, True, 0.4, 0.2, True,
                               review_codes=["near_threshold", "heat_off_lungs"])
    assert verdict.review_flag(flagged) == (
        "Needs a second look: close to the threshold; heat off the lungs")
    assert verdict.review_reasons(flagged)[1] == verdict.REVIEW["heat_off_lungs"][0]
    assert verdict.population_reasons(flagged) == []


def test_user_message_drops_decoder_text():
    from pneumo.verdict import user_message

    text = user_message(ImageError("x.jpg: the JPEG file is truncated or corrupt (image file "
                                   "is truncated (13 bytes not processed))"))
    assert "bytes not processed" not in text and text.startswith("x.jpg: the JPEG file")
    assert "Export" in text


def _pdf_text(pdf: bytes) -> str:
    """The strings the PDF shows (its `(...) Tj` operators), not its drawing coordinates."""
    import re

    text = []
    for chunk in pdf.split(b"stream")[1:]:
        try:
            text.append(zlib.decompress(chunk.split(b"endstream")[0].strip(b"\r\n"))
                        .decode("latin-1"))
        except zlib.error:
            pass
    return " ".join(re.findall(r"\((.*?)\)\s*Tj", " ".join(text)))


def test_not_valid_report_carries_no_result():
    import datetime as dt

    from pneumo.report import build_report_pdf, build_report_png

    gray = np.linspace(0, 1, 200 * 300, dtype=np.float32).reshape(200, 300)
    heat = np.full((200, 300, 3), 200, np.uint8)
    when = dt.datetime(2026, 11, 25, 16, 40, tzinfo=dt.timezone.utc)
    kw = dict(probability=0.997, threshold=0.5, model_name="resnet-x", assessed=False,
              flags=["This is a colour picture, not a radiograph."], analysed_at=when,
              model_hash="0123456789ab", label="PNEUMONIA")
    text = _pdf_text(build_report_pdf(gray, heat, **kw))
    assert "NOT VALID" in text and "colour picture" in text
    for result_text in ("99.7", ">99.9", "PNEUMONIA", "NORMAL", "Result:", "Heatmap"):
        assert result_text not in text, result_text
    assert "2026-11-25 16:40" in text and "0123456789ab" in text
    valid = _pdf_text(build_report_pdf(gray, heat, **{**kw, "assessed": True}))
    assert ">99.9%" not in valid and "99.7%" in valid and "Result: PNEUMONIA" in valid
    png_valid = build_report_png(gray, heat, **{**kw, "assessed": True})
    png_invalid = build_report_png(gray, heat, **kw)
    assert len(png_invalid) < len(png_valid)  # no heatmap panel, no bar


def test_heatmap_outside_lungs_note():
    from pneumo.heatcheck import hottest_outside_lungs

    yy, xx = np.mgrid[0:200, 0:200] / 200
    lung = np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.01)
    marker = np.exp(-((xx - 0.05) ** 2 + (yy - 0.05) ** 2) / 0.002)  # "A-P R" corner
    assert not hottest_outside_lungs(lung)
    assert hottest_outside_lungs(marker)
    assert not hottest_outside_lungs(np.zeros((50, 50)))
    assert not hottest_outside_lungs(None)


# ----------------------------------------------------------------------------- fuzzing uploads

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as hst  # noqa: E402

ZIP_SEED = make_zip({"set/NORMAL/a.png": b"\x89PNG" + b"a" * 300,
                     "set/PNEUMONIA/b.png": b"\x89PNG" + b"b" * 300,
                     "list.csv": b"path,label\nset/NORMAL/a.png,0\nset/PNEUMONIA/b.png,1\n"})


@settings(max_examples=200, derandomize=True, deadline=2000, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(hst.lists(hst.tuples(hst.integers(0, len(ZIP_SEED) - 1), hst.integers(0, 255)),
                 min_size=1, max_size=8),
       hst.integers(0, len(ZIP_SEED)))
def test_damaged_zips_give_films_or_a_clear_error(flips, cut):
    """Whatever the bytes, `labelled_films` and reading every film give results or a
    DataError, never another exception."""
    data = bytearray(ZIP_SEED[:max(cut, 4)])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    try:
        upload = labelled_films([("fuzz.zip", bytes(data))])
    except DataError as exc:
        assert str(exc)
        return
    for film in upload.films:
        try:
            assert isinstance(film.source(), bytes)
        except DataError as exc:
            assert str(exc).startswith(film.name)


# ----------------------------------------------------------------------------- figures


def test_calibration_bins_carry_n_and_ci_and_small_bins_are_faint():
    from app.charts import FAINT_BELOW, reliability_figure
    from pneumo.metrics import reliability_curve
    from pneumo.stats import wilson_interval

    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.0, 0.1, 200), rng.uniform(0.5, 0.6, 4)])
    y = (rng.random(len(p)) < p).astype(int)
    curve = reliability_curve(y, p, 10)
    curve["low"], curve["high"] = wilson_interval(
        np.rint(curve["fraction_positive"] * curve["count"]), curve["count"])
    fig = reliability_figure(curve, y, p, "test films, n = 204")
    markers = {t.name: t for t in fig.data if getattr(t, "mode", None) == "markers+text"}
    faint = markers[f"bins under {FAINT_BELOW} films"]
    assert faint.marker.opacity == 0.3 and list(faint.text) == ["n=4"]
    solid = markers["model (95% CI)"]
    assert solid.marker.opacity == 1.0 and "n=200" in solid.text
    assert solid.error_y.array[0] > 0 and fig.layout.title.text == "test films, n = 204"


def test_training_figure_marks_restored_epochs_and_names_splits():
    from app.charts import training_figure

    history = pd.DataFrame({"stage": ["head"] * 3 + ["fine"] * 3, "epoch": [1, 2, 3] * 2,
                            "loss": np.linspace(1, 0.4, 6), "val_loss": [.9, .7, .8, .6, .5, .55]})
    fig = training_figure(history, "loss", "validation (783 films)", {"head": 2, "fine": 2},
                          "train (3656 films)")
    star = next(t for t in fig.data if t.name == "restored best epoch")
    assert list(star.x) == [2, 5] and list(star.y) == [0.7, 0.5]
    assert {t.name for t in fig.data} >= {"validation (783 films)", "train (3656 films)"}
    assert fig.layout.yaxis.title.text.startswith("loss")


def test_gauge_has_no_number_and_greys_out_when_not_valid():
    from app.charts import GREY, probability_gauge

    fig = probability_gauge(0.9996, 0.5)
    assert fig.data[0].mode == "gauge"  # the metric beside it shows ">99.9%", not "100.0"
    assert probability_gauge(0.9, 0.5, valid=False).data[0].gauge.bar.color == GREY


def test_training_time_breakdown_adds_up():
    from app.training import time_breakdown

    timing = {"total_seconds": 3747.6, "decode_seconds": 56.9, "cache_seconds": 2011.8,
              "stages": [{"name": "head", "seconds": 297.8},
                         {"name": "finetune_conv5", "seconds": 1281.4}]}
    table = time_breakdown(timing)
    assert list(table["step"]) == ["decode the images", "feature cache (frozen layers, once)",
                                   "stage head", "stage finetune_conv5",
                                   "other (splitting, set-up)"]
    assert table["seconds"].sum() == pytest.approx(3747.6)
    assert time_breakdown({"stages": []}).empty


def test_several_zips_uploaded_together_make_one_set():
    up = labelled_films([("part1.zip", make_zip({"NORMAL/a.png": b"1"})),
                         ("part2.zip", make_zip({"PNEUMONIA/b.png": b"2"})),
                         ("c.png", b"3")])
    assert names(up) == [("part1.zip/NORMAL/a.png", 0), ("part2.zip/PNEUMONIA/b.png", 1)]
    assert up.source == "part1.zip, part2.zip, c.png" and "no label" in problems(up)["c.png"]


def test_evaluation_knows_the_films_the_model_learned_from(tmp_path):
    """Issue 19 (4): films in the bundle's split.csv (train/val) or site_predictions.csv are
    counted by how they were used, warned about, and the figures without them are given; its
    internal test films are not "seen" (never learned from)."""
    from pneumo.evaluate import evaluate_films, summary_lines

    labels = [0, 1] * 10
    probs = [0.9 if y else 0.1 for y in labels]
    probs[:4] = [0.6, 0.4, 0.6, 0.4]  # the 4 seen films are the ones it gets wrong
    films = stub_films(probs, labels)
    pd.DataFrame({"path": ["../x/train/NORMAL/f0.png", "../x/train/PNEUMONIA/f1.png",
                           "../x/train/NORMAL/f4.png"],
                  "label": [0, 1, 0], "patient_id": ["P0", "P1", "P4"],
                  "split": ["train", "val", "test"]}).to_csv(tmp_path / "split.csv", index=False)
    pd.DataFrame({"path": ["C:\\site\\NORMAL\\f2.png", "/site/PNEUMONIA/f3.png"],
                  "label": [0, 1], "patient_id": ["P2", "P3"]}).to_csv(
        tmp_path / "site_predictions.csv", index=False)
    stub = StubPredictor()
    stub.directory = tmp_path
    ev = evaluate_films(stub, films, name="mine", source="mine.zip", layout="class folders",
                        bootstrap=50)
    m = ev.metrics
    assert m["n_seen"] == 4 and m["seen"] == {"training": 1, "validation (threshold)": 1,
                                              "site calibration": 2}
    assert list(ev.table["seen"][:5]) == ["training", "validation (threshold)",
                                          "site calibration", "site calibration", ""]
    assert m["accuracy"] == pytest.approx(16 / 20) and m["without_seen"]["n"] == 16
    assert m["without_seen"]["accuracy"] == 1.0
    text = "\n".join(summary_lines({**m, "model": "stub", "data": "mine", "threshold_source": "b"}))
    assert "WARNING: 4 of these 20 films were used to fit this model" in text
    assert "without them (16 films)" in text


def test_duplicates_within_an_upload_are_named():
    from pneumo.evaluate import evaluate_films

    labels = [0, 1] * 6
    films = stub_films([0.2 + 0.6 * y for y in labels], labels)
    films.append(Film("copy-of-f0.png", 0, "PC", films[0].source))
    ev = evaluate_films(StubPredictor(), films, name="d", source="d.zip", layout="class folders",
                        bootstrap=20)
    # The stub's films are their probability's bytes: every normal film is the one file
    # b"0.2" (7 names), every pneumonia film b"0.8" (6 names).
    assert ev.metrics["n_duplicates"] == 6 + 5 and len(ev.metrics["duplicates"]) == 2
    assert ["f0.png", "f2.png", "f4.png", "f6.png", "f8.png", "f10.png",
            "copy-of-f0.png"] in ev.metrics["duplicates"]
