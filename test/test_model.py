"""Depth Anything V2 model: official state-dict layout, parity with the reference implementation, input checks.

The parity fixture (test/data/da2_vits_parity.npz) holds outputs of the official code on deterministic weights and
inputs; test/tools/make_parity_fixture.py regenerates it from an official checkout and defines the weight recipe.
"""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from depth_ros.models import ENCODERS, MODEL_CONFIGS, DepthAnythingV2

TEST_DIR = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("make_parity_fixture", TEST_DIR / "tools" / "make_parity_fixture.py")
fixture_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture_tool)

REL_TOL = 1e-4
# 7 encoder keys outside the blocks (cls_token, pos_embed, mask_token, patch_embed.proj.{weight,bias}, norm.{weight,
# bias}), 14 per block, 64 in the DPT head: the official files have 239 (S, B), 407 (L) and 631 (g) keys.
KEYS_OUTSIDE_BLOCKS, KEYS_PER_BLOCK, HEAD_KEYS = 7, 14, 64


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


@pytest.fixture(scope="module")
def official_vits_shapes() -> dict[str, tuple[int, ...]]:
    return {name: tuple(shape) for name, shape in json.loads(fixture_tool.KEYS_FILE.read_text()).items()}


@pytest.fixture(scope="module")
def parity_fixture():
    with np.load(fixture_tool.FIXTURE_FILE) as data:
        return dict(data)


@pytest.fixture(scope="module")
def parity_models() -> dict[str, DepthAnythingV2]:
    """Our ViT-S models (both heads) holding the fixture's deterministic weights."""
    models = {head: DepthAnythingV2("vits", head=head, max_depth=fixture_tool.MAX_DEPTH).eval()
              for head in ("metric", "relative")}
    weights = fixture_tool.parity_weights(_shapes(models["metric"]))
    for model in models.values():
        model.load_state_dict(weights, strict=True)
    return models


@pytest.mark.parametrize("head", ["metric", "relative"])
def test_vits_state_dict_has_the_official_keys_and_shapes(head, official_vits_shapes):
    model = DepthAnythingV2("vits", head=head)
    assert list(_shapes(model).items()) == list(official_vits_shapes.items())
    official = {name: torch.full(shape, 0.5) for name, shape in official_vits_shapes.items()}
    model.load_state_dict(official, strict=True)
    assert all(torch.all(t == 0.5) for t in model.state_dict().values())


