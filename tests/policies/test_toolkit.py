"""The shared adapter toolkit against the reference libraries' own output.

Image steps are compared with openpi's own ``openpi_client.image_tools.resize_with_pad``,
transformers' own ``image_transforms.resize`` and the stored TensorFlow fixture; LoRA merging
with peft's own ``merge_and_unload``; the restricted unpickler with a real malicious pickle.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_gym.policies.toolkit import lora, safe_load, transforms
from vla_gym.policies.toolkit.errors import CheckpointError, NormStatsError
from vla_gym.policies.toolkit.norm_stats import NormKind, NormStats

DATA = Path(__file__).parent / "data"
RNG = np.random.default_rng(0)


def _image(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(256, 256), (180, 320), (320, 200), (224, 224), (97, 131)])
def test_resize_with_pad_equals_openpis_own(shape):
    from openpi_client import image_tools

    img = _image(*shape)
    ours = transforms.ResizeWithPad(224, 224)(img)
    ref = image_tools.resize_with_pad(img[None], 224, 224)[0]
    np.testing.assert_array_equal(ours, ref)


def test_pil_bicubic_equals_transformers_resize():
    from transformers.image_transforms import resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    img = _image(240, 320)
    ref = resize(img, (224, 224), resample=PILImageResampling.BICUBIC, data_format=ChannelDimension.LAST,
                 input_data_format=ChannelDimension.LAST)
    np.testing.assert_array_equal(transforms.PilResize(224, 224, "bicubic")(img), np.asarray(ref, dtype=np.uint8))


def test_expand_to_square_pads_the_short_side_with_the_background_centred():
    img = _image(3, 7)
    out = transforms.ExpandToSquare(background=(122, 116, 104))(img)
    assert out.shape == (7, 7, 3)
    np.testing.assert_array_equal(out[2:5], img)  # (7 - 3) // 2 = 2 rows above
    assert (out[:2] == [122, 116, 104]).all() and (out[5:] == [122, 116, 104]).all()
    tall = transforms.ExpandToSquare()(_image(6, 3))
    assert tall.shape == (6, 6, 3) and (tall[:, :1] == 0).all()


def test_openvla_reference_image_path_as_composed_steps_matches_the_tf_fixture():
    """Orientation, JPEG and TF lanczos3 steps reproduce the stored TensorFlow output (no crop)."""
    from tests.policies.test_openvla import make_frame

    raw = make_frame()
    upright = raw[::-1]
    np.testing.assert_array_equal(transforms.Rotate180OfRaw()(upright), raw[::-1, ::-1])
    path = transforms.Compose([transforms.Rotate180OfRaw(), transforms.JpegRoundTrip(95),
                               transforms.TfLanczos3Resize(224)])
    np.testing.assert_array_equal(path(upright), np.load(DATA / "tf_libero_image_path.npz")["nocrop"])
    with pytest.raises(ValueError, match="uint8"):
        transforms.Rotate180OfRaw()(upright.astype(np.float32))


def test_lora_merge_equals_peft_merge_and_unload_with_the_adapters_alpha(tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 5))
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["0", "2"], init_lora_weights=False)  # TinyVLA-like alpha/r = 4
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(tmp_path)
    unmerged = {k: v.detach().clone() for k, v in peft_model.state_dict().items()}
    merged_ref = peft_model.merge_and_unload().state_dict()
    ours = lora.merge_lora_state(unmerged, lora.lora_scaling_from_config(tmp_path), "test")
    for name in ("0.weight", "0.bias", "2.weight"):
        torch.testing.assert_close(ours[f"base_model.model.{name}"], merged_ref[name], rtol=0, atol=1e-6)
    with pytest.raises(CheckpointError, match="rank"):
        lora.merge_lora_state(unmerged, _wrong_rank(tmp_path),
                              "test")


def _wrong_rank(adapter_dir: Path):
    cfg = adapter_dir / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace('"r": 4', '"r": 8'))
    return lora.lora_scaling_from_config(adapter_dir)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_restricted_pickle_loads_stats_but_refuses_code(tmp_path):
    stats = {"action_mean": np.arange(7, dtype=np.float32), "nested": {"qpos_std": np.ones(14)}, "n": 3}
    good = tmp_path / "dataset_stats.pkl"
    good.write_bytes(pickle.dumps(stats))
    loaded = safe_load.load_restricted_pickle(good)
    np.testing.assert_array_equal(loaded["action_mean"], stats["action_mean"])
    assert loaded["nested"]["qpos_std"].shape == (14,) and loaded["n"] == 3
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"x": _Exploit(marker)}))
    with pytest.raises(CheckpointError, match="posix.system|os.system|not allowed"):
        safe_load.load_restricted_pickle(evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        safe_load.load_restricted_pickle(good, max_bytes=10)


def test_torch_state_dicts_load_weights_only(tmp_path):
    file = tmp_path / "head.pt"
    torch.save({"module.w": torch.ones(2)}, file)
    assert list(safe_load.load_torch_state_dict(file)) == ["w"]
    bad = tmp_path / "bad.pt"
    torch.save({"w": _Exploit(tmp_path / "x")}, bad)
    with pytest.raises(CheckpointError, match="weights_only"):
        safe_load.load_torch_state_dict(bad)
    assert not (tmp_path / "x").exists()


def test_norm_stats_declare_their_kind_and_refuse_a_mismatch():
    values = {"q01": [-1.0, 0.0, -2.0], "q99": [1.0, 4.0, 2.0], "mask": [True, True, False]}
    bounds = NormStats.from_mapping("bounds_q01_q99", values, source="dataset_statistics.json")
    y = np.array([[0.5, -1.0, 0.3]])
    q01, q99, mask = (np.asarray(values[k]) for k in ("q01", "q99", "mask"))
    ref = np.where(mask, 0.5 * (y + 1) * (q99 - q01) + q01, y)  # predict_action's formula in openvla
    np.testing.assert_array_equal(bounds.unnormalize(y), ref)
    np.testing.assert_allclose(bounds.normalize(bounds.unnormalize(y)), y)
    with pytest.raises(NormStatsError, match="expects mean_std statistics but the checkpoint's are bounds_q01_q99"):
        bounds.expect(NormKind.MEAN_STD, "pi0")
    z = NormStats.from_mapping("mean_std", {"mean": [1.0, 2.0], "std": [2.0, 0.5]}, eps=1e-6)
    np.testing.assert_allclose(z.normalize([3.0, 2.5]), [(3 - 1) / (2 + 1e-6), (2.5 - 2) / (0.5 + 1e-6)])
    mm = NormStats.from_mapping("min_max", {"min": [0.0], "max": [4.0]})
    np.testing.assert_allclose(mm.normalize([1.0]), [-0.5])
    with pytest.raises(NormStatsError, match="missing"):
        NormStats.from_mapping("mean_std", {"q01": [0.0], "q99": [1.0]})
