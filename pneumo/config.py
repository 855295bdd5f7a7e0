"""Typed training configuration: every default lives here, YAML files hold only overrides.

Unknown keys and wrong types fail loudly (a typo in a config must not silently train the
wrong model). The resolved config is written next to every model it produced.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .layers import CAM_LAYER
from .litert import LITERT_CHOICES



@dataclass
class DataConfig:
    image_size: int = 224  # training images were squashed to 224x224; the model input size
    val_fraction: float = 0.15  # of patients, for early stopping, threshold and calibration
    test_fraction: float = 0.15  # of patients, reported once for the final model
    seed: int = 42  # drives the patient split, shuffling and augmentation
    limit_per_class: int | None = None  # cap images per class (smoke runs on a slice)
    # Crop every film to its lung fields' box (pneumo.thorax) before the model, in training
    # and serving alike (the bundle's manifest records it).
    thorax_crop: bool = False


@dataclass
class AugmentConfig:
    enabled: bool = True
    rotate_limit: float = 10.0  # degrees; films are taken roughly upright
    scale_limit: float = 0.10  # zoom in/out fraction
    shift_limit: float = 0.06  # fraction of the side
    brightness_limit: float = 0.15
    contrast_limit: float = 0.15
    horizontal_flip: bool = False  # off: the heart sits on the left, flipping makes anatomy wrong
    p: float = 0.9  # probability of the geometric transform
    # Intensity and texture: new sites differ in exposure, processing and noise more than in
    # geometry. Each is applied with its probability; 0 turns it off.
    gamma_p: float = 0.0  # random gamma in [gamma_low, gamma_high] percent
    gamma_low: float = 70.0
    gamma_high: float = 150.0
    clahe_p: float = 0.0  # local contrast equalisation, as some PACS apply
    blur_p: float = 0.0  # Gaussian blur (softer detectors, downsampled films)
    noise_p: float = 0.0  # Gaussian noise (quantum mottle)
    # Shortcut breakers (pneumo.markers): burned-in markers and text anywhere, mostly at corners
    # and edges, and dark or bright bands along the borders, so neither carries the label.
    marker_p: float = 0.0
    border_p: float = 0.0


@dataclass
class ModelConfig:
    backbone: str = "resnet50"  # "resnet50", or "tiny" (a small CNN for tests)
    weights: str = "imagenet"  # "imagenet" (Keras download), "none", or a path to an .h5 file
    dropout: float = 0.3
    cam_layer: str = CAM_LAYER  # last conv block: where Grad-CAM looks


@dataclass
class StageConfig:
    name: str = "head"
    epochs: int = 2
    learning_rate: float = 1e-3
    # Layers from the first one whose name starts with this prefix are trainable; "" = head only,
    # "*" = everything. BatchNorm stays frozen (inference mode) whatever this says.
    unfreeze_from: str = ""
    # Stochastic weight averaging (Izmailov et al. 2018): N > 0 ends the stage on the mean of the
    # weights at the end of epochs N, N+1, ... instead of its best epoch by validation AUC. A
    # flatter minimum than any one epoch's: what new sites reward (Cha et al. 2021, SWAD).
    average_from: int = 0


@dataclass
class TrainConfig:
    batch_size: int = 32
    stages: list[StageConfig] = field(
        default_factory=lambda: [
            StageConfig("head", 2, 1e-3, ""),
            StageConfig("finetune", 4, 1e-4, "conv5_block1"),
        ]
    )
    class_weight: bool = True  # weight the loss by inverse class frequency
    oversample: bool = False  # resample the minority class to balance each epoch
    label_smoothing: float = 0.0
    precision: str = "auto"  # auto | float32 | mixed_bfloat16 | mixed_float16
    strategy: str = "default"  # default | mirrored | multi_worker
    early_stopping_patience: int = 2  # epochs without val AUC gain before a stage stops
    steps_per_epoch: int | None = None  # cap (benchmarks and smoke runs)
    # 0: stream images through the whole network every step (GPU). V > 0: compute the frozen
    # stem's output once for V views per image (1 clean + V-1 augmented) and train the top on it.
    cache_views: int = 0
    # "Right for the right reasons" (Ross et al. 2017): weight of a loss on the share of the CAM
    # layer's activation outside the lung-field template (moved with each augmented view), per
    # channel, so any linear head on the pooled features draws its map inside the lungs.
    # Needs cache_views > 0; 0 turns it off.
    lung_penalty: float = 0.0
    seed: int | None = None  # weight init, shuffling and dropout; None: data.seed
    gate_percentile: float = 99.5  # gate cut-offs: this percentile of held-out in-population films
    # Adult chest films (a folder of images, searched recursively, or a CSV with a `path`
    # column) for the gate's adult detector; "" fits the gate without it. Relative paths are
    # taken from the working directory. --adult-data on the command line overrides it.
    gate_adult_data: str = ""
    # The bundle's LiteRT serving model, written at the end of the run: none | dynamic | int8 |
    # float16, or off. A quantisation that fails the parity check falls back to float32.
    # int8 (full-integer) is what `models/default` serves: 2.3x faster a view than dynamic on
    # a VNNI CPU, the same rate on an AVX2-only one (docs/experiments.md, issue 21); a file that
    # cannot be written falls back to dynamic, then float32.
    litert: str = "int8"


@dataclass
class EvalConfig:
    threshold_method: str = "sensitivity"  # "sensitivity" (target below) or "youden"
    sensitivity_target: float = 0.95
    calibrate: bool = True  # fit temperature scaling on the validation split
    bootstrap: int = 1000  # resamples for the 95% confidence intervals


@dataclass
class Config:
    name: str = "pneumo-resnet50"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against the type hint `hint`, building nested dataclasses."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {hint}, received {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, received {value!r}")
        return _build(hint, value, where)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, received {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, received {value!r}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key(s) {sorted(unknown)}; allowed: {sorted(hints)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(values: dict[str, Any]) -> Config:
    """Defaults overridden by `values` (a nested mapping as in the YAML files)."""
    merged = _merge(Config().to_dict(), values or {})
    # Stages are a list: an override replaces the whole list, so fill each stage's defaults.
    config = _build(Config, merged, "")
    if config.train.lung_penalty > 0 and config.train.cache_views <= 0:
        raise ConfigError("train.lung_penalty needs the feature cache: set train.cache_views > 0")
    if config.train.litert not in LITERT_CHOICES:
        raise ConfigError(f"train.litert must be one of {LITERT_CHOICES}, received "
                          f"{config.train.litert!r}")
    return config


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (only overrides of the defaults) and apply `overrides` on top.

    `overrides` uses dotted keys, e.g. {"train.batch_size": 16}.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config_from_dict(values)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
