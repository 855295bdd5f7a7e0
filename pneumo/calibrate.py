"""Site calibration: fit a bundle to a hospital's own labelled films, and say honestly how well.

A model trained on one folder over-calls pneumonia on new patients (docs/experiments.md). A
site that adopts pneumo has a few hundred labelled films of its own; `calibrate_bundle` reads
them, fits the operating point on them (`pneumo.operating_point.fit_site`: by default a new
dense head on the pooled conv5 features, then temperature and threshold on out-of-fold logits;
`adapt="none"` refits only temperature and threshold), estimates the figures by
patient-grouped cross-validation of that same procedure (`cross_validate`), refits the gate's
cut-offs with the site films in population, and writes a new verified bundle. Its last step is
the export with parity (`pneumo.export.export_bundle`) when the parent served LiteRT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .litert import HEAD_FILE, TFLITE_FILE
from .metrics import THRESHOLD_METHODS, summary_metrics
from .operating_point import SiteFit, check_site_labels, cross_validate, fit_site
from .preprocess import gate_reads_own_input, thorax_of


# --------------------------------------------------------------------------- the new bundle


def read_site(data: str | Path, size: int, thorax: bool = False) -> tuple[Any, np.ndarray]:
    """The site's labelled films, preprocessed. Refuses the set if any film is unreadable
    (all named): a calibration silently fitted on fewer films than the user gave is wrong."""
    from .datasets import discover
    from .errors import ImageError
    from .preprocess import load_model_input

    frame = discover(data, "evaluate")
    check_site_labels(frame["label"].to_numpy())
    images, bad = [], []
    for path in frame["path"]:
        try:
            images.append(load_model_input(path, size, thorax))
        except ImageError as exc:
            bad.append(f"{Path(path).name}: {exc}")
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(f"{len(bad)} of {len(frame)} site films could not be read, so nothing "
                        f"was calibrated. Fix or remove them: {shown}")
    return frame, np.stack(images)


LITERT_FILES = (TFLITE_FILE, HEAD_FILE)


class _KerasForward:
    """The float Keras model's outputs on preprocessed films (needs TensorFlow)."""

    def __init__(self, model_dir: Path, adapt: str):
        from .predict import installed

        if not installed("tensorflow"):
            raise DataError(
                "this installation has no TensorFlow (the light serving install): it can fit "
                "the threshold and temperature of a LiteRT-served bundle (--adapt none) only"
                + ("; refitting the last layer (--adapt head) needs the full install "
                   "(requirements.txt)" if adapt == "head" else
                   "; this bundle is served by Keras, which needs the full install"))
        from .model import load_bundle_model

        self.model = load_bundle_model(model_dir)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from .inference import site_outputs

        return site_outputs(self.model, images)

    def pooled(self, layer: str, images: np.ndarray) -> np.ndarray:
        from .inference import pooled_outputs

        return pooled_outputs(self.model, layer, images)


class _ServedForward:
    """The served LiteRT file's own outputs (no TensorFlow): what a threshold-only fit of a
    LiteRT-served bundle needs, since its network, and so its file, stay as they are."""

    def __init__(self, model_dir: Path, info: dict[str, Any]):
        from .litert import LiteRTModel

        self.model = LiteRTModel(model_dir / info["file"], model_dir / info["head_file"])
        self.gate_layer = info.get("gate_layer")

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.model.features_and_logits(images)
        return out["features"].astype(np.float64), out["logit"].astype(np.float64)

    def pooled(self, layer: str, images: np.ndarray) -> np.ndarray:
        if layer != self.gate_layer:
            raise DataError(f"the served file gives {self.gate_layer} features, the gate reads "
                            f"{layer}: re-export the bundle's LiteRT model")
        return self.model.features_and_logits(images, keys=("gate",))["gate"]


def serves_unchanged(manifest: dict[str, Any], adapt: str) -> bool:
    """Whether a calibration of this bundle keeps its served LiteRT file as it is: a
    threshold-and-temperature fit (the network is unchanged) of a bundle served by LiteRT.
    Such a fit runs on the file's own outputs, without TensorFlow."""
    from .predict import served_runtime

    return adapt == "none" and served_runtime(manifest) == "litert"


