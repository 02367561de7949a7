"""ScoreBook: grouping, merged replications, the moderated variance, the one ranking."""

from __future__ import annotations

import numpy as np
import pytest

from bo_voids.scoring import ScoreBook, rank_observations
from bo_voids.testing.synthetic import SyntheticProblem


@pytest.fixture(scope="module")
def problem() -> SyntheticProblem:
    return SyntheticProblem(seed=0)


def test_per_set_variance_is_positive_and_moderated(problem):
    sets = problem.space.sample_uniform(6, 1)
    emb, meta = problem.evaluate(sets, 0, "close")
    # a set with only 2 replications gets the pooled variance
    keep = [i for i, m in enumerate(meta) if not (m["param_set_id"] == "ps_000" and i == 2)]
    emb, meta = emb[keep], [meta[i] for i in keep]
    book = ScoreBook(problem.space, problem.targets)
    book.add(emb, meta)
    recs = list(book.observations().sets)
    assert recs[0].n_images == 2 and np.isnan(recs[0].jackknife_var)
    jk = np.array([r.jackknife_var for r in recs[1:]])
    assert recs[0].mmd2_var == pytest.approx(np.median(jk))
    assert all(r.mmd2_var > 0 for r in recs)
    for r in recs[1:]:  # moderation pulls each estimate towards the pooled value
        lo, hi = sorted((r.jackknife_var, np.median(jk)))
        assert lo - 1e-15 <= r.mmd2_var <= hi + 1e-15


def test_a_set_evaluated_again_merges_its_replications(problem):
    sets = problem.space.sample_uniform(3, 2)
    e0, m0 = problem.evaluate(sets, 0, "close")
    e1, m1 = problem.evaluate(sets[:1], 1, "synthetic")
    book = ScoreBook(problem.space, problem.targets)
    book.add(e0, m0)
    first = book.observations().sets[0]
    changed = book.add(e1, m1)
    assert len(changed) == 1
    merged = book.observations().sets[0]
    assert len(book.observations()) == 3
    assert merged.uid == first.uid and merged.iterations == (0, 1)
    assert merged.n_images == first.n_images + 3
    np.testing.assert_array_equal(merged.embeddings[: first.n_images], first.embeddings)
    assert merged.mmd2 == pytest.approx(book.scorer.score(merged.embeddings))


def test_one_ranking_model_when_complete_else_raw(problem):
    sets = problem.space.sample_uniform(4, 3)
    emb, meta = problem.evaluate(sets, 0, "close")
    book = ScoreBook(problem.space, problem.targets)
    book.add(emb, meta)
    obs = list(book.observations().sets)
    raw = [o.uid for o, _ in rank_observations(obs)]
    assert raw == [o.uid for o in sorted(obs, key=lambda o: o.mmd2)]
    predicted = {o.uid: -i for i, o in enumerate(obs)}
    assert [o.uid for o, _ in rank_observations(obs, predicted)] == [o.uid for o in obs[::-1]]
    partial = dict(list(predicted.items())[:2])
    assert [o.uid for o, _ in rank_observations(obs, partial)] == raw
    scores = book.scores(0, predicted)
    assert scores.ranking == "model" and scores.best[0]["uid"] == obs[-1].uid
