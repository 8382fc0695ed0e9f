"""The baselines' training recipes in the trainer: MISA's value clipping and learning-rate
halving on exhausted patience, MAG-BERT's AdamW groups and linear warm-up (config fields
``grad_clip_mode``, ``lr_halvings``, ``optimizer``, ``warmup_ratio``)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from ambcore import runs
from ambcore.config import ConfigError, get_config
from ambcore.models.magbert import ORIGINAL_SETTINGS
from ambcore.models.misa import ORIGINAL_MOSEI_SETTINGS
from ambcore.train import _clip_gradients, make_optimizer, make_scheduler, train_and_evaluate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CPU = torch.device("cpu")


def _toy() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))


def test_recipes_are_config_values():
    assert ORIGINAL_MOSEI_SETTINGS["grad_clip_mode"] == "value"
    assert ORIGINAL_MOSEI_SETTINGS["lr_halvings"] == 2
    assert ORIGINAL_SETTINGS["optimizer"] == "adamw" and ORIGINAL_SETTINGS["warmup_ratio"] == 0.1
    for bad in (
        {"optimizer": "sgd"},
        {"grad_clip_mode": "max"},
        {"warmup_ratio": 1.0},
        {"lr_halvings": -1},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            get_config("smoke", **bad)


def test_adamw_decays_matrices_only():
    model = _toy()
    cfg = get_config("smoke", optimizer="adamw", weight_decay=0.01, lr=1e-3)
    opt = make_optimizer(model.parameters(), cfg, CPU)
    assert isinstance(opt, torch.optim.AdamW)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert {p.ndim for p in decayed["params"]} == {2}
    assert {p.ndim for p in plain["params"]} == {1}  # two biases, LayerNorm weight and bias
    assert len(decayed["params"]) == 2 and len(plain["params"]) == 4
    adam = make_optimizer(model.parameters(), get_config("smoke"), CPU)
    assert type(adam) is torch.optim.Adam


def test_new_params_lr_splits_pretrained_from_new_parameters():
    """new_params_lr > 0: the parameters not passed as pretrained learn at that rate (in both
    of AdamW's decay groups); 0 keeps one rate for all, as before."""
    model = _toy()
    params = list(model.parameters())
    pretrained = params[:2]
    cfg = get_config("smoke", optimizer="adamw", weight_decay=0.01, lr=1e-5, new_params_lr=3e-3)
    opt = make_optimizer(params, cfg, CPU, pretrained)
    rate_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert len(rate_of) == len(params)
    assert all(rate_of[id(p)] == 1e-5 for p in pretrained)
    assert all(rate_of[id(p)] == 3e-3 for p in params[2:])
    assert {g["weight_decay"] for g in opt.param_groups if g["lr"] == 3e-3} == {0.0, 0.01}
    same = make_optimizer(params, get_config("smoke", lr=2e-3), CPU, pretrained)
    assert [g["lr"] for g in same.param_groups] == [2e-3]
    with pytest.raises(ConfigError, match="new_params_lr"):
        get_config("smoke", new_params_lr=-1.0)


def test_pretrained_parameters_are_the_plm_component():
    from ambcore.models.magbert import MAGBert
    from ambcore.train import pretrained_parameters

    model = MAGBert(get_config("smoke", model="mag-bert", text_adaptation="finetune"), 7, 5)
    old = {id(p) for p in pretrained_parameters(model)}
    for name, param in model.named_parameters():
        assert (id(param) in old) == name.startswith("plm."), name
    assert pretrained_parameters(torch.nn.Linear(2, 2)) == []


def test_warmup_schedule_matches_transformers():
    from transformers import get_linear_schedule_with_warmup

    cfg = get_config("smoke", warmup_ratio=0.1, max_epochs=4, lr=2e-3)
    steps_per_epoch = 25  # 100 steps, 10 of warm-up
    ours_model, ref_model = _toy(), _toy()
    ours_opt = make_optimizer(ours_model.parameters(), cfg, CPU)
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=cfg.lr)
    ours = make_scheduler(ours_opt, cfg, steps_per_epoch)
    ref = get_linear_schedule_with_warmup(ref_opt, 10, 100)
    seen = []
    for _ in range(100):
        ours_opt.step(), ref_opt.step()
        ours.step(), ref.step()
        seen.append(ours_opt.param_groups[0]["lr"])
        assert seen[-1] == pytest.approx(ref_opt.param_groups[0]["lr"], abs=1e-12)
    assert max(seen) == pytest.approx(cfg.lr) and seen[-1] == 0.0
    assert make_scheduler(ours_opt, get_config("smoke"), steps_per_epoch) is None


