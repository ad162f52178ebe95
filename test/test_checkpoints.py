"""Checkpoints: official ids and offline hub behaviour, metadata round trips, atomic saves, bad files."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from depth_ros import checkpoints
from depth_ros.checkpoints import (
    HYPERSIM_FOCAL,
    METADATA_KEY,
    OFFICIAL_MODELS,
    CheckpointError,
    CheckpointMetadata,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from depth_ros.estimator import DepthEstimator
from depth_ros.models import DepthAnythingV2

META = CheckpointMetadata("vits", "metric", 10.0, 196, 321.5)


@pytest.fixture(scope="module")
def vits_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return DepthAnythingV2("vits").state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_metadata_round_trip_and_official_key_layout(tmp_path, vits_state, suffix):
    path = save_checkpoint(tmp_path / f"m{suffix}", vits_state, META)
    state, metadata = load_checkpoint(path)
    assert metadata == META
    assert sorted(state) == sorted(vits_state)  # official key names, nothing extra
    torch.testing.assert_close(state, vits_state)
    model, metadata = build_model(path)
    assert (model.encoder, model.head, model.max_depth) == ("vits", "metric", 10.0)


def test_pth_files_are_plain_tensor_dicts_loadable_with_weights_only(tmp_path, vits_state):
    path = save_checkpoint(tmp_path / "m.pth", vits_state, META)
    raw = torch.load(path, weights_only=True)
    assert raw.pop(METADATA_KEY)["train_focal_px"] == 321.5
    DepthAnythingV2("vits").load_state_dict(raw, strict=True)


def test_pickled_objects_are_never_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_official_file_name_gives_metadata_without_any_in_the_file(tmp_path, vits_state):
    path = tmp_path / "depth_anything_v2_metric_hypersim_vits.pth"
    torch.save(vits_state, path)  # exactly how the official files are stored
    model, metadata = build_model(path)
    assert metadata == OFFICIAL_MODELS["da2-metric-indoor-small"].metadata
    assert metadata.train_focal_px == pytest.approx(HYPERSIM_FOCAL) and model.max_depth == 20.0


def test_unknown_file_infers_encoder_and_head(tmp_path, vits_state):
    path = tmp_path / "my_weights.pth"
    torch.save({"model": {f"module.{k}": v for k, v in vits_state.items()}, "epoch": 3}, path)
    _, metadata = build_model(path)
    assert (metadata.encoder, metadata.head) == ("vits", "relative")
    _, metadata = build_model(path, max_depth=15.0)
    assert (metadata.head, metadata.max_depth) == ("metric", 15.0)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth: no such checkpoint file"):
        build_model(tmp_path / "nope.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_gives_one_clear_error(tmp_path, vits_state, suffix):
    path = save_checkpoint(tmp_path / f"m{suffix}", vits_state, META)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint") as info:
        build_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_mismatched_weights_name_the_first_keys(tmp_path, vits_state):
    state = dict(vits_state)
    del state["depth_head.scratch.output_conv2.2.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = save_checkpoint(tmp_path / "m.pth", state, META)
    with pytest.raises(CheckpointError) as info:
        build_model(path)
    message = str(info.value)
    assert "missing ['depth_head.scratch.output_conv2.2.weight']" in message
    assert "unexpected ['extra.weight']" in message and str(path) in message


def test_wrong_encoder_reports_shape_mismatch(tmp_path, vits_state):
    path = save_checkpoint(tmp_path / "m.pth", vits_state, META)
    with pytest.raises(CheckpointError, match=r"vitb metric model: .*shape \['pretrained.cls_token \(1, 1, 384\) != "
                                              r"\(1, 1, 768\)'"):
        build_model(path, encoder="vitb")


def test_save_is_atomic_when_interrupted(tmp_path, vits_state, monkeypatch):
    path = save_checkpoint(tmp_path / "best.pth", vits_state, META)
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies half-way through writing

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, vits_state, CheckpointMetadata("vits", "metric", 5.0))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth"]  # no temporary left behind
    assert load_checkpoint(path)[1] == META


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_file_has_the_permissions_of_the_umask(tmp_path, vits_state, umask, mode):
    previous = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "published.pth", vits_state, META)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_temporary_file_of_a_killed_save_is_removed_by_the_next_save(tmp_path, vits_state):
    path = tmp_path / "best.pth"
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, torch
        from depth_ros.checkpoints import CheckpointMetadata, save_checkpoint
        torch.save = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write
        save_checkpoint({str(path)!r}, {{"w": torch.zeros(1)}}, CheckpointMetadata("vits", "metric", 5.0))
        """)], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    leftovers = list(tmp_path.glob(".best.pth.*.tmp.pth"))
    assert len(leftovers) == 1 and not path.exists()
    other = tmp_path / ".other.pth.1.abc.tmp.pth"  # another checkpoint's temporary name: not ours to remove
    other.write_bytes(b"")
    save_checkpoint(path, vits_state, META)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["best.pth", other.name])
    assert load_checkpoint(path)[1] == META


