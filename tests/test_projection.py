from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from bo_voids.exceptions import BoVoidsError, StateError
from bo_voids.projection import PCAProjector
from bo_voids.seeding import rng


@pytest.fixture
def data() -> np.ndarray:
    g = rng(0, "test-projection")
    return g.normal(size=(40, 12)) @ g.normal(size=(12, 12)) + 3.0


def test_matches_sklearn(data: np.ndarray) -> None:
    proj = PCAProjector(3)
    Z = proj.fit_transform(data)
    ref = PCA(n_components=3, svd_solver="full").fit(data)
    np.testing.assert_allclose(Z, ref.transform(data), atol=1e-10)
    np.testing.assert_allclose(proj.explained_variance_ratio_, ref.explained_variance_ratio_)
    assert proj.components_.shape == (3, 12) and proj.mean_.shape == (12,)
    assert proj.fitted and proj.n_features_in_ == 12
    new = data[:5] * 0.5
    np.testing.assert_allclose(proj.transform(new), ref.transform(new), atol=1e-10)


def test_save_load_identical(data: np.ndarray, tmp_path: Path) -> None:
    proj = PCAProjector(2).fit(data)
    path = tmp_path / "sub" / "pca.npz"
    assert proj.save(path) == path
    loaded = PCAProjector.load(path)
    assert loaded.fitted and loaded.n_components == 2 and loaded.n_features_in_ == 12
    for attr in ("mean_", "components_", "explained_variance_", "explained_variance_ratio_"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(proj, attr))
    np.testing.assert_array_equal(loaded.transform(data), proj.transform(data))


def test_file_has_no_pickle(data: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "pca.npz"
    PCAProjector(2).fit(data).save(path)
    with np.load(path, allow_pickle=False) as f:
        assert set(f.files) >= {
            "mean",
            "components",
            "explained_variance",
            "explained_variance_ratio",
            "n_components",
            "n_features",
        }
        assert all(f[k].dtype != object for k in f.files)
    assert zipfile.is_zipfile(path)


def test_save_keeps_exact_name_and_leaves_no_temp(data: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "projection"  # no extension: np.savez on a name would add ".npz"
    proj = PCAProjector(2).fit(data)
    proj.save(path)
    proj.save(path)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["projection"]
    np.testing.assert_array_equal(PCAProjector.load(path).transform(data), proj.transform(data))


def test_transform_before_fit_errors(data: np.ndarray, tmp_path: Path) -> None:
    proj = PCAProjector()
    assert not proj.fitted
    with pytest.raises(StateError, match="iteration-0") as info:
        proj.transform(data)
    assert isinstance(info.value, BoVoidsError)
    with pytest.raises(StateError):
        proj.save(tmp_path / "x.npz")


def test_input_errors(data: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_components"):
        PCAProjector(0)
    with pytest.raises(ValueError, match="n_components"):
        PCAProjector(20).fit(data[:5])
    bad = data.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PCAProjector().fit(bad)
    proj = PCAProjector().fit(data)
    with pytest.raises(ValueError, match="features"):
        proj.transform(data[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        proj.transform(bad)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        PCAProjector.load(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, mean=np.zeros(3))
    with pytest.raises(StateError, match="missing"):
        PCAProjector.load(other)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(StateError):
        PCAProjector.load(junk)
