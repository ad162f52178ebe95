"""Per-pixel uncertainty (issue 18): the sigma head of both architectures, its checkpoint flag, training it, the
sparsification metrics and sigma gating of the pipeline."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from depth_ros.checkpoints import (
    BUNDLED_MODEL,
    BUNDLED_MODELS,
    METADATA_KEY,
    CheckpointError,
    CheckpointMetadata,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from depth_ros.estimator import DepthEstimator
from depth_ros.learning import engine
from depth_ros.learning.config import ConfigError, TrainConfig, config_from_dict
from depth_ros.learning.objectives import supervised_loss
from depth_ros.learning.trainable import build_optimizer, build_training_model, prepare_trainable
from depth_ros.models import create_model
from depth_ros.published_depth import depth_factor, network_fx
from depth_ros.testing import random_checkpoint

RGB = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
MODELS = {"packnet": ("tiny", 64), "depth_anything_v2": ("vits", 42)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def sigma_checkpoint(request, tmp_path_factory):
    encoder, size = MODELS[request.param]
    return random_checkpoint(tmp_path_factory.mktemp("sigma") / f"{request.param}.safetensors", encoder, size,
                             architecture=request.param, uncertainty=True, train_focal_px=50.0, max_depth=5.0)


def test_sigma_head_gives_positive_sigma_at_the_image_size_scaled_like_depth(sigma_checkpoint):
    estimator = DepthEstimator.from_checkpoint(sigma_checkpoint, device="cpu")
    assert estimator.metadata.uncertainty and estimator.has_uncertainty
    depth, sigma = estimator.infer_with_sigma(RGB)
    assert sigma.shape == depth.shape == RGB.shape[:2] and sigma.dtype == np.float32
    assert np.isfinite(sigma).all() and (sigma > 0).all()
    np.testing.assert_array_equal(depth, estimator.infer(RGB))  # the depth output does not change
    # a new head predicts INITIAL_SIGMA = 0.1 m of network output; the focal factor scales sigma as depth
    np.testing.assert_allclose(sigma, 0.1, rtol=1e-5)
    raw_width = estimator.network_size(*RGB.shape[:2])[1]
    factor = depth_factor(estimator.metadata, network_fx(80.0, RGB.shape[1], raw_width))
    depth_fx, sigma_fx = estimator.infer_with_sigma(RGB, fx=80.0)
    np.testing.assert_allclose(sigma_fx, 0.1 * factor, rtol=1e-5)
    np.testing.assert_allclose(depth_fx, depth * factor, rtol=1e-5)


def test_model_without_sigma_head_refuses_sigma_with_a_clear_error(checkpoint):
    estimator = DepthEstimator.from_checkpoint(checkpoint, device="cpu")
    assert not estimator.has_uncertainty
    with pytest.raises(ValueError, match="no sigma head"):
        estimator.infer_with_sigma(RGB)


def test_old_checkpoint_without_the_field_loads_without_sigma_and_strictly(tmp_path):
    metadata = CheckpointMetadata("tiny", "metric", 5.0, 64, architecture="packnet")
    state = {k: v.contiguous() for k, v in create_model(metadata).state_dict().items()}
    old_fields = {k: v for k, v in vars(metadata).items() if k != "uncertainty"}  # a file from before the field
    path = tmp_path / "old.safetensors"
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(old_fields)})
    model, loaded = build_model(path)
    assert loaded.uncertainty is False and model.sigma_head is None
    assert set(model.state_dict()) == set(state)
    # the sigma head's weights under metadata that says "no sigma head" are unexpected keys: strict loading refuses
    with_head = CheckpointMetadata("tiny", "metric", 5.0, 64, architecture="packnet", uncertainty=True)
    extra = {**state, **{k: v for k, v in create_model(with_head).state_dict().items() if k.startswith("sigma_head")}}
    save_file(extra, str(tmp_path / "mixed.safetensors"), metadata={METADATA_KEY: json.dumps(old_fields)})
    with pytest.raises(CheckpointError, match="unexpected.*sigma_head"):
        build_model(tmp_path / "mixed.safetensors")


def test_bundled_model_loads_strictly():
    model, metadata = build_model(BUNDLED_MODEL)
    state, _ = load_checkpoint(BUNDLED_MODELS[BUNDLED_MODEL])
    assert set(model.state_dict()) == set(state)
    assert (model.sigma_head is not None) == metadata.uncertainty


def test_uncertainty_needs_a_metric_head():
    with pytest.raises(ValueError, match="metric head"):
        CheckpointMetadata("vits", "relative", 1.0, uncertainty=True)


def test_checkpoint_round_trip_keeps_the_flag(tmp_path):
    metadata = CheckpointMetadata("tiny", "metric", 5.0, 64, architecture="packnet", uncertainty=True)
    path = save_checkpoint(tmp_path / "s.safetensors", create_model(metadata), metadata)
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()[METADATA_KEY])["uncertainty"] is True
    assert build_model(path)[1] == metadata


# ---------------------------------------------------------------------------------------------------------------
# Training the sigma head


def _sigma_config(checkpoint, out, data="unused", **optim) -> TrainConfig:
    return config_from_dict({
        "model": {"architecture": "packnet", "encoder": "tiny", "max_depth": 5.0, "init": "checkpoint",
                  "checkpoint": str(checkpoint), "uncertainty": True},
        "data": {"path": str(data), "depth_scale": 1000, "input_size": 64, "min_depth": 0.1,
                 "split": {"train_frames": "0:6", "val_frames": "70:72"}},
        "optim": {"trainable": "uncertainty", "epochs": 2, "batch_size": 2, "lr": 1e-2, "weight_decay": 0.0,
                  **optim},
        "run": {"output_dir": str(out), "val_every_epochs": 1},
    })


def test_frozen_backbone_training_lowers_the_nll_and_changes_only_the_sigma_head(tmp_path):
    source = random_checkpoint(tmp_path / "plain.safetensors", "tiny", 64, architecture="packnet", max_depth=5.0)
    cfg = _sigma_config(source, tmp_path / "run")
    torch.manual_seed(0)
    model = build_training_model(cfg.model)
    plain, _ = build_model(source)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())  # depth weights loaded strictly
    model, groups = prepare_trainable(model, cfg.optim)
    optimizer = build_optimizer(groups, cfg.optim)
    image = torch.rand(2, 3, 64, 64) * 0.5
    image[..., 32:] += 0.5  # a brighter right half, where
    with torch.no_grad():
        predicted = plain.eval()(image)
    # the labels are off by 30 % (2 % on the left): sigma has something to see and learn
    error = torch.where(torch.arange(64) < 32, 0.02, 0.3).expand(2, 64, 64)
    batch = {"image": image, "depth": predicted * (1 + error)}
    model.train()
    nlls = []
    for _ in range(30):
        loss, stats = supervised_loss(model, batch, cfg)
        loss.backward()
        assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("sigma_head."))
        optimizer.step()
        optimizer.zero_grad()
        nlls.append(stats["nll"])
    assert nlls[-1] < nlls[0] - 0.5
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("sigma_head.") for k in changed)
    with torch.no_grad():
        depth, log_sigma = model.eval()(image, with_sigma=True)
    torch.testing.assert_close(depth, predicted, rtol=0, atol=0)  # depth untouched
    sigma = log_sigma.exp()
    assert sigma[..., 32:].mean() > 3 * sigma[..., :32].mean()  # more sigma where the error is larger


def test_sigma_training_needs_a_sigma_head(tmp_path):
    with pytest.raises(ConfigError, match="model.uncertainty"):
        config_from_dict({"model": {"architecture": "packnet", "encoder": "tiny"}, "data": {"path": "x",
                          "input_size": 64}, "optim": {"trainable": "uncertainty"}, "run": {"output_dir": "x"}})
    with pytest.raises(ConfigError, match="uncertainty_loss"):
        config_from_dict({"model": {"uncertainty": True, "uncertainty_loss": "cauchy"}, "data": {"path": "x"},
                          "run": {"output_dir": "x"}})


def test_a_run_on_real_frames_saves_a_checkpoint_with_the_trained_sigma_head(shared_data, tmp_path):
    source = random_checkpoint(tmp_path / "plain.safetensors", "tiny", 64, architecture="packnet", max_depth=5.0)
    cfg = _sigma_config(source, tmp_path / "run", shared_data / "7scenes_redkitchen")
    summary = engine.train(cfg)
    best = tmp_path / "run" / "best.pth"
    model, metadata = build_model(best)
    assert metadata.uncertainty and summary["best"]["step"] == summary["step"]  # ties go to the newest weights
    plain, _ = build_model(source)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())
    fresh = create_model(metadata).state_dict()
    assert not torch.equal(state["sigma_head.2.bias"], fresh["sigma_head.2.bias"])
