"""Per-pixel uncertainty (issue 18): the sigma head of both architectures, its checkpoint flag, training it, the
sparsification metrics and sigma gating of the pipeline."""

import json

import numpy as np
import pytest
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