def calibrate_bundle(model_dir: str | Path, data: str | Path, out_dir: str | Path,
                     policy: str = "sensitivity", target_sensitivity: float = 0.95,
                     cost_ratio: float = 3.0, adapt: str = "head", folds: int = 5,
                     seed: int = 0, bootstrap: int = 1000, source: str | None = None
                     ) -> dict[str, Any]:
    """Fit `model_dir` to the labelled films at `data`; write a new verified bundle `out_dir`.

    `source` names the films in the provenance when `data` is a temporary file (an upload).
    With `adapt="none"` on a LiteRT-served bundle (`serves_unchanged`) every output comes from
    the served file and the files are copied as they are: no TensorFlow, no export. Otherwise
    the float Keras model is read, and the export with parity is the last step.

    Returns a summary: the cross-validated figures, the fitted threshold and temperature,
    where they came from, and the gate's flag rate on the site films before/after its refit.
    """
    import datetime as dt

    from .bundle import MANIFEST, read_manifest, sha256_file, write_json, write_manifest
    from .modelcard import fitted_parts, model_card
    from .fileio import atomic_write_text
    from .layers import LOGIT_LAYER
    from .predict import load_gate

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if policy not in THRESHOLD_METHODS:
        raise DataError(f"--policy must be one of {THRESHOLD_METHODS}, got {policy!r}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir} is not empty; choose a new folder for the calibrated bundle")
    if out_dir.resolve() == model_dir.resolve():
        raise DataError("--out must differ from --model: the original bundle is never changed")
    manifest = read_manifest(model_dir, verify=True)
    size = int(manifest["image_size"])
    frame, images = read_site(data, size, thorax_of(manifest))
    # The gate's cut-offs are set on the films as the gate reads them (the whole film, also
    # for a thorax bundle: `pneumo.preprocess.gate_reads_crop`).
    gate_images = images if gate_reads_own_input(manifest) else read_site(data, size)[1]
    unchanged = serves_unchanged(manifest, adapt)
    forward = (_ServedForward(model_dir, manifest["litert"]) if unchanged
               else _KerasForward(model_dir, adapt))
    features, logits = forward.outputs(images)
    labels, groups = frame["label"].to_numpy(), frame["patient_id"].astype(str).to_numpy()
    kwargs = dict(adapt=adapt, policy=policy, target_sensitivity=target_sensitivity,
                  cost_ratio=cost_ratio)
    cv = cross_validate(features, logits, labels, groups, folds, seed, bootstrap, **kwargs)
    fit = fit_site(features, logits, labels, groups, seed=seed, **kwargs)

    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_parent_files(model_dir, out_dir, manifest, keep_served=unchanged)
    if fit.weights is not None:
        dense = forward.model.get_layer(LOGIT_LAYER)
        dense.set_weights([fit.weights.reshape(-1, 1).astype(np.float32),
                           np.array([fit.bias], np.float32)])
        forward.model.save(out_dir / "model.keras")

    gate_summary: dict[str, Any] = {}
    gate = load_gate(out_dir / "gate.npz")
    if hasattr(gate, "set_cutoffs"):  # a population gate: the site's films are in population
        pooled = forward.pooled(gate.layer, gate_images)
        gate_summary["site_flag_rate_before"] = gate.flag_rate(pooled)
        gate.set_cutoffs(pooled, f"site films {source or data}", keep_higher=True)
        gate_summary["site_flag_rate_after"] = gate.flag_rate(pooled)
        gate.save(out_dir / "gate.npz")

    rescored = _rescore_internal_splits(model_dir, out_dir, forward, fit,
                                        size, bootstrap, seed,
                                        thorax_of(manifest))
    counts = {"NORMAL": int((labels == 0).sum()), "PNEUMONIA": int((labels == 1).sum())}
    provenance = {"data": source or str(data), "n_per_class": counts,
                  "n_patients": int(len(set(groups))), "policy": policy, "adapt": adapt,
                  "outputs": "the served LiteRT file's" if unchanged else "the float model's",
                  "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "parent_bundle": str(model_dir), "parent_name": manifest.get("name"),
                  "parent_manifest_sha256": sha256_file(model_dir / MANIFEST)}
    site = {"figures": "patient-grouped cross-validation on the site films: "
            f"{fitted_parts(adapt)} fitted on the other folds only", **provenance,
            **cv["metrics"], "gate": gate_summary}
    metrics = json.loads((model_dir / "metrics.json").read_text())
    metrics.update(site=site, threshold=fit.threshold, temperature=fit.temperature,
                   threshold_selection={**fit.selection, "site": provenance}, **rescored)
    info = {k: v for k, v in manifest.items() if k not in ("files", "bundle_format", "litert")}
    if unchanged:
        info["litert"] = metrics["litert"] = _served_point(manifest["litert"], fit, source or data)
        metrics["litert"]["cross_validated"] = {
            "figures": "the served LiteRT model's outputs, patient-grouped cross-validation: "
            f"{fitted_parts(adapt)} fitted on the other folds only", **provenance,
            **cv["metrics"]}
    write_json(out_dir / "metrics.json", metrics)
    _write_site_predictions(out_dir, frame, cv)

    info.update(name=f"{manifest.get('name', model_dir.name)}-site", threshold=fit.threshold,
                temperature=fit.temperature,
                threshold_selection={**fit.selection, "site": provenance},
                headline_site={k: cv["metrics"][k] for k in
                               ("auc", "accuracy", "sensitivity", "specificity")},
                calibrated_from=provenance)
    if "test" in rescored:
        info["headline"] = {k: rescored["test"][k] for k in
                            ("auc", "accuracy", "sensitivity", "specificity")}
    if "gate" in info and hasattr(gate, "describe"):
        info["gate"] = {"file": "gate.npz", **gate.describe()}
    atomic_write_text(out_dir / "MODEL_CARD.md", model_card(info, metrics))
    write_manifest(out_dir, info)
    if manifest.get("litert") and not unchanged:  # the parent served LiteRT: so does this one
        from .export import export_bundle

        # The last step: the export with parity, on the site films the point was fitted on.
        export_bundle(out_dir, manifest["litert"].get("quantize", "dynamic"), saved_model=False,
                      reference=(f"site films {source or data}", frame))
        record_served_cv(out_dir, frame, images, provenance, folds, seed, bootstrap, **kwargs)
    read_manifest(out_dir, verify=True)  # what was written verifies, or this raises
    return {"bundle": str(out_dir), "threshold": fit.threshold, "temperature": fit.temperature,
            "site": site}


