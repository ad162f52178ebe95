"""PackNet: packing layers, output shapes and range, registry and metadata, checkpoint round trip, infer CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth_ros.checkpoints import CheckpointError, CheckpointMetadata, build_model, save_checkpoint
from depth_ros.data.augment import TrainTransform
from depth_ros.estimator import DepthEstimator, resize_to_network
from depth_ros.frame import Frame
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.models import ARCHITECTURES, DepthAnythingV2, PackNet, create_model, depth_scales
from depth_ros.models.packnet import PackingBlock, UnpackingBlock, depth_to_space, lift_3d, space_to_depth
from depth_ros.tools import infer

META = CheckpointMetadata("tiny", "metric", 10.0, 64, 100.0, architecture="packnet")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("packnet") / "tiny.safetensors", create_model(META), META)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(8, 12), (7, 9), (1, 6)])
def test_space_to_depth_round_trip_is_exact(size):
    x = torch.randn(2, 3, *size)
    packed = space_to_depth(x)
    assert packed.shape == (2, 12, -(-size[0] // 2), -(-size[1] // 2))
    assert torch.equal(depth_to_space(packed, size), x)


def test_space_to_depth_puts_each_2x2_neighbourhood_into_channels():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert space_to_depth(x)[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert torch.equal(space_to_depth(x), F.pixel_unshuffle(x, 2))


def test_lift_3d_is_the_3d_convolution_over_the_packed_channels():
    torch.manual_seed(0)
    conv3d = torch.nn.Conv3d(1, 4, 3, padding=1)
    x = torch.randn(2, 12, 7, 9)
    reference = conv3d(x.unsqueeze(1))  # (B, d, C, H, W)
    torch.testing.assert_close(lift_3d(conv3d, x), reference.transpose(1, 2).flatten(1, 2))


@pytest.mark.parametrize("size", [(15, 21), (16, 20), (3, 5)])
def test_packing_and_unpacking_sizes_for_odd_inputs(size):
    x = torch.randn(1, 16, *size)
    packed = PackingBlock(16, 3, 2)(x)
    half = (-(-size[0] // 2), -(-size[1] // 2))
    assert packed.shape == (1, 16, *half)
    assert UnpackingBlock(16, 8, 3, 2)(packed, size).shape == (1, 8, *size)


@pytest.mark.parametrize("size", [(64, 96), (37, 53)])
def test_eval_returns_metres_and_training_returns_four_scales(size):
    torch.manual_seed(0)
    model = PackNet("tiny", max_depth=10.0)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        scales = model.train()(x)
        depth = model.eval()(x)
    expected = [(-(-size[0] // 2 ** s), -(-size[1] // 2 ** s)) for s in range(4)]
    assert [tuple(d.shape) for d in scales] == [(2, 1, *hw) for hw in expected]
    assert depth.shape == (2, *size)
    torch.testing.assert_close(depth, scales[0][:, 0])  # GroupNorm: no train/eval difference
    for d in [depth, *scales]:
        assert d.dtype == torch.float32 and bool(((d > 0) & (d < 10.0)).all())


def test_depth_scales_gives_every_architecture_one_training_contract():
    x = torch.rand(1, 3, 28, 42)
    packnet = depth_scales(PackNet("tiny").train()(x))
    vits = depth_scales(DepthAnythingV2("vits").train()(x))
    assert [tuple(d.shape) for d in packnet] == [(1, 1, 28, 42), (1, 1, 14, 21), (1, 1, 7, 11), (1, 1, 4, 6)]
    assert [tuple(d.shape) for d in vits] == [(1, 1, 28, 42)]


def test_training_mode_backpropagates_through_every_scale():
    model = PackNet("tiny").train()
    scales = model(torch.rand(1, 3, 32, 32))
    scales[-1].mean().backward()  # the coarsest head alone reaches the encoder
    assert model.stem[0].weight.grad.abs().sum() > 0


def test_slim_variant_has_the_reference_widths():
    model = PackNet("slim")
    assert model.config.widths == (32, 64, 128, 256, 512) and model.config.features_3d == 4
    assert model.packs[0].conv[0].in_channels == 4 * 32 * 4  # 4 packed pixels x 32 channels x 4 3D features


@pytest.mark.parametrize(("kwargs", "message"), [({"variant": "huge"}, "unknown PackNet variant"),
                                                  ({"max_depth": 0.0}, "max_depth must be a positive")])
def test_bad_constructor_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PackNet(**kwargs)


def test_metadata_records_the_architecture_and_its_preprocessing():
    meta = CheckpointMetadata("slim", "metric", 20.0, architecture="packnet")
    assert meta.input_size == 192 and meta.preprocessing == ARCHITECTURES["packnet"].preprocessing
    assert meta.preprocessing.network_size(480, 640, 192) == (192, 256)
    assert (meta.preprocessing.mean, meta.preprocessing.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert isinstance(create_model(meta), PackNet)
    old = CheckpointMetadata("vits", "metric", 20.0, 518, None)  # positional, as written before the field existed
    assert old.architecture == "depth_anything_v2" and old.preprocessing.multiple == 14
    assert isinstance(create_model(old), DepthAnythingV2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"encoder": "vits"}, "unknown encoder 'vits' for packnet"),
    ({"head": "relative"}, "unknown head 'relative' for packnet"),
    ({"input_size": 70}, "multiple of 32"),
    ({"architecture": "unet"}, "unknown architecture 'unet'"),
])
def test_metadata_that_breaks_the_architectures_rules_is_rejected(kwargs, message):
    values = {"encoder": "tiny", "head": "metric", "max_depth": 10.0, "architecture": "packnet", **kwargs}
    with pytest.raises(ValueError, match=message):
        CheckpointMetadata(**values)


def test_checkpoint_without_architecture_field_loads_as_depth_anything(tmp_path):
    model = DepthAnythingV2("vits")
    state = {**model.state_dict(), "_depth_ros_metadata": {"encoder": "vits", "head": "metric", "max_depth": 20.0,
                                                            "input_size": 70, "train_focal_px": None}}
    torch.save(state, tmp_path / "old.pth")
    loaded, meta = build_model(tmp_path / "old.pth")
    assert isinstance(loaded, DepthAnythingV2) and meta == CheckpointMetadata("vits", "metric", 20.0, 70)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_round_trip_gives_identical_depth(tmp_path, rgb, suffix):
    torch.manual_seed(1)
    model = create_model(META)
    path = save_checkpoint(tmp_path / f"m{suffix}", model, META)
    direct = DepthEstimator(model, META, device="cpu")
    loaded = DepthEstimator.from_checkpoint(path, device="cpu")
    assert loaded.metadata == META and isinstance(loaded.model, PackNet) and loaded.input_size == 64
    np.testing.assert_array_equal(loaded.infer(rgb, fx=80.0), direct.infer(rgb, fx=80.0))


def test_estimator_feeds_unnormalised_rgb_at_multiples_of_32(checkpoint, rgb):
    estimator = DepthEstimator.from_checkpoint(checkpoint, device="cpu")
    batch = estimator.preprocess(rgb)
    assert batch.shape == (1, 3, 64, 96) and estimator.network_size(480, 640) == (64, 96)
    unnormalised = resize_to_network(rgb, 64, META.preprocessing)  # RGB in [0, 1], bicubic
    np.testing.assert_array_equal(batch[0].permute(1, 2, 0).numpy(), unnormalised)
    depth = estimator.infer(rgb)
    assert depth.shape == rgb.shape[:2] and bool(((depth > 0) & (depth < 10.0)).all())
    with pytest.raises(ValueError, match="multiple of 32"):
        DepthEstimator.from_checkpoint(checkpoint, device="cpu", input_size=70)


def test_weights_of_another_variant_are_rejected_by_name(checkpoint):
    with pytest.raises(CheckpointError, match="packnet slim metric model"):
        build_model(checkpoint, encoder="slim")


def test_train_transform_takes_the_architectures_preprocessing():
    rng = np.random.default_rng(0)
    frame = Frame(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), PinholeCamera(100.0, 100.0, 63.5, 47.5, 128, 96),
                  0, depth=np.full((96, 128), 2.0, np.float32), name="f")
    sample = TrainTransform(64, preprocessing=META.preprocessing)(frame, np.random.default_rng(0))
    assert sample["image"].shape == (3, 64, 64) and sample["depth"].shape == (64, 64)
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0  # not ImageNet-normalised
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainTransform(42, preprocessing=META.preprocessing)


def test_infer_cli_with_a_packnet_checkpoint(tmp_path, checkpoint, rgb):
    import cv2

    cv2.imwrite(str(tmp_path / "img.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert infer.main([str(tmp_path / "img.png"), "--checkpoint", str(checkpoint), "--device", "cpu", "--fx", "80",
                       "--out", str(tmp_path / "out")]) == 0
    expected = DepthEstimator.from_checkpoint(checkpoint, device="cpu").infer(rgb, fx=80.0)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "img_depth.npy"), expected)


def test_metadata_is_stored_as_plain_json(checkpoint):
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        stored = json.loads(f.metadata()["_depth_ros_metadata"])
    assert stored == {"encoder": "tiny", "head": "metric", "max_depth": 10.0, "input_size": 64,
                      "train_focal_px": 100.0, "architecture": "packnet", "scale": 1.0, "uncertainty": False}
