"""The offline handcrafted embedder: contract, and that its MMD² is a meaningful objective."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bo_voids.embedding import HandcraftedEmbedder, make_embedder
from bo_voids.embedding.handcrafted import (
    FEATURE_NAMES,
    FEATURE_SCALING,
    HEAD_TARGETS,
    PARAM_HEAD,
    HandcraftedConstants,
    calibrate_scaling,
    constants_path,
    load_constants,
    refit_constants,
    write_constants,
)
from bo_voids.exceptions import EmbeddingError
from bo_voids.generation.voids import VoidGenerator
from bo_voids.metrics import MMDScorer
from bo_voids.seeding import derive_seed
from bo_voids.testing import REAL_MEANS
from bo_voids.testing.embedder_contract import EmbedderContract

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


class TestHandcraftedContract(EmbedderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def embedder(cls) -> HandcraftedEmbedder:
        return HandcraftedEmbedder()

    @pytest.fixture(scope="class")
    @classmethod
    def images(cls) -> list[np.ndarray]:
        g = VoidGenerator(REPO / "data" / "base_chips", image_size=SIZE)
        imgs = [g.render(MEANS, s).image for s in range(5)]
        return [*imgs, np.repeat(imgs[0][..., None], 3, axis=-1)]

    def test_features_and_head(self, embedder: HandcraftedEmbedder, images) -> None:
        assert embedder.dim == len(FEATURE_NAMES) + len(HEAD_TARGETS)
        np.testing.assert_array_equal(
            embedder.embed(images[:4]), make_embedder("handcrafted").embed(np.stack(images[:4]))
        )


def test_resolution_independent(emb: HandcraftedEmbedder) -> None:
    g512 = VoidGenerator(REPO / "data" / "base_chips", image_size=512)
    g256 = VoidGenerator(REPO / "data" / "base_chips", image_size=256)
    a = emb.embed([g512.render(MEANS, s).image for s in range(3)])
    b = emb.embed([g256.render(MEANS, s).image for s in range(3)])
    spread = np.linalg.norm(a - a.mean(0), axis=1).mean()
    assert np.linalg.norm(a - b, axis=1).mean() < 0.5 * spread + 0.5


def test_rejects_unknown_feature_group() -> None:
    with pytest.raises(EmbeddingError):
        HandcraftedEmbedder(group_weights={"colour": 1.0})


# Exact identity of the packaged hc-1 constants: SHA-256 of their canonical JSON, and the
# fingerprint they give with the default settings. A refit or an edit of the file changes both.
CONSTANTS_SHA256 = "06bba744e67bc2716b928f0a08d4e71eb76459f1dee446352d5e414e85ee8f0b"
FINGERPRINT = "handcrafted:hc-1:426658cfc6e51d41"
# Embedding of the raw features centre + scale * linspace(-2, 2): the first 38 coordinates check
# the scaling and group weights, the last 8 the head.
EXPECTED_EMBEDDING = np.array(
    [
        -0.15811388, -0.14956719, -0.14102049, -0.1324738, -0.123927094, -0.1153804,
        -0.106833704, -0.09828701, -0.08974031, -0.08119362, -0.11486486, -0.10135135,
        -0.08783784, -0.074324325, -0.04596865, -0.035753395, -0.02553814, -0.015322884,
        -0.005107628, 0.005107628, 0.015322884, 0.023888743, 0.03344424, 0.042999737,
        0.052555233, 0.06211073, 0.071666226, 0.08122172, 0.09077722, 0.11585424,
        0.12688798, 0.13792172, 0.14895546, 0.1599892, 0.17102294, 0.1287335,
        0.13653554, 0.14433756, -0.14815736, 0.039784968, 2.2296922, 1.357404,
        3.2991476, -0.06259039, 3.5935662, 1.7309908,
    ],
    dtype=np.float32,
)  # fmt: skip


def test_packaged_constants_are_the_fitted_ones() -> None:
    canon = {
        "scaling": {n: list(FEATURE_SCALING[n]) for n in FEATURE_NAMES},
        "head": {t: PARAM_HEAD[t] for t in HEAD_TARGETS},
    }
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(text.encode()).hexdigest() == CONSTANTS_SHA256
    emb = HandcraftedEmbedder()
    assert emb.fingerprint() == FINGERPRINT
    centre = np.array([FEATURE_SCALING[n][0] for n in FEATURE_NAMES])
    scale = np.array([FEATURE_SCALING[n][1] for n in FEATURE_NAMES])
    out = emb.embed_raw((centre + scale * np.linspace(-2, 2, len(centre)))[None])[0]
    # rtol of a few float32 ulps: only the BLAS summation order of the head may differ by machine
    np.testing.assert_allclose(out, EXPECTED_EMBEDDING, rtol=1e-6, atol=0)


def test_constants_file_roundtrip(tmp_path: Path) -> None:
    packaged = load_constants()
    assert packaged.scaling == FEATURE_SCALING and packaged.head == PARAM_HEAD
    path = write_constants(tmp_path / "c.json", packaged)
    assert load_constants(path) == packaged
    # the packaged file is exactly what write_constants produces (no hand edits)
    assert path.read_bytes() == constants_path().read_bytes()

    data = json.loads(path.read_text(encoding="utf-8"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "feature_version": "hc-0"}), encoding="utf-8")
    with pytest.raises(EmbeddingError, match="feature version"):
        load_constants(bad)
    del data["feature_scaling"]["img_mean"]
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(EmbeddingError, match="do not match"):
        load_constants(bad)
    with pytest.raises(EmbeddingError, match="cannot read"):
        load_constants(tmp_path / "missing.json")


def test_refit_writes_usable_constants(space, tmp_path: Path) -> None:
    out = tmp_path / "refit.json"
    fitted = refit_constants(
        space, REPO / "data" / "base_chips", out, n_images=24, sizes=(96, 128), seed=3
    )
    assert isinstance(fitted, HandcraftedConstants)
    loaded = load_constants(out)
    assert loaded == fitted and loaded.reference["n_images"] == 24
    emb = HandcraftedEmbedder(scaling=loaded.scaling, head=loaded.head)
    assert emb.fingerprint() != FINGERPRINT
    img = VoidGenerator(REPO / "data" / "base_chips", image_size=96).render(MEANS, 0).image
    assert np.isfinite(emb.embed([img])).all()
    # the packaged constants are untouched by a refit to another path
    assert HandcraftedEmbedder().fingerprint() == FINGERPRINT


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