# The parent's tables that name films by bundle-relative path (`bundle.relative_to_bundle`):
# copied into a bundle at another depth, each path is rewritten to name the same file.
FILM_TABLES = ("split.csv", "predictions.csv", "val_predictions.csv")


def _copy_parent_files(parent: Path, out: Path, manifest: dict[str, Any],
                       keep_served: bool) -> None:
    """The parent's files a calibrated bundle starts from. The SavedModel is re-exported on
    demand; the LiteRT files are copied only when the network is unchanged (else the export
    rewrites them); the film tables keep naming the same films."""
    import shutil

    from .bundle import read_film_table, write_film_table

    for name in manifest.get("files", {}):
        if name.startswith("saved_model/") or (name in LITERT_FILES and not keep_served):
            continue
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        if name in FILM_TABLES:
            write_film_table(out, name, read_film_table(parent, name))
        else:
            shutil.copy2(parent / name, out / name)


def _served_point(parent: dict[str, Any], fit: SiteFit, films: Any) -> dict[str, Any]:
    """The parent's LiteRT record for the same file, with the operating point fitted on that
    file's own outputs: one threshold and temperature for the bundle and its served file."""
    info = {k: v for k, v in parent.items() if k != "cross_validated"}
    info.update(threshold=fit.threshold, temperature=fit.temperature,
                float_threshold=fit.threshold, float_temperature=fit.temperature,
                threshold_refitted_on=None,
                operating_point=f"fitted on this file's own outputs over the site films {films}",
                parity_note="the parity figures are the parent bundle's export of this same "
                            "file; the calibration did not rerun the float model")
    return info


def _write_site_predictions(out: Path, frame, cv: dict[str, Any]) -> None:
    from .bundle import relative_to_bundle

    table = frame[["path", "patient_id", "label"]].copy()
    table["path"] = [relative_to_bundle(out, p) for p in table["path"]]
    table["probability"], table["fold"] = cv["probabilities"], cv["fold"]
    table["decision"] = (cv["decision"] >= 0.5).astype(int)
    table.to_csv(out / "site_predictions.csv", index=False)