@pytest.mark.parametrize("encoder", ["vitb", "vitl", "vitg"])
def test_larger_encoders_have_the_official_structure(encoder):
    config = MODEL_CONFIGS[encoder]
    dim = {"vitb": 768, "vitl": 1024, "vitg": 1536}[encoder]
    depth = {"vitb": 12, "vitl": 24, "vitg": 40}[encoder]
    with torch.device("meta"):
        model = DepthAnythingV2(encoder)
    shapes = _shapes(model)

    assert len(shapes) == KEYS_OUTSIDE_BLOCKS + KEYS_PER_BLOCK * depth + HEAD_KEYS
    blocks = {int(m.group(1)) for name in shapes if (m := re.match(r"pretrained\.blocks\.(\d+)\.", name))}
    assert blocks == set(range(depth))
    assert shapes["pretrained.pos_embed"] == (1, 1370, dim)
    assert shapes["pretrained.mask_token"] == (1, dim)
    assert shapes["pretrained.patch_embed.proj.weight"] == (dim, 3, 14, 14)
    last = f"pretrained.blocks.{depth - 1}"
    assert shapes[f"{last}.attn.qkv.weight"] == (3 * dim, dim)
    assert shapes[f"{last}.ls2.gamma"] == (dim,)
    if encoder == "vitg":  # SwiGLU FFN: hidden width 4096 = 2/3 of 4 x 1536, rounded to a multiple of 8
        assert shapes[f"{last}.mlp.w12.weight"] == (2 * 4096, dim)
        assert shapes[f"{last}.mlp.w3.weight"] == (dim, 4096)
        assert not any(".fc1." in name for name in shapes)
    else:
        assert shapes[f"{last}.mlp.fc1.weight"] == (4 * dim, dim)
        assert shapes[f"{last}.mlp.fc2.weight"] == (dim, 4 * dim)
        assert not any(".w12." in name for name in shapes)
    for i, channels in enumerate(config.out_channels):
        assert shapes[f"depth_head.projects.{i}.weight"] == (channels, dim, 1, 1)
        assert shapes[f"depth_head.scratch.layer{i + 1}_rn.weight"] == (config.features, channels, 3, 3)
    assert shapes["depth_head.scratch.output_conv1.weight"] == (config.features // 2, config.features, 3, 3)
    assert config.layers == {"vitb": (2, 5, 8, 11), "vitl": (4, 11, 17, 23), "vitg": (9, 19, 29, 39)}[encoder]

    with torch.device("meta"):  # shape flow through encoder and head, without computing anything
        out = model(torch.empty(2, 3, 28, 42))
    assert out.shape == (2, 28, 42)


@pytest.mark.parametrize("case", fixture_tool.CASES, ids=lambda case: case.name)
def test_outputs_equal_the_reference_implementation(case, parity_models, parity_fixture):
    model = parity_models[case.head]
    weights_checksum = fixture_tool.checksum(model.state_dict().values())
    x = fixture_tool.parity_input(case)
    assert weights_checksum == pytest.approx(parity_fixture[f"{case.head}_weights_checksum"], rel=1e-9), (
        "torch's random stream differs from the one that made the fixture: regenerate it with "
        "test/tools/make_parity_fixture.py")
    assert fixture_tool.checksum([x]) == pytest.approx(parity_fixture[f"{case.name}_input_checksum"], rel=1e-9)
    expected = torch.from_numpy(parity_fixture[case.name])

    with torch.no_grad():
        out = model(x)
    assert out.shape == (case.batch, case.height, case.width)
    out = out[:, :: case.stride, :: case.stride]

    scale = expected.abs().max()
    assert scale > 0.5  # a degenerate fixture (all zeros or saturated) would prove nothing
    torch.testing.assert_close(out, expected, rtol=REL_TOL, atol=REL_TOL * scale)


def test_metric_output_is_sigmoid_times_max_depth(parity_models):
    x = fixture_tool.parity_input(fixture_tool.CASES[0])
    far = DepthAnythingV2("vits", head="metric", max_depth=80.0).eval()
    far.load_state_dict(parity_models["metric"].state_dict())
    with torch.no_grad():
        near_depth, far_depth = parity_models["metric"](x), far(x)
    assert torch.all((near_depth > 0) & (near_depth < fixture_tool.MAX_DEPTH))
    torch.testing.assert_close(far_depth, near_depth * 4.0)


def test_channels_last_and_bf16_autocast_agree_with_fp32(parity_models):
    model = parity_models["metric"]
    x = fixture_tool.parity_input(fixture_tool.CASES[1])
    with torch.no_grad():
        reference = model(x)
        channels_last = model(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).float()
    torch.testing.assert_close(channels_last, reference, rtol=1e-5, atol=1e-5 * fixture_tool.MAX_DEPTH)
    relative_error = (bf16 - reference).abs().max() / reference.abs().max()
    assert relative_error < 0.05


def test_layer_norms_use_the_reference_epsilon():
    # eps hardly moves the fixture's outputs (its activations are large), so the reference value is checked directly
    model = DepthAnythingV2("vits")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 12 + 1
    assert {m.eps for m in norms} == {1e-6}


def test_encoder_and_head_parameters_partition_the_model():
    model = DepthAnythingV2("vits")
    encoder = {id(p) for p in model.pretrained.parameters()}
    head = {id(p) for p in model.depth_head.parameters()}
    assert encoder and head and not encoder & head
    assert encoder | head == {id(p) for p in model.parameters()}
    assert (model.encoder, model.head, model.max_depth, model.patch_size) == ("vits", "metric", 20.0, 14)


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 57, 70), "57x70"),
    ((1, 3, 56, 71), "56x71"),
    ((1, 3, 0, 14), "0x14"),
    ((3, 56, 70), r"\(B, 3, H, W\)"),
    ((1, 4, 56, 70), r"\(B, 3, H, W\)"),
])
def test_bad_input_shapes_raise_value_error(shape, message, parity_models):
    with pytest.raises(ValueError, match=message):
        parity_models["metric"](torch.zeros(shape))


@pytest.mark.parametrize("kwargs, message", [
    ({"encoder": "vith"}, "unknown encoder 'vith'"),
    ({"head": "disparity"}, "unknown head 'disparity'"),
    ({"max_depth": 0.0}, "max_depth"),
    ({"max_depth": float("nan")}, "max_depth"),
])
def test_bad_constructor_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DepthAnythingV2(**kwargs)


def test_every_encoder_is_configured():
    assert ENCODERS == ("vits", "vitb", "vitl", "vitg")
    assert {name: (c.features, c.out_channels) for name, c in MODEL_CONFIGS.items()} == {
        "vits": (64, (48, 96, 192, 384)),
        "vitb": (128, (96, 192, 384, 768)),
        "vitl": (256, (256, 512, 1024, 1024)),
        "vitg": (384, (1536, 1536, 1536, 1536)),
    }