def test_value_clipping_bounds_every_gradient_and_norm_clipping_the_norm():
    torch.manual_seed(0)
    for mode in ("value", "norm"):
        model = _toy()
        (model(torch.randn(16, 4)) * 100).sum().backward()
        params = list(model.parameters())
        assert max(p.grad.abs().max().item() for p in params) > 1.0
        _clip_gradients(params, get_config("smoke", grad_clip=0.5, grad_clip_mode=mode))
        if mode == "value":
            assert max(p.grad.abs().max().item() for p in params) <= 0.5
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
            assert norm.item() == pytest.approx(0.5, rel=1e-4)


def _expected_lrs(valid_mae, lr, patience, halvings):
    """The learning rate after each epoch, replaying the rule on the validation MAEs."""
    best, since, done, out = float("inf"), 0, 0, []
    for mae in valid_mae:
        if mae < best:
            best, since = mae, 0
        else:
            since += 1
        if since >= patience and done < halvings:
            lr, since, done = lr * 0.5, 0, done + 1
        out.append(lr)
        if since >= patience:
            break
    return out, done


# A learning rate far too high for the tiny model: the validation MAE stops improving quickly,
# so patience runs out within the epochs and the halvings happen.
HALVING = dict(
    max_epochs=8, patience=1, lr_halvings=2, lr=0.3, grad_clip=1.0, grad_clip_mode="value"
)


@pytest.fixture(scope="module")
def halving_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("recipes") / "halving"
    train_and_evaluate(get_config("smoke", **HALVING), run_dir, progress=False)
    return run_dir


def test_lr_halving_follows_the_patience_rule(halving_run):
    history = runs.read_history(halving_run)
    metrics = runs.read_metrics(halving_run)
    expected, done = _expected_lrs(
        history["valid_mae"], HALVING["lr"], HALVING["patience"], HALVING["lr_halvings"]
    )
    assert history["lr"].tolist() == pytest.approx(expected)
    assert len(history) == len(expected)
    assert metrics["lr_halvings_done"] == done >= 1, "the run never exhausted its patience"
    # the optimizer state is kept beside the best weights, for the restore
    assert (halving_run / "best" / runs.OPTIMIZER_TENSORS).exists()


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("recipe", ["halving", "warmup"])
def test_resume_with_a_recipe_equals_uninterrupted(halving_run, tmp_path, recipe):
    if recipe == "halving":
        cfg, reference = get_config("smoke", **HALVING), halving_run
        crash_at = int(runs.read_history(halving_run)["lr"].lt(HALVING["lr"]).idxmax()) + 1
    else:
        cfg = get_config(
            "smoke",
            **ORIGINAL_SETTINGS
            | {"max_epochs": 3, "patience": 5, "batch_size": 16, "max_text_len": 64},
        )
        reference = tmp_path / "reference"
        train_and_evaluate(cfg, reference, progress=False)
        crash_at = 1
    target = tmp_path / "interrupted"

    def crash(epoch: int) -> None:
        if epoch == crash_at:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_and_evaluate(cfg, target, progress=False, on_epoch_end=crash)
    train_and_evaluate(cfg, target, progress=False, resume=True)
    a, b = runs.read_history(reference), runs.read_history(target)
    assert a.drop(columns="seconds").equals(b.drop(columns="seconds"))
    assert runs.read_metrics(reference)["test"] == runs.read_metrics(target)["test"]
    if recipe == "warmup":  # past its peak after the first epoch, then down to 0
        assert a["lr"].iloc[0] < cfg.lr and a["lr"].is_monotonic_decreasing
        assert a["lr"].iloc[-1] == 0.0
