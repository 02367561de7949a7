"""DinoV2Embedder and the factory, exercised with a tiny randomly initialised DINOv2 (no mock)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from bo_voids.embedding import (
    DinoV2Embedder,
    HandcraftedEmbedder,
    available_embedders,
    make_embedder,
)
from bo_voids.embedding import dinov2 as dinov2_module
from bo_voids.embedding.dinov2 import (
    BF16_MIN_COSINE,
    convert_original_state_dict,
    cpu_bf16_support,
    dinov2_config,
)
from bo_voids.exceptions import EmbeddingError, FallbackWarning
from bo_voids.testing import make_tiny_dinov2, save_dinov2_state_dict
from bo_voids.testing.embedder_contract import EmbedderContract

CROP = 56
BF16_OK, BF16_WHY = cpu_bf16_support()
needs_bf16 = pytest.mark.skipif(not BF16_OK, reason=f"no native CPU bfloat16: {BF16_WHY}")


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dinov2(tmp_path_factory.mktemp("dino") / "tiny")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    g = np.random.default_rng(0)
    imgs = [g.random((90, 110)).astype(np.float32) for _ in range(5)]
    imgs.append(g.random((70, 70, 3)).astype(np.float32))  # RGB accepted too
    return imgs


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache / "hub"


class TestDinoV2Contract(EmbedderContract):
    batch_atol = 1e-5  # float32 batching changes the summation order

    @pytest.fixture(scope="class")
    @classmethod
    def embedder(cls, tiny: Path) -> DinoV2Embedder:
        return DinoV2Embedder(
            "dinov2_vits14", weights=tiny, crop_size=CROP, device="cpu", dtype="float32"
        )

    def test_tiny_model_size(self, embedder: DinoV2Embedder) -> None:
        assert embedder.dim == 32 and embedder.describe()["dim"] == 32


def test_image_already_at_resize_size(tiny: Path) -> None:
    # 64 px grayscale = resize_size for crop 56: no interpolation, the 3-channel view is shared.
    emb = DinoV2Embedder("dinov2_vits14", weights=tiny, crop_size=CROP, device="cpu")
    assert emb.resize_size == 64
    g = np.random.default_rng(1)
    out = emb.embed([g.random((64, 64)).astype(np.float32), g.random((64, 64, 3))])
    assert out.shape == (2, 32) and np.isfinite(out).all()


@pytest.mark.parametrize("layout", ["hf", "original"])
def test_state_dict_file_matches_folder(
    tiny: Path, tmp_path: Path, images: list[np.ndarray], layout: str
) -> None:
    ref = DinoV2Embedder("dinov2_vits14", weights=tiny, crop_size=CROP, device="cpu")
    pth = save_dinov2_state_dict(tiny, tmp_path / layout / "w.pth", layout=layout, with_config=True)
    emb = DinoV2Embedder("dinov2_vits14", weights=pth, crop_size=CROP, device="cpu")
    np.testing.assert_allclose(emb.embed(images), ref.embed(images), atol=1e-5)
    assert emb.weights_hash == ref.weights_hash


def test_state_dict_without_config_wrong_variant_is_clear(tiny: Path, tmp_path: Path) -> None:
    pth = save_dinov2_state_dict(tiny, tmp_path / "w.pth")
    with pytest.raises(EmbeddingError, match="does not match DINOv2"):
        DinoV2Embedder("dinov2_vits14", weights=pth, device="cpu")


@needs_bf16
def test_bfloat16_close_to_float32(tiny: Path, images: list[np.ndarray]) -> None:
    kw = {"weights": tiny, "crop_size": CROP, "device": "cpu"}
    a = DinoV2Embedder("dinov2_vits14", dtype="float32", **kw).embed(images)
    b = DinoV2Embedder("dinov2_vits14", dtype="bfloat16", **kw).embed(images)
    assert b.dtype == np.float32
    assert row_cosine(a, b).min() >= BF16_MIN_COSINE


@needs_bf16
def test_auto_picks_bfloat16_on_a_bf16_cpu(tiny: Path, images: list[np.ndarray]) -> None:
    kw = {"weights": tiny, "crop_size": CROP, "device": "cpu"}
    auto = DinoV2Embedder("dinov2_vits14", **kw)
    assert auto.dtype_name == "bfloat16"
    desc = auto.describe()
    assert desc["dtype"] == "bfloat16" and desc["dtype_requested"] == "auto"
    assert desc["bf16_probe_min_cosine"] >= BF16_MIN_COSINE
    assert "bfloat16" in desc["dtype_reason"] and BF16_WHY in desc["dtype_reason"]
    explicit = DinoV2Embedder("dinov2_vits14", dtype="bfloat16", **kw)
    np.testing.assert_array_equal(auto.embed(images), explicit.embed(images))
    assert auto.fingerprint() == explicit.fingerprint()
    assert auto.fingerprint().endswith(":bfloat16")


def test_auto_keeps_float32_when_bf16_drifts(
    tiny: Path, images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A threshold no bfloat16 run can reach: the probe must reject bfloat16.
    monkeypatch.setattr(dinov2_module, "cpu_bf16_support", lambda: (True, "pretend bf16 CPU"))
    monkeypatch.setattr(dinov2_module, "BF16_MIN_COSINE", 1.5)
    kw = {"weights": tiny, "crop_size": CROP, "device": "cpu"}
    auto = DinoV2Embedder("dinov2_vits14", **kw)
    assert auto.dtype_name == "float32" and auto.bf16_probe_cosine is not None
    assert "-> float32" in auto.dtype_reason
    ref = DinoV2Embedder("dinov2_vits14", dtype="float32", **kw)
    np.testing.assert_array_equal(auto.embed(images), ref.embed(images))
    assert auto.fingerprint() == ref.fingerprint()


def test_auto_float32_without_native_bf16(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dinov2_module, "cpu_bf16_support", lambda: (False, "no bf16 here"))
    auto = DinoV2Embedder("dinov2_vits14", weights=tiny, crop_size=CROP, device="cpu")
    assert auto.dtype_name == "float32" and auto.bf16_probe_cosine is None
    assert "no bf16 here" in auto.describe()["dtype_reason"]


def test_cpu_bf16_support_agrees_with_cpuinfo() -> None:
    ok, why = cpu_bf16_support()
    assert isinstance(ok, bool) and why
    flags = dinov2_module._cpuinfo_flags()
    if flags and "flags" in Path("/proc/cpuinfo").read_text() and ok:
        assert {"avx512_bf16", "amx_bf16"} & flags


def test_offline_error_says_where_and_how(empty_hf_cache: Path) -> None:
    with pytest.raises(EmbeddingError) as info:
        DinoV2Embedder("dinov2_vitb14", allow_network=True)
    msg = str(info.value)
    assert str(empty_hf_cache) in msg
    assert "huggingface-cli download facebook/dinov2-base" in msg
    assert "dino_weights" in msg
    assert "HF_HUB_OFFLINE" in msg


def test_missing_weights_path(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="does not exist"):
        DinoV2Embedder("dinov2_vits14", weights=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbeddingError, match="config.json"):
        DinoV2Embedder("dinov2_vits14", weights=tmp_path / "empty")


def test_bad_arguments(tiny: Path) -> None:
    with pytest.raises(EmbeddingError, match="unknown DINOv2 variant"):
        DinoV2Embedder("dinov3", weights=tiny)
    with pytest.raises(EmbeddingError, match="multiple of 14"):
        DinoV2Embedder("dinov2_vits14", weights=tiny, crop_size=50)
    with pytest.raises(EmbeddingError, match="unknown embedder"):
        make_embedder("clip")


def test_auto_falls_back_with_one_warning(empty_hf_cache: Path) -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        emb = make_embedder("auto", dino_model="dinov2_vits14")
    fallbacks = [w for w in rec if issubclass(w.category, FallbackWarning)]
    assert isinstance(emb, HandcraftedEmbedder)
    assert len(fallbacks) == 1
    text = str(fallbacks[0].message)
    assert "huggingface-cli download facebook/dinov2-small" in text and "\n" not in text


def test_auto_uses_local_weights(tiny: Path, empty_hf_cache: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        emb = make_embedder("auto", dino_model="dinov2_vits14", dino_weights=tiny, crop_size=CROP)
    assert isinstance(emb, DinoV2Embedder)


def test_explicit_dinov2_offline_raises(empty_hf_cache: Path) -> None:
    with pytest.raises(EmbeddingError):
        make_embedder("dinov2", dino_model="dinov2_vits14")


def test_fingerprints_differ(tiny: Path, tmp_path: Path) -> None:
    other = make_tiny_dinov2(tmp_path / "other", seed=1)
    a = DinoV2Embedder("dinov2_vits14", weights=tiny, crop_size=CROP, device="cpu", dtype="float32")
    b = DinoV2Embedder("dinov2_vits14", weights=other, crop_size=CROP, device="cpu")
    c = DinoV2Embedder(
        "dinov2_vits14", weights=tiny, crop_size=CROP, device="cpu", dtype="bfloat16"
    )
    d = DinoV2Embedder("dinov2_vits14", weights=tiny, crop_size=70, device="cpu")
    assert a.fingerprint().endswith(":float32") and c.fingerprint().endswith(":bfloat16")
    h = HandcraftedEmbedder()
    prints = {e.fingerprint() for e in (a, b, c, d, h, HandcraftedEmbedder(work_size=192))}
    assert len(prints) == 6
    auto = DinoV2Embedder("dinov2_vits14", weights=tiny, crop_size=CROP)
    assert auto.fingerprint() == (c if auto.dtype_name == "bfloat16" else a).fingerprint()
    desc = a.describe()
    assert desc["dim"] == 32 and desc["fingerprint"] == a.fingerprint()
    assert desc["dtype"] == "float32" and desc["dtype_reason"] == "requested"


def test_known_configs_and_key_conversion() -> None:
    cfg = dinov2_config("dinov2_vitg14")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (1536, 40, 24)
    assert cfg.use_swiglu_ffn
    assert dinov2_config("dinov2_vitb14").hidden_size == 768
    import torch

    sd = {
        "blocks.0.0.attn.qkv.weight": torch.zeros(6, 2),
        "blocks.0.0.ls1.gamma": torch.ones(2),
        "pos_embed": torch.zeros(1, 5, 2),
    }
    out = convert_original_state_dict(sd)
    assert out["encoder.layer.0.attention.attention.key.weight"].shape == (2, 2)
    assert "encoder.layer.0.layer_scale1.lambda1" in out and "embeddings.position_embeddings" in out


def test_available_embedders() -> None:
    assert set(available_embedders()) == {"auto", "dinov2", "handcrafted"}
