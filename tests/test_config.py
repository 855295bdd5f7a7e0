"""Config: defaults typed in one place, YAML overrides only, loud failures."""

from pathlib import Path

import pytest

from pneumo.config import Config, load_config, save_config
from pneumo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_configs_load():
    default = load_config(REPO / "configs" / "default.yaml")
    smoke = load_config(REPO / "configs" / "smoke.yaml")
    assert default.model.backbone == "resnet50" and smoke.model.backbone == "tiny"
    assert [s.unfreeze_from for s in default.train.stages] == ["", "conv5_block1"]


def test_every_config_in_the_repository_loads():
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert len(paths) >= 7, paths  # a path mistake would load nothing
    for path in paths:
        load_config(path)


def _differences(a: Config, b: Config) -> dict[str, tuple]:
    """Dotted keys whose values differ between two configs (stages compared whole)."""
    from dataclasses import asdict

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in d.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict)
                       else {f"{prefix}{key}": value})
        return out

    fa, fb = flat(asdict(a)), flat(asdict(b))
    return {k: (fa.get(k), fb.get(k)) for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


@pytest.mark.parametrize("parent, child, changed", [
    ("lungs.yaml", "penalty2.yaml", {"train.lung_penalty": (1.0, 2.0)}),
    ("penalty2.yaml", "penalty2_seed7.yaml", {"train.seed": (None, 7)}),
    ("lungs.yaml", "lungs_seed7.yaml", {"train.seed": (None, 7)}),
    ("lungs.yaml", "thorax.yaml", {"data.thorax_crop": (False, True)}),
    ("thorax.yaml", "thorax_seed7.yaml", {"train.seed": (None, 7)}),
])
def test_experiment_configs_change_only_what_docs_say(parent, child, changed):
    """docs/experiments.md reads gen7 as gen5 with the penalty doubled, and its second run as
    the same recipe with another seed: nothing else may differ."""
    diff = _differences(load_config(REPO / "configs" / parent), load_config(REPO / "configs" / child))
    assert diff == changed


def test_dotted_overrides_and_roundtrip(tmp_path):
    cfg = load_config(None, {"train.batch_size": 8, "augment.rotate_limit": 3})
    assert cfg.train.batch_size == 8 and cfg.augment.rotate_limit == 3.0
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("text, message", [
    ("train:\n  batchsize: 3\n", "unknown key"),
    ("train:\n  batch_size: many\n", "expected int"),
    ("data:\n  seed: 1.5\n", "expected int"),
    ("- a\n- b\n", "mapping"),
    ("train: [\n", "not valid YAML"),
])
def test_bad_configs_fail_loudly(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent.yaml")


def test_defaults_are_a_config():
    assert isinstance(load_config(), Config)
