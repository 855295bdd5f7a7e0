"""pneumo.population.PopulationGate on synthetic features and images (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.errors import BundleError, DataError
from pneumo.population import (ORIENTATIONS, PopulationGate, header_flags, image_flags,
                               turned_back_inputs)

D = 16


@pytest.fixture(scope="module")
def worlds():
    """Children: a Gaussian; adults: a shifted Gaussian; other images: far away."""
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.5, 2.0, D))
    child = lambda n: rng.multivariate_normal(np.zeros(D), cov, n)  # noqa: E731
    adult = lambda n: rng.multivariate_normal(np.r_[4.0, np.zeros(D - 1)], cov, n)  # noqa: E731
    return {"train": child(3000), "val": child(800), "new_children": child(4000),
            "adults_a": adult(60), "adults_b": adult(400),
            "other": rng.normal(6.0, 1.0, (200, D))}


@pytest.fixture(scope="module")
def gate(worlds):
    return PopulationGate.fit("conv4_block6_out", worlds["train"], worlds["val"],
                              worlds["adults_a"], percentile=99.5)


def test_in_population_flag_rate_follows_the_percentile(gate, worlds):
    # Two cut-offs at the 99.5th percentile each: about 1% of new in-population rows at most.
    assert 0.002 <= gate.flag_rate(worlds["new_children"]) <= 0.02


def test_adult_detector_generalises_to_unseen_adults_and_words_it_as_a_possibility(gate, worlds):
    flags = gate.feature_flags(worlds["adults_b"])
    assert np.mean([any(f.code == "possibly_adult" for f in fl) for fl in flags]) >= 0.9
    first = next(fl for fl in flags if fl)[0]
    assert first.code == "possibly_adult" and first.score > first.cutoff
    # Never a bare assertion of age: the other possibility (another hospital) is named beside it.
    assert "possibly an adult" in first.message and "hospital" in first.message


def test_far_images_are_unlike_the_training_films_never_not_a_chest_film(gate, worlds):
    flags = gate.feature_flags(worlds["other"])
    assert all(any(f.code == "unlike_training" for f in fl) for fl in flags)
    message = next(f for f in flags[0] if f.code == "unlike_training").message
    assert "not validated" in message and "another hospital" in message
    assert np.all(gate.ood_score(worlds["other"]) > 1.0)


@pytest.mark.parametrize("back", [0, 1, 2, 3])
def test_a_far_film_whose_turned_back_copy_is_near_is_named_by_that_turn(gate, worlds, back):
    """Copies in `ORIENTATIONS[1:]` order: the one that comes back near the children names the
    film's orientation (rotated with the angle, or inverted)."""
    film = worlds["other"][0]
    copies = worlds["other"][1:5].copy()
    copies[back] = worlds["new_children"][0]
    flag = gate.orientation_flag(film, copies)
    name = ORIENTATIONS[1 + back]
    assert flag is not None and flag.code == ("inverted" if name == "inverted" else "rotated")
    words = {"rotated_90": "90 degrees clockwise", "rotated_180": "upside down",
             "rotated_270": "90 degrees anticlockwise", "inverted": "inverted"}[name]
    assert words in flag.message and flag.score < flag.cutoff


def test_a_far_film_that_stays_far_whichever_way_it_is_turned_is_not_named(gate, worlds):
    assert gate.orientation_flag(worlds["other"][0], worlds["other"][1:5]) is None
    # An upright adult film: its turned copies are all further away, so no turn is named.
    assert gate.orientation_flag(worlds["adults_b"][0], worlds["other"][5:9]) is None


def test_turned_back_inputs_undo_each_turn_and_the_inversion():
    rng = np.random.default_rng(3)
    upright = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    turned = {"rotated_90": np.rot90(upright, -1), "rotated_180": np.rot90(upright, 2),
              "rotated_270": np.rot90(upright, 1), "inverted": 255 - upright}
    for k, name in enumerate(ORIENTATIONS[1:]):
        back = turned_back_inputs(turned[name])
        assert back.shape == (4, 8, 8, 3) and back.dtype == np.uint8
        assert np.array_equal(back[k], upright), name
        assert not any(np.array_equal(back[j], upright) for j in range(4) if j != k), name


@pytest.mark.parametrize("tags, code, words", [
    ({"Modality": "CT"}, "modality", "a CT image (DICOM Modality CT)"),
    ({"Modality": "MR"}, "modality", "an MR image (DICOM Modality MR)"),
    ({"Modality": "US"}, "modality", "ultrasound"),
    ({"Modality": "DX", "ViewPosition": "LL"}, "lateral", "lateral view"),
    ({"Modality": "CR", "BodyPartExamined": "HAND"}, "body_part", "HAND"),
])
def test_dicom_header_names_modality_view_and_body_part(tags, code, words):
    flags = header_flags(tags)
    assert [f.code for f in flags] == [code] and words in flags[0].message
    assert flags[0].score is None and "reason code: " + code in flags[0].text()


