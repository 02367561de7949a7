"""The offline handcrafted embedder: contract, and that its MMD² is a meaningful objective."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bo_voids.embedding import HandcraftedEmbedder, make_embedder
from bo_voids.embedding.handcrafted import FEATURE_NAMES, HEAD_TARGETS, calibrate_scaling
from bo_voids.exceptions import EmbeddingError
from bo_voids.generation.voids import VoidGenerator
from bo_voids.metrics import MMDScorer
from bo_voids.seeding import derive_seed
from bo_voids.testing import REAL_MEANS

REPO = Path(__file__).resolve().parents[2]
SIZE = 160
MEANS = REAL_MEANS


@pytest.fixture(scope="module")
def gen() -> VoidGenerator:
    return VoidGenerator(REPO / "data" / "base_chips", image_size=SIZE)


@pytest.fixture(scope="module")
def emb() -> HandcraftedEmbedder:
    return HandcraftedEmbedder()


@pytest.fixture(scope="module")
def space():
    from bo_voids.config import load_config
    from bo_voids.space import SearchSpace

    return SearchSpace.from_config(load_config(REPO / "configs" / "experiment_config.yaml"))


def _render(gen: VoidGenerator, sets: list[dict], reps: int, *keys: object) -> list[np.ndarray]:
    return [
        gen.render(p, derive_seed(*keys, i, r)).image
        for i, p in enumerate(sets)
        for r in range(reps)
    ]


def test_contract(gen: VoidGenerator, emb: HandcraftedEmbedder) -> None:
    imgs = [gen.render(MEANS, s).image for s in range(4)]
    a = emb.embed(imgs)
    assert a.shape == (4, len(FEATURE_NAMES) + len(HEAD_TARGETS)) == (4, emb.dim)
    assert a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, emb.embed(imgs, batch_size=1))
    np.testing.assert_array_equal(a, make_embedder("handcrafted").embed(np.stack(imgs)))
    # uint8 and RGB inputs are accepted; a blank image (no voids) gives finite features
    u8 = (imgs[0] * 255).round().astype(np.uint8)
    assert np.isfinite(emb.embed([u8, np.repeat(imgs[0][..., None], 3, -1)])).all()
    assert np.isfinite(emb.embed([np.full((64, 80), 0.7, np.float32)])).all()
    assert emb.embed([]).shape == (0, emb.dim)
    d = emb.describe()
    assert d["fingerprint"] == emb.fingerprint() and d["dim"] == emb.dim


def test_resolution_independent(emb: HandcraftedEmbedder) -> None:
    g512 = VoidGenerator(REPO / "data" / "base_chips", image_size=512)
    g256 = VoidGenerator(REPO / "data" / "base_chips", image_size=256)
    a = emb.embed([g512.render(MEANS, s).image for s in range(3)])
    b = emb.embed([g256.render(MEANS, s).image for s in range(3)])
    spread = np.linalg.norm(a - a.mean(0), axis=1).mean()
    assert np.linalg.norm(a - b, axis=1).mean() < 0.5 * spread + 0.5


def test_rejects_bad_input(emb: HandcraftedEmbedder) -> None:
    with pytest.raises(EmbeddingError):
        emb.embed([np.full((32, 32), np.nan)])
    with pytest.raises(EmbeddingError):
        emb.embed([np.zeros((4, 4, 4, 4))])
    with pytest.raises(EmbeddingError):
        HandcraftedEmbedder(group_weights={"colour": 1.0})


def test_calibrate_scaling_shape() -> None:
    raw = np.random.default_rng(0).normal(size=(20, len(FEATURE_NAMES)))
    sc = calibrate_scaling(raw)
    assert list(sc) == list(FEATURE_NAMES) and all(s > 0 for _, s in sc.values())
    e = HandcraftedEmbedder(scaling=sc)
    assert e.fingerprint() != HandcraftedEmbedder().fingerprint()
    # embed_raw is what embed() does after feature extraction
    raw = np.abs(raw[:3])
    np.testing.assert_array_equal(e.embed_raw(raw), e.embed_raw(raw.copy()))
    assert e.embed_raw(raw).shape == (3, e.dim)


@pytest.mark.parametrize("seed", [0, 1])
def test_real_close_far_separation(gen, emb, space, seed: int) -> None:
    sets = {
        k: space.sample(k, 5 if k == "real" else 8, derive_seed(seed, k))
        for k in ("real", "close", "far")
    }
    X = {k: emb.embed(_render(gen, v, 3, seed, k)) for k, v in sets.items()}
    scorer = MMDScorer(bandwidth="multi").fit(X["real"])
    close, far = scorer.score(X["close"]), scorer.score(X["far"])
    assert far > close + 0.03 and far > 2 * close


@pytest.mark.parametrize(
    ("name", "values", "ok"),
    [
        ("brightness_factor", [0.3, 0.45, 0.6, 0.75], {0.45, 0.6, 0.75}),
        ("void_count", [3, 8, 14, 20], {8}),
    ],
)
def test_coarse_sweep_minimum_near_mean(gen, emb, space, name: str, values: list, ok: set) -> None:
    reals = space.sample("real", 5, derive_seed(0, "real"))
    scorer = MMDScorer(bandwidth="multi").fit(emb.embed(_render(gen, reals, 3, 0, "real")))
    scores = []
    for v in values:
        imgs = [gen.render({**MEANS, name: v}, derive_seed(0, "sweep", r)).image for r in range(6)]
        scores.append(scorer.score(emb.embed(imgs)))
    best = values[int(np.argmin(scores))]
    assert best in ok, (scores, best)
    assert scores[0] > min(scores) and scores[-1] > min(scores)
