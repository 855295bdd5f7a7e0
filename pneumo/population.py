"""The out-of-population gate: may the model judge this image at all?

The classifier knows one population: frontal chest films of children aged 1-5 from one
hospital. The gate refuses everything else, with a reason a person can act on. It reads the
pooled output of the last conv4 block, from the same forward pass as the prediction, and the
decoded image itself:

1. **Image rules** (no model): a colour picture, a blank frame, an image too small or too
   oddly shaped to be a film, an exposure no radiograph has.
   Plus the DICOM header where there is one: a modality that is not a radiograph (CT, MR,
   US, ...), a lateral view, another body part.
2. **"Unlike the films the model was trained and checked on"** (`unlike_training`): a
   Mahalanobis distance (Ledoit-Wolf covariance, `pneumo.gate.MahalanobisGate`) to the training
   films' conv4 features. conv4 and not the fine-tuned conv5 features, because fine-tuning for
   pneumonia teaches conv5 to ignore exactly what sets other images apart; measured
   (docs/experiments.md): conv5 let 55% of inverted films and most adult films through, conv4
   none of the inverted films. Far is not "not a chest film": chest films of another hospital
   are far too, so the words name the possibilities and say the score is not validated.
3. **Orientation** (`rotated`, `inverted`): a far film is turned back by 90/180/270 degrees
   and inverted (`turned_back_inputs`, one more forward pass of four rows, only for films the
   distance refused); when one copy is near the training films, the film is named turned by
   that angle, or inverted. No classifier to fit: the check is the distance itself.
4. **"Possibly an adult chest film"** (`possibly_adult`): a logistic regression, training films
   against adult chest films (outlier exposure), on the same standardised conv4 features. It was
   fitted on children of one hospital against adults of other hospitals, so it may have learned
   the hospital as much as the age: it is worded as a possibility, with the other one beside it.

Every cut-off is set on in-population films only (the validation split, and a site's own
films when `pneumo calibrate` refits it): the `percentile`-th percentile of their scores,
never on the films used to report the flag rates. numpy + scikit-learn: no TensorFlow import.

One piece (over 300 lines): the image rules, the distance gate and the adult
detector are fitted, saved, loaded and applied together as one `PopulationGate` with one file
format.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import BundleError, DataError
from .fileio import save_npz_atomic
from .gate import MahalanobisGate, _read_npz
from .layers import GATE_STAGE_PREFIX

__all__ = ["PopulationGate", "Flag", "image_flags", "header_flags", "turned_back_inputs",
           "GATE_LAYER_PREFIX", "ORIENTATIONS"]

FORMAT_VERSION = 2
_KIND = "population_gate"
GATE_LAYER_PREFIX = GATE_STAGE_PREFIX  # the gate reads the last block of this stage, pooled
# Image rules. Full-size paediatric films are 0.9-1.8 wide per tall (the 16 official val films:
# 1.12-1.73); a film is never much smaller than the model input (under 150 px on its short side
# for 224 px: a thumbnail or a crop); exposure: mean brightness of a chest film lies far inside
# (0.06, 0.94).
MIN_SIDE_FRACTION = 0.67  # of the model's input size
ASPECT_RANGE = (0.5, 2.5)
EXPOSURE_RANGE = (0.06, 0.94)
# Beyond this multiple of the distance cut-off an image is far from every chest film, and the
# adult detector - trained on chest films only - has nothing to say about it (it called text
# screenshots "adult"). Adult films sat at 0.86-1.41x (5th-95th percentile), text, noise,
# faces, charts and CT at 2.5-9x.
FAR_RATIO = 2.0
COLOUR_LIMIT = 0.08  # mean chroma above this is a colour picture, not a radiograph
BLANK_LIMIT = 0.02  # pixel standard deviation below this is a blank frame


# A radiograph's DICOM modality: computed / digital radiography (RG: radiographic imaging).
RADIOGRAPH_MODALITIES = {"CR", "DX", "RG", "DR"}
MODALITY_NAMES = {"CT": "a CT image", "MR": "an MR image", "US": "an ultrasound image",
                  "NM": "a nuclear-medicine image", "PT": "a PET image", "MG": "a mammogram",
                  "XA": "an angiogram", "RF": "a fluoroscopy image", "OP": "an eye photograph",
                  "SM": "a microscopy slide", "ES": "an endoscopy image", "IO": "an intra-oral "
                  "radiograph", "PX": "a panoramic dental radiograph", "OCT": "an OCT image"}
NON_IMAGE_MODALITIES = {"SR", "PR", "KO", "DOC", "REG", "SEG", "RTSTRUCT", "RTPLAN"}
LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"}
CHEST_PARTS = {"CHEST", "THORAX", "LUNG", "PORT CHEST", "TORAX", "THORAX_CHEST"}
ORIENTATIONS = ("upright", "rotated_90", "rotated_180", "rotated_270", "inverted")
ORIENTATION_WORDS = {
    "rotated_90": ("rotated", "This film appears turned 90 degrees clockwise: turn it upright "
                   "(90 degrees anticlockwise) and upload it again."),
    "rotated_180": ("rotated", "This film appears upside down (turned 180 degrees): turn it "
                    "upright and upload it again."),
    "rotated_270": ("rotated", "This film appears turned 90 degrees anticlockwise: turn it "
                    "upright (90 degrees clockwise) and upload it again."),
    "inverted": ("inverted", "This film appears inverted (a negative: bone dark, lungs and "
                 "air bright): export it with the usual grey scale and upload it again."),
}
UNLIKE_TRAINING = ("This film is unlike the films the model was trained and checked on (another "
                   "hospital or scanner, another age group, or another view): its score is not "
                   "validated.")
POSSIBLY_ADULT = ("This is possibly an adult chest film, or a child's film from a hospital or "
                  "scanner the model has not seen: the model is validated for children aged "
                  "1-5 of one hospital.")
# A far film is named turned (or inverted) when a turned-back copy is near the training films
# and much nearer than the film: a turned training film comes back to its own distance (~0.6-1x
# the cut-off); an upright film of another hospital only moves further away when turned.
NEAR_UPRIGHT = 1.5  # times the distance cut-off
CLOSER_BY = 0.6  # the copy's distance over the film's


def turned_back_inputs(x: np.ndarray) -> np.ndarray:
    """The model input (S, S, C) turned back from each of `ORIENTATIONS[1:]`: a film turned
    90 degrees clockwise comes back by 90 anticlockwise, and so on; an inverted one inverted
    again. Turning and inverting the squashed, JPEG-passed input is what the preprocessing of
    the turned-back film gives (90-degree turns and inversion commute with both, up to
    rounding), so no second decode is needed. Returns (4, S, S, C), same dtype."""
    back = [np.rot90(x, 1), np.rot90(x, 2), np.rot90(x, -1)]
    top = 255 if x.dtype == np.uint8 else 1.0
    return np.ascontiguousarray(np.stack(back + [(top - x).astype(x.dtype)]))


@dataclass(frozen=True)
class Flag:
    """One reason the gate refused an image: a code, plain words, the score and its cut-off
    (None for a fact read from the file, such as a DICOM modality)."""

    # possibly_adult | unlike_training | rotated | inverted | modality | lateral | body_part |
    # colour | blank | too_small | exposure
    code: str
    message: str
    score: float | None = None
    cutoff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        rounded = {k: (None if v is None else round(float(v), 4))
                   for k, v in (("score", self.score), ("cutoff", self.cutoff))}
        return {"code": self.code, "message": self.message, **rounded}

    def text(self) -> str:
        """The message with its code: what the app, the report and the Batch CSV show (raw
        scores are for the curious: `detail`, and `to_dict` in the CLI's JSON)."""
        return f"{self.message} (reason code: {self.code})"

    def detail(self) -> str:
        """Code, score and cut-off in a few words ("" for a fact read from the file)."""
        if self.score is None or self.cutoff is None:
            return ""
        return f"{self.code}: score {self.score:.3g}, cut-off {self.cutoff:.3g}"


def header_flags(technical: dict[str, Any] | None) -> list[Flag]:
    """What a DICOM header says outright: a modality that is not a radiograph, a lateral view,
    another body part. An absent or empty tag says nothing (most exports carry none)."""
    technical = technical or {}
    flags = []
    modality = str(technical.get("Modality") or "").strip().upper()
    if modality and modality not in RADIOGRAPH_MODALITIES and modality != "OT":
        what = MODALITY_NAMES.get(modality, "not an image" if modality in NON_IMAGE_MODALITIES
                                  else f"a {modality} image")
        flags.append(Flag("modality", f"This is {what} (DICOM Modality {modality}), not a "
                          "radiograph: the model reads frontal chest radiographs only."))
    view = str(technical.get("ViewPosition") or "").strip().upper()
    if view in LATERAL_VIEWS:
        flags.append(Flag("lateral", f"This is a lateral view (DICOM ViewPosition {view}): the "
                          "model reads frontal (AP or PA) chest films only."))
    part = str(technical.get("BodyPartExamined") or "").strip().upper()
    if part and part not in CHEST_PARTS:
        flags.append(Flag("body_part", f"The DICOM header names another body part "
                          f"(BodyPartExamined {part}): the model reads chest films only."))
    return flags


def image_flags(pixels: np.ndarray, colourfulness: float, image_size: int = 224) -> list[Flag]:
    """The rules that need no model, on the decoded grayscale image in [0, 1] (H, W)."""
    flags = []
    h, w = pixels.shape[:2]
    min_side = round(MIN_SIDE_FRACTION * image_size)
    # Brightness and spread from a strided sample (~256 px a side): the whole 1700 px film
    # cost ~5 ms of a prediction for the same answer to two decimals.
    step = max(1, min(h, w) // 256)
    # One SIMD pass for both figures (cv2.meanStdDev, float64 sums): half numpy's two passes.
    mean_, std_ = cv2.meanStdDev(np.ascontiguousarray(pixels[::step, ::step], dtype=np.float32))
    mean, spread = float(mean_[0, 0]), float(std_[0, 0])
    if colourfulness > COLOUR_LIMIT:
        flags.append(Flag("colour", "This is a colour picture, not a radiograph.",
                          float(colourfulness), COLOUR_LIMIT))
    if spread < BLANK_LIMIT:
        flags.append(Flag("blank", "The image is almost uniform (blank): there is nothing to "
                          "assess.", spread, BLANK_LIMIT))
    if min(h, w) < min_side:
        flags.append(Flag("too_small", f"The image is too small ({w}x{h} px) to be a film: "
                          "upload the original, not a thumbnail or a crop.", float(min(h, w)),
                          float(min_side)))
    aspect = w / h
    if not ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1]:
        flags.append(Flag("too_small", f"The image is cropped or oddly shaped (width/height "
                          f"{aspect:.2f}): upload the whole film.", aspect,
                          ASPECT_RANGE[0] if aspect < ASPECT_RANGE[0] else ASPECT_RANGE[1]))
    if not EXPOSURE_RANGE[0] <= mean <= EXPOSURE_RANGE[1]:
        flags.append(Flag("exposure", f"Unusual exposure (mean brightness {mean:.2f}): the film "
                          "is almost all black or all white.", mean,
                          EXPOSURE_RANGE[0] if mean < EXPOSURE_RANGE[0] else EXPOSURE_RANGE[1]))
    return flags


def _as_rows(features: Any, dim: int) -> np.ndarray:
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise DataError(f"gate features must have {dim} columns, got shape {np.shape(features)}")
    return arr


@dataclass
class AdultDetector:
    """Logistic regression, training films (0) against adult films (1), on standardised features."""

    centre: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    cutoff: float = math.inf
    n_adult: int = 0

    @classmethod
    def fit(cls, children: np.ndarray, adults: np.ndarray, c: float = 0.01) -> "AdultDetector":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x = np.vstack([children, adults])
        y = np.r_[np.zeros(len(children)), np.ones(len(adults))]
        scaler = StandardScaler().fit(x)
        # Balanced: a few dozen adult films against thousands of children must still count.
        lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
        lr.fit(scaler.transform(x), y)
        return cls(scaler.mean_, np.where(scaler.scale_ > 0, scaler.scale_, 1.0), lr.coef_[0],
                   float(lr.intercept_[0]), n_adult=len(adults))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Log-odds of 'adult' per row."""
        return ((features - self.centre) / self.scale) @ self.coef + self.intercept


@dataclass
class PopulationGate:
    """Header and image rules + conv4 distance + adult detector; see the module docstring."""

    layer: str
    distance: MahalanobisGate
    adult: AdultDetector | None = None
    percentile: float = 99.5
    n_reference: int = 0
    cutoff_source: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return self.distance.dim

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, layer: str, train: np.ndarray, held_out: np.ndarray,
            adults: np.ndarray | None = None, percentile: float = 99.5,
            held_out_name: str = "validation split") -> "PopulationGate":
        """Fit on training-film features; set cut-offs on held-out in-population films.

        Args:
            layer: the layer whose pooled output `train` holds (recorded for serving).
            train: (n, d) pooled features of training films.
            held_out: (m, d) of in-population films not in `train` (the validation split).
            adults: (k, d) of adult chest films, or None to go without the adult detector.
            percentile: of in-population scores, for each cut-off (99.5: ~0.5% flagged each).
        """
        train = _as_rows(train, np.shape(train)[-1])
        held_out = _as_rows(held_out, train.shape[1])
        if len(held_out) < 5:  # smoke runs have a dozen; a real split has hundreds
            raise DataError(f"setting the gate's cut-offs needs >= 5 in-population films, got "
                            f"{len(held_out)}")
        distance = MahalanobisGate.fit(train, percentile)
        adult = None
        if adults is not None and len(adults):
            adult = AdultDetector.fit(train, _as_rows(adults, train.shape[1]))
        gate = cls(layer, distance, adult, float(percentile), len(train))
        gate.set_cutoffs(held_out, held_out_name, keep_higher=True)
        return gate

    def set_cutoffs(self, films: np.ndarray, name: str, keep_higher: bool = True) -> None:
        """Raise (or set) each cut-off to the `percentile`-th percentile of in-population films.

        With keep_higher the cut-offs never drop: a site's own films can only make the gate
        more lenient towards that site, never stricter than the trainer's held-out films.
        """
        films = _as_rows(films, self.dim)
        d_cut = float(np.percentile(self.distance.score(films), self.percentile))
        self.distance.threshold = max(self.distance.threshold, d_cut) if keep_higher else d_cut
        if self.adult is not None:
            a_cut = float(np.percentile(self.adult.score(films), self.percentile))
            self.adult.cutoff = (max(self.adult.cutoff, a_cut)
                                 if keep_higher and math.isfinite(self.adult.cutoff) else a_cut)
        self.cutoff_source.append(f"{name} ({len(films)} films)")

    # ------------------------------------------------------------------ scoring

    def scores(self, features: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Distance and adult log-odds per row: the two numbers every decision reads. A batch
        is scored in one product: the 1,024-d precision matrix (8 MB) is read once for all
        rows, not once a film (~1 ms a film on two cores)."""
        x = _as_rows(features, self.dim)
        return self.distance.score(x), (self.adult.score(x) if self.adult is not None else None)

    def feature_flags(self, features: Any, scores=None) -> list[list[Flag]]:
        """Per row of pooled features, the model-based flags (possibly adult first)."""
        dist, adult = scores if scores is not None else self.scores(features)
        out = []
        for i in range(len(dist)):
            flags = []
            near = dist[i] <= FAR_RATIO * self.distance.threshold
            if adult is not None and near and adult[i] > self.adult.cutoff:
                flags.append(Flag("possibly_adult", POSSIBLY_ADULT, float(adult[i]),
                                  self.adult.cutoff))
            if dist[i] > self.distance.threshold:
                flags.append(Flag("unlike_training", UNLIKE_TRAINING, float(dist[i]),
                                  self.distance.threshold))
            out.append(flags)
        return out

    def ood_score(self, features: Any, scores=None) -> np.ndarray:
        """One number per row, > 1 when a model-based part of the gate fires: the larger of
        distance / cut-off and exp(adult log-odds - cut-off)."""
        dist, adult = scores if scores is not None else self.scores(features)
        ratio = dist / self.distance.threshold
        if adult is not None:
            ratio = np.maximum(ratio, np.exp(np.clip(adult - self.adult.cutoff, -50, 50)))
        return ratio

    def orientation_flag(self, features: Any, turned_back: Any) -> Flag | None:
        """The orientation that explains a far film, from the features of its turned-back
        copies (`turned_back_inputs`, in `ORIENTATIONS[1:]` order): named when one copy is
        near the training films (within `NEAR_UPRIGHT` of the cut-off) and much nearer than the
        film itself (under `CLOSER_BY` of its distance). None otherwise: a film unlike the
        training films stays that, whichever way it is turned."""
        film = float(self.distance.score(_as_rows(features, self.dim))[0])
        copies = self.distance.score(_as_rows(turned_back, self.dim))
        best = int(np.argmin(copies))
        if copies[best] > NEAR_UPRIGHT * self.distance.threshold or copies[best] > CLOSER_BY * film:
            return None
        code, message = ORIENTATION_WORDS[ORIENTATIONS[1 + best]]
        return Flag(code, message, float(copies[best] / film), CLOSER_BY)

    def judge(self, features: Any, pixels: np.ndarray, colourfulness: float,
              image_size: int = 224, technical: dict[str, Any] | None = None,
              scores: tuple[np.ndarray, np.ndarray | None] | None = None
              ) -> tuple[float, list[Flag]]:
        """One image: (ood_score, every flag - the DICOM header and image rules, then the
        feature-based ones), each score computed once (this runs on every prediction).
        scores: this image's row of `scores` when its batch was scored at once."""
        scores = self.scores(features) if scores is None else scores
        flags = (header_flags(technical) + image_flags(pixels, colourfulness, image_size)
                 + self.feature_flags(features, scores)[0])
        return float(self.ood_score(features, scores)[0]), flags

    def assess(self, features: Any, pixels: np.ndarray, colourfulness: float,
               image_size: int = 224, technical: dict[str, Any] | None = None) -> list[Flag]:
        """Every flag for one image: header and image rules, then the feature-based ones."""
        return self.judge(features, pixels, colourfulness, image_size, technical)[1]

    def flag_rate(self, features: Any) -> float:
        """Fraction of rows the feature-based gate flags (image rules need the images)."""
        return float(np.mean([bool(f) for f in self.feature_flags(features)]))

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the manifest and the model card."""
        return {"kind": _KIND, "layer": self.layer, "pooled_dim": self.dim,
                "percentile": self.percentile, "n_reference": self.n_reference,
                "distance_cutoff": self.distance.threshold,
                "adult_detector": None if self.adult is None else {
                    "n_adult_films": self.adult.n_adult, "cutoff": self.adult.cutoff},
                "cutoffs_set_on": list(self.cutoff_source)}

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        """One .npz of plain arrays (no pickle), written beside `path` and renamed into place."""
        arrays = {f"distance_{k}": v for k, v in self.distance._arrays().items()}
        arrays.update(kind=np.array(_KIND), format_version=np.array(FORMAT_VERSION),
                      layer=np.array(self.layer), percentile=np.array(self.percentile),
                      n_reference=np.array(self.n_reference),
                      cutoff_source=np.array(self.cutoff_source, dtype=np.str_))
        if self.adult is not None:
            a = self.adult
            arrays.update(adult_centre=a.centre, adult_scale=a.scale, adult_coef=a.coef,
                          adult_intercept=np.array(a.intercept), adult_cutoff=np.array(a.cutoff),
                          adult_n=np.array(a.n_adult))
        return save_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PopulationGate":
        """Read a gate written by `save`; BundleError when missing, corrupt or of another kind."""
        arrays = _read_npz(Path(path))
        try:
            return _from_arrays(arrays)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise BundleError(f"gate file {path} is malformed or from an older pneumo ({exc}); "
                              "refit it: python -m pneumo refit-gate --model DIR") from None


def _from_arrays(arrays: dict[str, np.ndarray]) -> PopulationGate:
    from .gate import _gate_from_arrays

    if str(arrays["kind"].item()) != _KIND:
        raise ValueError(f"kind {arrays['kind'].item()!r}, expected {_KIND!r}")
    if int(arrays["format_version"].item()) != FORMAT_VERSION:
        raise ValueError(f"format version {arrays['format_version'].item()}")
    distance = _gate_from_arrays({k[len("distance_"):]: v for k, v in arrays.items()
                                  if k.startswith("distance_")})
    adult = None
    if "adult_coef" in arrays:
        adult = AdultDetector(arrays["adult_centre"].astype(np.float64),
                              arrays["adult_scale"].astype(np.float64),
                              arrays["adult_coef"].astype(np.float64),
                              float(arrays["adult_intercept"].item()),
                              float(arrays["adult_cutoff"].item()), int(arrays["adult_n"].item()))
        if adult.coef.shape != distance.mean.shape or not np.isfinite(adult.coef).all():
            raise ValueError("adult detector does not match the distance's dimension")
    return PopulationGate(str(arrays["layer"].item()), distance, adult,
                          float(arrays["percentile"].item()), int(arrays["n_reference"].item()),
                          [str(s) for s in arrays["cutoff_source"]])
