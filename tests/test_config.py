"""The config dataclass: presets, overrides, and clear errors for bad keys and values."""

import pytest

from ambcore.config import (
    PRESETS,
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    get_config,
)


def test_presets_build_and_name_themselves():
    for name in PRESETS:
        cfg = get_config(name)
        assert isinstance(cfg, Config)
        assert cfg.preset == name


def test_paper_preset_has_thesis_hyperparameters():
    cfg = get_config("paper")
    assert (cfg.adapter_dim, cfg.fusion_hidden, cfg.lr, cfg.dropout, cfg.patience) == (
        384,
        220,
        5e-5,
        0.2,
        10,
    )
    assert cfg.plm == "bert-base-uncased" and cfg.loss == "l1"


def test_overrides_are_typed():
    cfg = apply_overrides(
        get_config("smoke"), ["lr=0.5", "max_epochs=3", "bf16=false", "model=misa"]
    )
    assert cfg.lr == 0.5 and cfg.max_epochs == 3 and cfg.bf16 is False and cfg.model == "misa"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key.*'nope'.*valid keys:.*adapter_dim"):
        apply_overrides(get_config("smoke"), ["nope=1"])


def test_unknown_preset_lists_valid_presets():
    with pytest.raises(
        ConfigError, match="unknown preset 'big'; valid presets: smoke, embedded, paper"
    ):
        get_config("big")


@pytest.mark.parametrize(
    "item, message",
    [
        ("lr=fast", "expected float"),
        ("max_epochs=2.5", "expected int"),
        ("bf16=maybe", "expected a boolean"),
        ("precision=fp16", "valid values: auto, fp32, bf16"),
        ("model=gpt", "valid values: amb, misa, mag-bert"),
        ("finetune_layers=some", "expected 'all' or 'last:K'"),
        ("lr", "not of the form key=value"),
    ],
)
def test_bad_values_are_refused(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_config("smoke"), [item])


def test_round_trip_through_dict():
    cfg = get_config("embedded", seed=7, variant="text-only")
    assert config_from_dict(cfg.to_dict()) == cfg


def test_precision_bf16_contradicts_bf16_false():
    with pytest.raises(ConfigError, match="'precision'='bf16' contradicts bf16=False"):
        get_config("smoke", precision="bf16", bf16=False)
    assert get_config("smoke", precision="fp32", bf16=False).precision == "fp32"


def test_a_config_saved_before_precision_existed_is_the_same_config():
    from ambcore.config import ADDED_DEFAULTS
    from ambcore.runs import config_diff

    cfg = get_config("embedded", seed=3)
    saved = {k: v for k, v in cfg.to_dict().items() if k not in ADDED_DEFAULTS}
    assert set(ADDED_DEFAULTS) >= {"precision", "dataset", "fusion_module", "fusion_feedback"}
    assert config_from_dict(saved) == cfg and cfg.precision == "auto"
    assert config_diff(saved, cfg) == {}  # a sweep adopts its finished runs
    changed = config_diff(saved, get_config("embedded", seed=3, precision="fp32"))
    assert list(changed) == ["precision"]
