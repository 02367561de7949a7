"""The verdict: quiet on a well-specified toy, fires on a shifted one, says what is off."""

from __future__ import annotations

import numpy as np

from bo_voids.statistics import permutation_test
from bo_voids.statistics.verdict import (
    bound_notes,
    holm,
    make_verdict,
    summary_checks,
)

NAMES = ("head_void_count", "head_base_size", "head_brightness_factor", "pca_1", "pca_2")


def _verdict_for(real: np.ndarray, generated: np.ndarray, seed: int):
    test = permutation_test(generated, real, 200, seed, bandwidth="median")
    checks = summary_checks(real, generated, NAMES)
    return make_verdict(test.p_value, test="toy", checks=checks)


def test_quiet_when_well_specified_and_fires_when_shifted() -> None:
    g = np.random.default_rng(0)
    runs = 200
    alarms = fired = 0
    for i in range(runs):
        real = g.normal(size=(15, len(NAMES)))
        same = g.normal(size=(30, len(NAMES)))
        shifted = g.normal(size=(30, len(NAMES)))
        shifted[:, 1] += 1.5  # the generator's voids are larger than the real ones
        alarms += _verdict_for(real, same, i).reproduces is False
        fired += _verdict_for(real, shifted, i).reproduces is False
    # binomial sd at 0.05 over 200 runs: 0.015
    assert alarms / runs <= 0.09
    assert fired / runs >= 0.8


def test_a_shifted_summary_is_named_in_words() -> None:
    g = np.random.default_rng(3)
    real = g.normal(size=(40, len(NAMES)))
    generated = g.normal(size=(60, len(NAMES)))
    real[:, 1] += 2.0  # real voids larger
    checks = summary_checks(real, generated, NAMES)
    off = [c for c in checks if c.off]
    assert [c.summary for c in off] == ["head_base_size"]
    assert "larger voids" in (off[0].message or "")
    verdict = make_verdict(0.001, test="toy", checks=checks)
    assert verdict.reproduces is False
    assert verdict.warning is not None and "larger voids" in verdict.warning
    assert verdict.to_dict()["what_is_off"] == [off[0].message]


def test_summary_checks_hold_their_family_level() -> None:
    g = np.random.default_rng(5)
    runs = 300
    any_off = 0
    for _ in range(runs):
        groups = np.repeat(np.arange(5), 3)
        real = g.normal(size=(5, len(NAMES)))[groups] + 0.5 * g.normal(size=(15, len(NAMES)))
        gen_groups = np.repeat(np.arange(8), 3)
        gen = g.normal(size=(8, len(NAMES)))[gen_groups] + 0.5 * g.normal(size=(24, len(NAMES)))
        checks = summary_checks(real, gen, NAMES, real_groups=groups, generated_groups=gen_groups)
        any_off += any(c.off for c in checks)
    assert any_off / runs <= 0.08


def test_no_test_cannot_judge_and_hints_stay_hints() -> None:
    v = make_verdict(None, test="the targets allow no split", bound_messages=["x"])
    assert v.reproduces is None and "Cannot judge" in v.headline and v.warning is None
    v = make_verdict(0.4, test="toy", bound_messages=["base_size is at its upper bound"])
    assert v.reproduces is True and v.what_is_off == [] and v.hints
    assert v.warning is None


def test_bound_notes() -> None:
    notes = bound_notes(
        {"base_size": 39.5, "void_count": 10.0, "brightness_factor": 0.3},
        {"base_size": (5.0, 40.0), "void_count": (3.0, 20.0), "brightness_factor": (0.3, 0.8)},
    )
    assert len(notes) == 2
    assert notes[0].startswith("base_size is at its upper bound")
    assert notes[1].startswith("brightness_factor is at its lower bound")


def test_holm() -> None:
    adj = holm([0.01, 0.04, np.nan, 0.03])
    assert np.allclose(adj[[0, 1, 3]], [0.03, 0.06, 0.06]) and np.isnan(adj[2])