@pytest.mark.parametrize("tags", [{}, None, {"Modality": "CR", "ViewPosition": "PA",
                                             "BodyPartExamined": "CHEST"},
                                  {"Modality": "DX", "ViewPosition": "AP"}, {"Modality": "OT"}])
def test_dicom_header_of_a_frontal_chest_radiograph_says_nothing(tags):
    assert header_flags(tags) == []


def test_ood_score_above_one_exactly_when_a_feature_flag_fires(gate, worlds):
    rows = np.vstack([worlds["new_children"][:300], worlds["adults_b"][:100], worlds["other"][:50]])
    fired = np.array([bool(f) for f in gate.feature_flags(rows)])
    assert np.array_equal(gate.ood_score(rows) > 1.0, fired) and fired.any() and not fired.all()


def test_gate_without_adult_films_still_works(worlds):
    gate = PopulationGate.fit("conv4_x_out", worlds["train"], worlds["val"], None)
    assert gate.adult is None and gate.describe()["adult_detector"] is None
    assert gate.flag_rate(worlds["other"]) == 1.0


def test_site_cutoffs_only_ever_loosen(gate, worlds):
    import copy

    site = worlds["new_children"][:400] * 1.3  # a site whose films spread a little wider
    refit = copy.deepcopy(gate)
    refit.set_cutoffs(site, "site", keep_higher=True)
    assert refit.distance.threshold >= gate.distance.threshold
    assert refit.adult.cutoff >= gate.adult.cutoff
    assert refit.flag_rate(site) <= gate.flag_rate(site)
    assert refit.cutoff_source[-1] == "site (400 films)"


def test_save_load_round_trip(gate, worlds, tmp_path):
    path = gate.save(tmp_path / "gate.npz")
    again = PopulationGate.load(path)
    rows = np.vstack([worlds["adults_b"][:50], worlds["other"][:20], worlds["val"][:50]])
    assert np.allclose(again.ood_score(rows), gate.ood_score(rows))
    assert again.feature_flags(rows) == gate.feature_flags(rows)
    assert again.describe() == gate.describe()
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickle
        assert "adult_coef" in data.files


def test_load_rejects_garbage_and_the_old_format(gate, tmp_path):
    from pneumo.gate import MahalanobisGate
    from pneumo.predict import load_gate

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="corrupt"):
        PopulationGate.load(tmp_path / "junk.npz")
    old = MahalanobisGate.fit(np.random.default_rng(1).normal(size=(50, 4))).save(
        tmp_path / "old.npz")
    with pytest.raises(BundleError, match="older pneumo"):
        PopulationGate.load(old)
    assert isinstance(load_gate(old), MahalanobisGate)  # old bundles still serve
    assert isinstance(load_gate(gate.save(tmp_path / "new.npz")), PopulationGate)


def test_wrong_dimension_is_a_data_error(gate):
    with pytest.raises(DataError, match="columns"):
        gate.feature_flags(np.zeros((2, D + 1)))


def _film(h=400, w=500, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.clip(0.45 + 0.2 * np.sin(8 * xx) * np.cos(6 * yy)
                   + 0.05 * rng.standard_normal((h, w)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("case, pixels, colour, code", [
    ("colour photo", _film(), 0.3, "colour"),
    ("blank", np.full((400, 400), 0.5, np.float32), 0.0, "blank"),
    ("thumbnail", _film(100, 120), 0.0, "too_small"),
    ("strip", _film(150, 900), 0.0, "too_small"),
    ("black", _film() * 0.05, 0.0, "exposure"),
    ("white", 1.0 - _film() * 0.05, 0.0, "exposure"),
])
def test_image_rules_name_what_is_wrong(case, pixels, colour, code):
    flags = image_flags(pixels, colour, 224)
    assert code in [f.code for f in flags], case
    assert all(f.message and np.isfinite(f.score) for f in flags)
    assert all(f.text().endswith(f"(reason code: {f.code})") for f in flags)
    assert all(f.detail().startswith(f"{f.code}: score ") for f in flags)


def test_image_rules_pass_a_film_shaped_image():
    assert image_flags(_film(1400, 1700), 0.0, 224) == []
    assert image_flags(_film(224, 224), 0.0, 224) == []  # the training films' own size


def test_population_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import pneumo.population, sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