def record_served_cv(bundle: Path, frame, images: np.ndarray, provenance: dict[str, Any],
                     folds: int = 5, seed: int = 0, bootstrap: int = 1000,
                     **fit_kwargs: Any) -> dict[str, Any] | None:
    """The same patient-grouped cross-validation on the served LiteRT model's own outputs,
    recorded as `litert.cross_validated` in metrics.json (the card's headline figures).

    A quantised file's outputs differ a little from the float model's the fit ran on (gen5's
    dynamic-int8 file changed 2 of 328 calls on calibration/ at the same threshold), so the
    served model's figures are its own. Nothing to do for a float32 file (identical outputs).
    """
    from .bundle import read_manifest, refresh_hashes, write_json
    from .fileio import atomic_write_text
    from .litert import LiteRTModel
    from .modelcard import fitted_parts, model_card

    manifest = read_manifest(bundle, verify=False)
    info = manifest.get("litert") or {}
    if not info or info.get("quantize", "none") == "none":
        return None
    served = LiteRTModel(bundle / info["file"], bundle / info["head_file"])
    out = served.features_and_logits(images)
    labels, groups = frame["label"].to_numpy(), frame["patient_id"].astype(str).to_numpy()
    cv = cross_validate(out["features"], out["logit"], labels, groups, folds, seed, bootstrap,
                        **fit_kwargs)
    figures = {"figures": "the served LiteRT model's outputs, patient-grouped cross-validation: "
               f"{fitted_parts(fit_kwargs.get('adapt', 'none'))} fitted on the other folds "
               "only", **provenance, **cv["metrics"]}
    path = bundle / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics.setdefault("litert", dict(info))["cross_validated"] = figures
    write_json(path, metrics)
    atomic_write_text(bundle / "MODEL_CARD.md", model_card(manifest, metrics))
    refresh_hashes(bundle)
    return figures


def _rescore_internal_splits(parent: Path, out: Path, forward, fit: SiteFit, size: int,
                             bootstrap: int, seed: int, thorax: bool = False) -> dict[str, Any]:
    """Score the parent's internal validation and test films with the calibrated model, so the
    bundle's second yardstick describes this model, not its parent. Returns the metrics
    entries to replace ({} and a note when the films are not on this machine)."""
    import pandas as pd

    from .bundle import relative_to_bundle, resolve_in_bundle
    from .metrics import reliability_curve
    from .modelcard import RESCORED_SPLITS

    found: dict[str, Any] = {}
    for split, name in (("test", "predictions.csv"), ("val", "val_predictions.csv")):
        if not (parent / name).is_file():
            continue
        table = pd.read_csv(parent / name, dtype={"patient_id": str})
        paths = [resolve_in_bundle(parent, p) for p in table["path"]]
        if not all(p.is_file() for p in paths):
            return {"internal_splits": "scores of the parent model: its split films are not "
                    "on the machine that calibrated it"}
        features, logits = _outputs_of_files(forward, [str(p) for p in paths], size, thorax)
        table["path"] = [relative_to_bundle(out, p) for p in paths]
        table["logit"] = fit.logits(features, logits)
        table["probability"] = fit.probabilities(features, logits)
        table.to_csv(out / name, index=False)
        found[split] = summary_metrics(table["label"], table["probability"], fit.threshold,
                                       n_boot=bootstrap if split == "test" else 200, seed=seed)
        if split == "test":
            reliability_curve(table["label"], table["probability"]).to_csv(
                out / "reliability.csv", index=False)
    found["internal_splits"] = RESCORED_SPLITS
    return found


def _outputs_of_files(forward, paths: list[str], size: int, thorax: bool = False,
                      chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(features, logits) of many films, decoded `chunk` at a time: the internal splits'
    1,560 films at 224 px would be 235 MB of pixels held at once."""
    from .preprocess import load_images

    parts = [forward.outputs(load_images(paths[i:i + chunk], size, thorax=thorax))
             for i in range(0, len(paths), chunk)]
    return np.concatenate([f for f, _ in parts]), np.concatenate([lg for _, lg in parts])
