"""Upgrade bundles (pure library): score calibration, backfill-order model, persistence, routing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.bundle import UpgradeBundle, build_bundle, json_safe
from adapters.calibration import IDENTITY, ScoreMap, fit_score_map
from adapters.reliability import fit_reliability, spearman
from adapters.vectors import normalize
from service.core.transform_graph import Edge, RouteTable

DATA = Path(__file__).parent / "data" / "wordnet_subset.npz"


def test_calibration_recovers_a_known_affine_relation() -> None:
    rng = np.random.default_rng(0)
    native = normalize(rng.normal(size=(400, 16)))
    stored = native.copy()
    s_n = native @ native.T
    fitted = fit_score_map(native, stored, native, native, "ip", "ip", min_pairs=10)
    assert fitted.calibrated and abs(fitted.a - 1) < 1e-6 and abs(fitted.b) < 1e-6  # identical spaces
    # routed inner products are the native ones halved: the map must double them back
    squeezed = fit_score_map(native * np.sqrt(0.5), stored * np.sqrt(0.5), native, native, "ip", "ip", min_pairs=10)
    assert abs(squeezed.a - 2.0) < 1e-4 and abs(squeezed.b) < 1e-4
    assert np.allclose(squeezed(0.5 * s_n[:3]), s_n[:3], atol=1e-4)
    assert not fit_score_map(native[:50], stored[:50], native[:50], native[:50], "ip", "ip").calibrated, \
        "too few pairs: identity"


def test_score_maps_compose_outer_after_inner() -> None:
    inner, outer = ScoreMap(a=2.0, b=1.0, calibrated=True), ScoreMap(a=3.0, b=-1.0, calibrated=True)
    composed = inner.then(outer)
    s = np.array([0.1, 0.5], np.float32)
    assert np.allclose(composed(s), outer(inner(s)))
    assert IDENTITY.then(inner).a == 2.0


def test_reliability_ranks_items_by_error() -> None:
    rng = np.random.default_rng(1)
    old = rng.normal(size=(600, 8)).astype(np.float32)
    errors = 0.3 * normalize(old)[:, 0] + 0.01 * rng.normal(size=600)  # error grows with one direction
    model = fit_reliability(old[:400], errors[:400])
    assert spearman(model.predict_error(old[400:]), errors[400:]) > 0.9
    assert spearman(np.arange(10.0), -np.arange(10.0)) == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def wordnet_bundle() -> UpgradeBundle:
    d = np.load(DATA)
    return build_bundle(d["minilm"], d["mpnet"], d["labels"], method="affine", seed=0)


def test_bundle_evaluation_and_round_trip(wordnet_bundle: UpgradeBundle, tmp_path: Path) -> None:
    ev = wordnet_bundle.evaluation
    assert ev["pairs"] == {"fit": 384, "holdout": 96, "labels": True}
    assert ev["rows"]["new/old"]["mAP@R"] > 2 * ev["rows"]["new/old raw"]["mAP@R"]
    assert ev["reverse_map"] == "procrustes" and set(ev["reverse_candidates"]) == {"procrustes"}  # affine: no forward
    d = np.load(DATA)
    wordnet_bundle.save(tmp_path / "b")
    loaded = UpgradeBundle.load(tmp_path / "b")
    x_new, x_old = d["mpnet"][:7].astype(np.float32), d["minilm"][:7].astype(np.float32)
    assert np.allclose(loaded.new_to_old(x_new), wordnet_bundle.new_to_old(x_new), atol=1e-6)
    assert np.allclose(loaded.old_to_new(x_old), wordnet_bundle.old_to_new(x_old), atol=1e-6)
    assert loaded.evaluation == ev and loaded.new_old_scores == wordnet_bundle.new_old_scores


def test_migration_curve_runs_from_the_transformation_to_the_new_model(wordnet_bundle: UpgradeBundle) -> None:
    ev = wordnet_bundle.evaluation
    curve = ev["migration_curve"]
    assert curve["items"] == 96 and curve["new_queries_stay_on_route"] is False  # 96 held-out pairs: not trusted
    rows = ev["rows"]
    for order in ("random", "suggested"):
        points = curve[order]
        assert [p["share"] for p in points] == [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
        # 0 %: the transformation's own ranking; 100 %: the new model's; old clients: old/old throughout
        assert points[0]["new_mAP@R"] == pytest.approx(rows["new/old"]["mAP@R"], abs=1e-6)
        assert points[-1]["new_mAP@R"] == pytest.approx(rows["new/new"]["mAP@R"], abs=1e-6)
        assert {round(p["old_mAP@R"], 9) for p in points} == {round(rows["old/old"]["mAP@R"], 9)}


def test_build_bundle_refuses_methods_a_server_cannot_use() -> None:
    d = np.load(DATA)
    with pytest.raises(ValueError, match="both models"):
        build_bundle(d["minilm"], d["mpnet"], method="slerp")


def test_json_safe_removes_nan_and_numpy_types() -> None:
    assert json_safe({"a": np.float32(0.5), "b": [float("nan"), np.int64(3)], "c": float("inf")}) == {
        "a": 0.5, "b": [None, 3], "c": None}


class _FakeBundle:
    """Just enough of an UpgradeBundle for routing: fixed qualities per direction."""

    def __init__(self, quality: float) -> None:
        self._q = quality
        self.new_old_scores = self.old_new_scores = IDENTITY

    def quality(self, direction: str) -> float:
        return self._q


def _edges(old: int, new: int, quality: float, tid: int) -> list[Edge]:
    b = _FakeBundle(quality)
    return [Edge(new, old, tid, tid, b, "new->old"), Edge(old, new, tid, tid, b, "old->new")]


def test_routing_prefers_the_better_measured_path() -> None:
    chain = _edges(1, 2, 0.9, 12) + _edges(2, 3, 0.9, 23)
    weak_direct = RouteTable(chain + _edges(1, 3, 0.7, 13))
    assert [e.transformation_id for e in weak_direct.route(3, 1).edges] == [23, 12]  # 0.81 > 0.7
    strong_direct = RouteTable(chain + _edges(1, 3, 0.85, 13))
    assert [e.transformation_id for e in strong_direct.route(3, 1).edges] == [13]
    assert RouteTable(chain).route(3, 3).native
    assert RouteTable(_edges(1, 2, 0.9, 12)).route(3, 1) is None


def test_map_at_r_from_scores_equals_the_vector_version() -> None:
    from adapters.metrics import map_at_r_from_scores, retrieval_metrics

    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    labels = rng.integers(0, 6, 120)
    s = normalize(x) @ normalize(x).T
    got = map_at_r_from_scores(s, labels[:, None] == labels[None, :])
    assert got == pytest.approx(retrieval_metrics(x, x, labels).mAP_at_R, abs=1e-9)


def test_selection_prefers_the_map_that_merges_a_mixed_gallery_best() -> None:
    from adapters.calibration import select_score_map

    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(10), 30)
    centres = rng.normal(size=(10, 16))
    native_vecs = normalize(centres[labels] + 0.6 * rng.normal(size=(300, 16)))
    native = native_vecs @ native_vecs.T
    routed = 0.4 * native - 0.3  # the route's scores are squeezed and shifted: raw merges rank it last
    relevant = labels[:, None] == labels[None, :]
    good = ScoreMap(a=2.5, b=0.75, calibrated=True, kind="regression")
    bad = ScoreMap(a=1.0, b=-1.0, calibrated=True, kind="distribution")
    chosen, scores = select_score_map([bad, good], routed, native, relevant)
    assert chosen is good
    assert scores["regression"] > scores["identity"] and scores["regression"] > scores["distribution"]


def test_a_map_chosen_on_held_out_pairs_is_reported_on_the_other_half() -> None:
    from adapters.bundle import cross_fitted_choice
    from adapters.evaluate import EvalSet

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 20)
    centres = rng.normal(size=(8, 16))
    old = (centres[labels] + 0.8 * rng.normal(size=(160, 16))).astype(np.float32)
    test = EvalSet(old, old.copy(), labels)
    good, noise = old + 0.1 * rng.normal(size=old.shape), rng.normal(size=old.shape)
    row = cross_fitted_choice({"good": good.astype(np.float32), "noise": noise.astype(np.float32)}, test, seed=0)
    halves = np.array_split(np.random.default_rng(2).permutation(160), 2)
    expected = np.mean([EvalSet(old[h], old[h], labels[h]).metrics(good[h], old[h]).mAP_at_R for h in halves])
    assert row["mAP@R"] == pytest.approx(expected)  # "good" wins on both halves, measured on the other