def test_model_ids_cover_the_official_table():
    expected = {f"da2-{kind}-{size}" for kind in ("relative", "metric-indoor", "metric-outdoor")
                for size in ("small", "base", "large")}
    assert set(OFFICIAL_MODELS) == expected
    small = OFFICIAL_MODELS["da2-metric-indoor-small"]
    assert (small.repo_id, small.filename, small.licence) == (
        "depth-anything/Depth-Anything-V2-Metric-Hypersim-Small", "depth_anything_v2_metric_hypersim_vits.pth",
        "Apache-2.0")
    assert OFFICIAL_MODELS["da2-metric-outdoor-large"].metadata.max_depth == 80.0
    assert OFFICIAL_MODELS["da2-relative-base"].licence == "CC-BY-NC-4.0"


def _offline_hub(monkeypatch, cache: Path) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)


def test_model_id_offline_and_uncached_says_what_to_fetch(tmp_path, monkeypatch):
    _offline_hub(monkeypatch, tmp_path / "hub")
    with pytest.raises(CheckpointError) as info:
        DepthEstimator.from_checkpoint("da2-metric-indoor-small", device="cpu")
    message = str(info.value)
    assert "https://huggingface.co/depth-anything/Depth-Anything-V2-Metric-Hypersim-Small/resolve/main/" \
           "depth_anything_v2_metric_hypersim_vits.pth" in message
    assert "pass the file's path" in message and "\n" not in message


def test_model_id_loads_from_the_hub_cache_offline(tmp_path, monkeypatch, vits_state):
    """A file already in the Hugging Face cache (layout: models--org--name/snapshots/<rev>/file) needs no network."""
    official = OFFICIAL_MODELS["da2-metric-indoor-small"]
    repo = tmp_path / "hub" / ("models--" + official.repo_id.replace("/", "--"))
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    torch.save(vits_state, repo / "snapshots" / revision / official.filename)
    _offline_hub(monkeypatch, tmp_path / "hub")
    estimator = DepthEstimator.from_checkpoint("da2-metric-indoor-small", device="cpu", input_size=70)
    assert estimator.metadata == official.metadata and estimator.is_metric


def test_hub_errors_become_checkpoint_errors(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(CheckpointError, match="could not be downloaded"):
        checkpoints.resolve("da2-relative-small")


def test_bundled_model_ships_with_its_card_and_loads_by_id_without_network(tmp_path, monkeypatch):
    _offline_hub(monkeypatch, tmp_path / "hub")
    path, official = checkpoints.resolve("depth-ros-tiny-indoor")
    assert official is None and path == checkpoints.WEIGHTS_DIR / "depth-ros-tiny-indoor.safetensors"
    assert path.stat().st_size <= 16 * 2**20
    card = (checkpoints.WEIGHTS_DIR / "depth-ros-tiny-indoor.md").read_text()
    assert "non-commercial research use only" in card and "train_packnet_tiny_7scenes_odom.yaml" in card
    assert "depth-ros-tiny-indoor" in checkpoints.model_ids()
    estimator = DepthEstimator.from_checkpoint("depth-ros-tiny-indoor", device="cpu")
    assert estimator.metadata == checkpoints.CheckpointMetadata("tiny", "metric", 5.0, 192, 234.0, "packnet",
                                                                uncertainty=True)


def test_bundled_model_is_metric_on_held_out_7scenes_frames(shared_data):
    """Frames 450-599 of the odom sequence were held out of its training: a broken or swapped file fails here."""
    from depth_ros.data import open_rgbd
    from depth_ros.metrics import evaluate_depth

    source = open_rgbd(shared_data / "7scenes_redkitchen_odom" / "tum", depth_scale=1000)
    estimator = DepthEstimator.from_checkpoint("depth-ros-tiny-indoor", device="cpu")
    scores = []
    for index in (460, 520, 590):
        frame = source[index]
        scores.append(evaluate_depth(estimator.infer(frame.rgb, fx=frame.camera.fx), frame.depth, min_depth=0.1,
                                     max_depth=5.0))
    assert np.mean([s["abs_rel"] for s in scores]) < 0.2  # 0.120 over all 150 frames (model card)
    assert 0.85 < np.median([s["median_ratio"] for s in scores]) < 1.15  # metric without scaling
