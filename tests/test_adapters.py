"""Adapters on real embeddings (tests/data: MiniLM -> mpnet on 480 WordNet definitions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters import METHODS, create, load
from adapters.evaluate import EvalSet, baseline_rows, method_row
from adapters.methods.auto import HEDGED_PICKS
from adapters.methods.procrustes import Procrustes
from tests.helpers import less_noisy_successor

DATA = Path(__file__).parent / "data" / "wordnet_subset.npz"
FAST = {"max_steps": 40, "min_steps": 20, "eval_every": 10, "patience": 3}
TRAINED = {"lambda_orth", "oca", "bt2", "drift_lowrank", "drift_mlp", "rank_distill"}
ALL_METHODS = ["procrustes", "affine", "adjoint", "hedge", *sorted(TRAINED), "neighbour_memory", "slerp"]


def fast_params(name: str) -> dict:
    if name in TRAINED:
        return dict(FAST)
    if name == "auto":
        return {"method_params": {m: dict(FAST) for m in TRAINED}}
    return {}


@pytest.fixture(scope="module")
def wordnet() -> dict:
    with np.load(DATA) as f:
        old, new, labels = f["minilm"].astype(np.float32), f["mpnet"].astype(np.float32), f["labels"]
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train.extend(idx[: len(idx) // 2])
        test.extend(idx[len(idx) // 2 :])
    train, test = np.array(train), np.array(test)
    ts = EvalSet(old[test], new[test], labels[test])
    return {"old": old[train], "new": new[train], "labels": labels[train], "test": ts, "rows": baseline_rows(ts)}


@pytest.mark.parametrize("d_new,d_old", [(4, 6), (6, 4), (5, 5)])
def test_procrustes_recovers_a_rotation_across_unequal_dims(d_new, d_old) -> None:
    rng = np.random.default_rng(1)
    d = min(d_new, d_old)
    core = rng.normal(size=(500, d)).astype(np.float32)
    core /= np.linalg.norm(core, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    def pad(x, w):
        return np.hstack([x, np.zeros((len(x), w - x.shape[1]), np.float32)])

    x_new, x_old = pad(core, d_new), pad((core @ q).astype(np.float32), d_old)
    adapter = Procrustes(center=False)
    adapter.fit(x_old, x_new)
    mapped = adapter.transform(x_new)
    assert mapped.shape == (500, d_old)
    np.testing.assert_allclose(mapped, x_old, atol=1e-4)


def test_baseline_rows_show_the_spaces_differ(wordnet) -> None:
    rows = wordnet["rows"]
    assert rows["new/new"]["top1"] > rows["old/old"]["top1"] > 5 * rows["new/old raw"]["top1"]


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_maps_new_queries_into_the_old_space(wordnet, name, tmp_path) -> None:
    adapter = create(name, **fast_params(name))
    report = adapter.fit(wordnet["old"], wordnet["new"], wordnet["labels"], seed=0)
    assert report.fit_seconds > 0
    row = method_row(adapter, wordnet["test"], wordnet["rows"])
    raw = wordnet["rows"]["new/old raw"]["mAP@R"]
    assert row["new/old"]["mAP@R"] > 5 * raw, f"{name} did not make the spaces comparable"
    test: EvalSet = wordnet["test"]
    extra = test.old if adapter.needs_old_query else None
    before = adapter.transform(test.new, extra)
    assert before.shape == (len(test.new), 384) and np.isfinite(before).all()
    # save / load round trip gives the same transformation
    saved = adapter.save(tmp_path / name)
    assert (saved / "weights.safetensors").exists() and (saved / "config.json").exists()
    again = load(saved)
    np.testing.assert_allclose(again.transform(test.new, extra), before, rtol=1e-5, atol=1e-5)
    assert again.report is not None and again.report.method == name


@pytest.mark.parametrize("name", sorted(TRAINED - {"oca"}))
def test_trained_methods_are_deterministic_and_work_without_labels(wordnet, name) -> None:
    a = create(name, **FAST)
    b = create(name, **FAST)
    a.fit(wordnet["old"], wordnet["new"], None, seed=3)
    b.fit(wordnet["old"], wordnet["new"], None, seed=3)
    q = wordnet["test"].new[:20]
    np.testing.assert_array_equal(a.transform(q), b.transform(q))
    assert a.report.curve and a.report.curve[0]["step"] == 0


def test_oca_refuses_to_fit_without_labels_instead_of_returning_procrustes(wordnet) -> None:
    """Every OCA loss is label-based; without labels its orthogonal layer could only be Procrustes."""
    with pytest.raises(ValueError, match="oca needs labels"):
        create("oca", **FAST).fit(wordnet["old"], wordnet["new"], None)


def test_oca_keeps_new_new_geometry(wordnet) -> None:
    """OCA's layer is orthogonal: distances between centred new vectors are unchanged."""
    adapter = create("oca", **FAST)
    adapter.fit(wordnet["old"], wordnet["new"], wordnet["labels"], seed=0)
    x = wordnet["test"].new[:50]
    x = x / np.linalg.norm(x, axis=1, keepdims=True) - adapter.mu_new
    h = adapter.transform_new(wordnet["test"].new[:50])
    np.testing.assert_allclose(h @ h.T, x @ x.T, atol=1e-4)


def test_adjoint_scores_old_vectors_as_if_regressed_into_the_new_space(wordnet) -> None:
    """<G^T q, o> = <q, G o>: the pure adjoint ranks old vectors exactly as the new query would rank
    their old -> new regressions (the gallery-side map), which is the method's reason to exist."""
    adapter = create("adjoint", blends=[1.0])
    adapter.fit(wordnet["old"], wordnet["new"], None, seed=0)
    test: EvalSet = wordnet["test"]
    q = test.new[:40] / np.linalg.norm(test.new[:40], axis=1, keepdims=True) - adapter.mu_new
    via_query = adapter.transform(test.new[:40]) @ test.old.T
    via_gallery = q @ (adapter.forward(test.old) - adapter.mu_new).T
    # the query side is normalised (a per-query factor) and mu_old shifts each query's scores by a constant
    scale = np.linalg.norm(q @ adapter.adjoint.T, axis=1, keepdims=True)
    shift = (q @ adapter.adjoint.T) @ adapter.mu_old
    np.testing.assert_allclose(via_query * scale, via_gallery + shift[:, None], rtol=1e-3, atol=1e-4)


def test_adjoint_beats_point_wise_alignment_and_is_deterministic(wordnet) -> None:
    """On real MiniLM -> mpnet pairs, with or without labels for its (alpha, t) choice."""
    procrustes = create("procrustes")
    procrustes.fit(wordnet["old"], wordnet["new"])
    base = method_row(procrustes, wordnet["test"], wordnet["rows"])["new/old"]["mAP@R"]
    for labels in (wordnet["labels"], None):
        a, b = create("adjoint"), create("adjoint")
        a.fit(wordnet["old"], wordnet["new"], labels, seed=2)
        b.fit(wordnet["old"], wordnet["new"], labels, seed=2)
        np.testing.assert_array_equal(a.transform(wordnet["test"].new), b.transform(wordnet["test"].new))
        row = method_row(a, wordnet["test"], wordnet["rows"])
        assert row["ecc"] and row["new/old"]["mAP@R"] > base, (row, base)
        assert len(a.report.notes["cv_mAP@R"]) == 15


def test_neighbour_memory_adds_the_mean_old_vector_of_the_querys_nearest_pairs(wordnet) -> None:
    """z = normalize(adjoint(q)) + beta * normalize(mean old vector of the k pairs nearest to q by
    the new model), checked against a brute-force reading of that formula; the memory is capped
    and stored as float16, and beta = 0 is the adjoint itself."""
    from adapters.vectors import normalize

    old, new, q = wordnet["old"], wordnet["new"], wordnet["test"].new[:25]
    memory = create("neighbour_memory", k=7, beta=0.5, max_memory=150)
    report = memory.fit(old, new, None, seed=2)
    assert report.notes["memory_pairs"] == 150 and memory.memory_new.dtype == np.float16
    kept_new, kept_old = memory.memory_new.astype(np.float32), memory.memory_old.astype(np.float32)
    nearest = np.argsort(-(normalize(q) @ kept_new.T), axis=1)[:, :7]
    expected = normalize(memory.adjoint.transform(q)) + 0.5 * normalize(kept_old[nearest].mean(axis=1))
    np.testing.assert_allclose(memory.transform(q), expected, rtol=1e-4, atol=1e-5)
    # each kept row is a real pair: the old and the new vector of one item
    rows = [int(np.argmin(np.abs(normalize(new) - row).sum(axis=1))) for row in kept_new[:5]]
    np.testing.assert_allclose(kept_old[:5], normalize(old)[rows], atol=2e-3)
    adjoint = create("adjoint")
    adjoint.fit(old, new, None, seed=2)
    zero = create("neighbour_memory", beta=0.0)
    assert zero.fit(old, new, None, seed=2).notes["k"] == 30
    np.testing.assert_allclose(zero.transform(q), normalize(adjoint.transform(q)), rtol=1e-5, atol=1e-6)
    for bad in ({"k": 0}, {"k": 2.5}, {"k": True}, {"beta": -1.0}, {"beta": "0.5"}, {"beta": float("nan")},
                {"max_memory": 0}):
        with pytest.raises(ValueError):
            create("neighbour_memory", **bad)  # refused at creation: the service answers 422 before a job


def test_auto_offers_trained_methods_only_where_they_were_measured_to_move(wordnet) -> None:
    """~240 pairs: the trained methods and the neighbour memory are not fitted at all (each says
    why); auto is closed-form."""
    auto = create("auto")
    notes = auto.fit(wordnet["old"], wordnet["new"], wordnet["labels"], seed=0).notes
    assert set(notes["candidates"]) == {"procrustes", "affine", "adjoint", "hedge"}
    assert {n: v["reason"] for n, v in notes["not_ranked"].items()} == dict.fromkeys(
        TRAINED | {"neighbour_memory"}, "needs_pairs")
    free = create("auto").fit(wordnet["old"], wordnet["new"], None, seed=0).notes["not_ranked"]
    assert free["oca"]["reason"] == "needs_labels" and free["bt2"]["reason"] == "needs_pairs"


def test_auto_screens_trained_candidates_on_the_first_fold_and_reports_every_one(wordnet) -> None:
    auto = create("auto", trained_min_pairs=0, **fast_params("auto"))
    report = auto.fit(wordnet["old"], wordnet["new"], wordnet["labels"], seed=0)
    notes = report.notes
    # every candidate is either ranked or said to be dropped, never both; trained_min_pairs opens
    # the gate for trained methods only (the neighbour memory keeps its own)
    assert set(notes["candidates"]) | set(notes["not_ranked"]) == {"procrustes", "affine", "adjoint", "hedge",
                                                                   *TRAINED, "neighbour_memory"}
    assert not set(notes["candidates"]) & set(notes["not_ranked"])
    assert notes["not_ranked"].pop("neighbour_memory")["reason"] == "needs_pairs"
    for name, why in notes["not_ranked"].items():
        assert name in TRAINED and why["reason"] in {"stayed_at_start", "screened_out"} and why["fit_seconds"] > 0
    stayed = {n for n, v in notes["not_ranked"].items() if v["reason"] == "stayed_at_start"}
    assert set(notes["stayed_at_start"]) == stayed
    # ~240 training pairs < min_eval_items: every pair is scored out-of-fold; 6 of 12 classes unseen
    assert notes["holdout_size"] == len(wordnet["old"]) and notes["holdout_unseen"] == len(wordnet["old"]) // 2
    base = {part: max(notes["candidates"][b][f"{part}_mAP@R"] for b in ("procrustes", "affine"))
            for part in ("unseen", "seen")}
    for name, r in notes["candidates"].items():  # the worse of the two parts' gains over the best baseline
        expected = min(r["unseen_mAP@R"] / base["unseen"], r["seen_mAP@R"] / base["seen"])
        assert r["rank_score"] == pytest.approx(expected), name
    assert notes["selection_repeats"] == 3 and notes["rank_by"] == "worse_gain"
    chosen = notes["hedged_from"] or notes["selected"]  # the pick before a closed form is served as the hedge
    assert notes["candidates"][chosen]["support"]["supported"]
    passing = [n for n, r in notes["candidates"].items() if r["ecc"] and r["support"]["supported"]]
    if passing:
        assert chosen in passing and notes["selected_passes_ecc"]
        assert notes["candidates"][chosen]["rank_score"] == max(notes["candidates"][n]["rank_score"] for n in passing)
    assert auto.transform(wordnet["test"].new[:5]).shape == (5, 384)


def test_auto_without_labels_ranks_by_clusters_both_models_agree_on(wordnet) -> None:
    auto = create("auto")
    notes = auto.fit(wordnet["old"], wordnet["new"], None, seed=0).notes
    assert notes["holdout_relevance"] == "consensus-neighbours"  # the ECC verdicts stay neutral
    assert notes["holdout_unseen"] == 0
    ranked = {n: r["selection_mAP@R"] for n, r in notes["candidates"].items()}
    ok = {n for n, r in notes["candidates"].items() if r["support"]["supported"]}
    passing = {n for n, r in notes["candidates"].items() if r["ecc"]}
    group = next(g for g in (ok & passing, passing, ok, set(ranked)) if g)  # the documented order
    picked = max(group, key=ranked.get)
    assert (notes["hedged_from"] or notes["selected"]) == picked
    if picked in HEDGED_PICKS and (passing >= {"hedge"} or picked not in passing):
        assert notes["selected"] == "hedge" and notes["hedged_from"] == picked  # a closed-form pick is hedged
    assert len(set(ranked.values())) > 1, "the clusters must tell the candidates apart"


def test_hedge_blends_the_adjoint_and_procrustes_queries_at_a_fixed_share(wordnet, tmp_path) -> None:
    from adapters.methods.hedge import hedged

    old, new, labels = wordnet["old"], wordnet["new"], wordnet["labels"]
    queries = wordnet["test"].new[:50]
    adjoint, procrustes = create("adjoint"), create("procrustes")
    adjoint.fit(old, new, labels, seed=4)
    procrustes.fit(old, new)
    hedge = create("hedge")
    hedge.fit(old, new, labels, seed=4)  # labels reach the inner adjoint's cross-validation
    a, p = adjoint.transform(queries), procrustes.transform(queries)
    got = hedge.transform(queries)
    np.testing.assert_allclose(got, hedged(a, p, 0.5), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    for share, end in ((0.0, p), (1.0, a)):  # a share of 0 or 1 is that part alone (by direction)
        np.testing.assert_allclose(hedged(a, p, share), end / np.linalg.norm(end, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(load(hedge.save(tmp_path / "hedge")).transform(queries), got, atol=1e-6)
    np.testing.assert_allclose(hedge.forward(wordnet["test"].old[:5]), adjoint.forward(wordnet["test"].old[:5]))
    for bad in (1.5, -0.1, True, "0.5", None):
        with pytest.raises(ValueError, match="adjoint_share"):  # refused at creation: the service answers 422
            create("hedge", adjoint_share=bad)
    with pytest.raises(ValueError, match="adjoint_params must be an object"):
        create("hedge", adjoint_params=[1.0])
    with pytest.raises(ValueError, match="unknown parameters"):
        create("hedge", procrustes_params={"centre": False})


def test_auto_serves_a_closed_form_pick_as_the_hedge_scored_out_of_fold_like_the_others(wordnet) -> None:
    """The hedge's out-of-fold queries are the blend of its parts' (no extra fit), its row is ranked
    and supported like any candidate's, and a closed-form pick is served as the hedge; a caller who
    ranks by one part (knows the gallery's categories), or turns hedging off, gets the pick itself."""
    from adapters.methods.auto import Auto, add_hedge, out_of_fold, selection_folds
    from adapters.methods.hedge import hedged

    old, new, labels = wordnet["old"], wordnet["new"], wordnet["labels"]
    params = {**Auto.default_params(), "min_eval_items": 1}
    oof = out_of_fold(["procrustes", "adjoint"], old, new, labels, params, seed=3, progress=lambda f, m: None,
                      screen=None)
    add_hedge(oof, 0.5)
    parts, _ = selection_folds(len(old), labels, 3, seed=3)
    rest = np.setdiff1d(np.arange(len(old)), parts[0])
    alone = create("hedge")
    alone.fit(old[rest], new[rest], labels[rest], seed=3)
    np.testing.assert_allclose(oof.queries["hedge"], alone.transform(new[parts[0]]), atol=1e-5)
    np.testing.assert_allclose(oof.queries["hedge"], hedged(oof.queries["adjoint"], oof.queries["procrustes"], 0.5))

    auto = create("auto")
    notes = auto.fit(old, new, labels, seed=0).notes
    assert "hedge" in notes["candidates"] and "support" in notes["candidates"]["hedge"]
    assert notes["hedged_from"] in HEDGED_PICKS and notes["selected"] == "hedge"
    assert auto.chosen.name == "hedge" and auto.transform(wordnet["test"].new[:5]).shape == (5, 384)
    # the served hedge's parts get the parameters auto scored them with (label-free: one draw, cheaper)
    tuned = create("auto", method_params={"adjoint": {"alphas": [1.0]}, "hedge": {"adjoint_share": 0.75}})
    tuned.fit(old, new, None, seed=0)
    assert tuned.chosen.name == "hedge" and tuned.chosen.params["adjoint_share"] == 0.75
    assert tuned.chosen.params["adjoint_params"] == {"alphas": [1.0]}
    assert tuned.chosen.adjoint.report.notes["alpha"] == 1.0
    closed = {"methods": ["procrustes", "affine", "adjoint"], "repeats": 1}
    for off, fit_labels in (({"hedge_closed_forms": False}, None), ({"hedge_max_pairs": 100}, None),
                            ({"rank_by": "seen"}, labels)):
        plain = create("auto", **closed, **off).fit(old, new, fit_labels, seed=0).notes
        assert "hedge" not in plain["candidates"] and plain["hedged_from"] is None
        assert plain["selected"] in HEDGED_PICKS and plain["hedge_declined"] is None


def test_hedge_pick_keeps_the_pick_when_procrustes_lies_far_below_the_adjoint_or_only_the_pick_passes() -> None:
    """The guard: a closed-form pick is kept when out-of-fold Procrustes scores below the minimum
    share of the adjoint (the blend would drag the adjoint down), or when it passes the ECC and the
    hedge does not; a pick that fails is hedged; trained picks are never hedged."""
    from adapters.methods.auto import hedge_declined, hedge_pick

    def rows(old_old: float = 0.20, **scores: float) -> dict:
        return {name: {"new/old": {"mAP@R": value}, "ecc": value > old_old} for name, value in scores.items()}

    close = rows(adjoint=0.23, hedge=0.22, procrustes=0.21)  # Procrustes at 91% of the adjoint
    far = rows(adjoint=0.23, hedge=0.21, procrustes=0.17)  # at 74%
    assert hedge_pick("adjoint", close, 0.8) == "hedge" and hedge_pick("adjoint", far, 0.8) == "adjoint"
    assert hedge_pick("adjoint", far, 0.7) == "hedge" and hedge_pick("adjoint", far, 0.0) == "hedge"
    assert hedge_pick("adjoint", rows(adjoint=0.23, hedge=0.19, procrustes=0.21), 0.8) == "adjoint"  # only it passes
    assert hedge_pick("procrustes", rows(adjoint=0.19, hedge=0.19, procrustes=0.18), 0.8) == "hedge"  # none passes
    assert hedge_pick("lambda_orth", {**close, **rows(lambda_orth=0.3)}, 0.8) == "lambda_orth"
    assert hedge_pick("adjoint", rows(adjoint=0.23, procrustes=0.21), 0.8) == "adjoint"  # no hedge offered
    why = hedge_declined("adjoint", far, 0.20, 0.8)
    assert why["reason"] == "procrustes_far_below" and abs(why["procrustes_ratio"] - 0.17 / 0.23) < 1e-12
    assert "74% of the adjoint's mAP@R" in why["note"]
    assert hedge_declined("adjoint", rows(adjoint=0.23, hedge=0.19, procrustes=0.21), 0.20, 0.8)["reason"] == "ecc"
    for bad in (-0.01, 1.5, float("nan"), "0.8", True):
        with pytest.raises(ValueError, match="hedge_min_procrustes_ratio"):
            create("auto", hedge_min_procrustes_ratio=bad)


def test_auto_keeps_its_pick_when_procrustes_lies_below_the_required_share_of_the_adjoint() -> None:
    """End to end on pairs where a new encoder sees the same categories with less noise: with the
    default share the pick is hedged; asking for Procrustes at the adjoint's level (which it is not,
    out-of-fold) keeps the pick, and the notes say why."""
    old, new, labels = less_noisy_successor()
    closed = {"methods": ["procrustes", "affine", "adjoint"], "repeats": 1}
    plain = create("auto", **closed).fit(old, new, labels, seed=0).notes
    pick, scores = plain["hedged_from"], plain["candidates"]
    assert pick in HEDGED_PICKS and plain["selected"] == "hedge" and plain["hedge_declined"] is None
    assert 0.8 <= scores["procrustes"]["new/old"]["mAP@R"] / scores["adjoint"]["new/old"]["mAP@R"] < 1.0
    guarded = create("auto", **closed, hedge_min_procrustes_ratio=1.0).fit(old, new, labels, seed=0).notes
    assert guarded["selected"] == pick and guarded["hedged_from"] is None
    declined = guarded["hedge_declined"]
    assert declined["reason"] == "procrustes_far_below" and declined["min_procrustes_ratio"] == 1.0
    assert "so blending them would drag the adjoint down" in declined["note"]


def test_auto_chooses_the_baseline_when_the_evidence_for_a_richer_map_is_weak() -> None:
    """A candidate ranked first on mAP@R but losing top-1 item by item is not supported; one ahead on
    both is. Differences are paired per item against the best-ranked baseline."""
    from adapters.methods.auto import PoolScores, choose_supported, support

    rng = np.random.default_rng(0)
    n = 2_000
    base = np.stack([rng.random(n) < 0.5, rng.random(n) * 0.3], axis=1).astype(float)

    def shifted(top1_flip: float, ap_gain: float) -> np.ndarray:
        out = base.copy()
        flip = rng.random(n) < abs(top1_flip)
        out[flip, 0] = 0.0 if top1_flip < 0 else 1.0
        out[:, 1] += ap_gain
        return out

    row = {"new/old": {"top1": 0.5, "mAP@R": 0.2}, "ecc": True, "fit_seconds": 0.1}
    rows = {k: {"top1": 0.4, "mAP@R": 0.1} for k in ("old/old", "new/new", "new/old raw")}
    per_item = {"procrustes": base, "affine": base - 0.01, "adjoint": shifted(-0.08, 0.02)}
    scores = PoolScores({k: dict(row) for k in per_item}, {}, rows, "label", per_item)
    ranking = {"procrustes": 1.0, "affine": 0.9, "adjoint": 1.2}
    reference, supported = support(scores, ranking, z=1.0, tolerance=0.005)
    assert reference == "procrustes" and supported["adjoint"]["top1"]["lower_bound"] < -0.005
    assert not supported["adjoint"]["supported"]
    assert choose_supported(scores.results, ranking, supported) == "procrustes"
    scores.per_item["adjoint"] = shifted(0.05, 0.02)  # ahead on both: chosen
    _, supported = support(scores, ranking, z=1.0, tolerance=0.005)
    assert supported["adjoint"]["supported"] and choose_supported(scores.results, ranking, supported) == "adjoint"


def test_auto_can_rank_by_one_part_for_callers_who_know_their_categories(wordnet) -> None:
    closed_form = ["procrustes", "affine", "adjoint"]
    auto = create("auto", methods=closed_form, rank_by="seen")
    notes = auto.fit(wordnet["old"], wordnet["new"], wordnet["labels"], seed=0).notes
    for r in notes["candidates"].values():
        assert r["rank_score"] == r["seen_mAP@R"]
    with pytest.raises(ValueError, match="rank_by"):  # refused at creation: the service answers 422
        create("auto", rank_by="best")


@pytest.mark.parametrize("with_labels", [True, False])
def test_selection_folds_partition_the_pairs(wordnet, with_labels) -> None:
    from adapters.methods.auto import selection_folds

    labels = wordnet["labels"] if with_labels else None
    parts, unseen = selection_folds(len(wordnet["old"]), labels, 3, seed=4)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(wordnet["old"])))
    if not with_labels:
        assert not unseen.any()
        return
    fold_of = np.empty(len(unseen), dtype=int)
    for f, p in enumerate(parts):
        fold_of[p] = f
    for c in np.unique(labels):
        members = labels == c
        assert unseen[members].all() or not unseen[members].any()
        if unseen[members].all():  # an unseen class lies wholly in one fold: its maps never saw it
            assert len(np.unique(fold_of[members])) == 1
        else:  # a seen class is spread over every fold
            assert len(np.unique(fold_of[members])) == 3
    assert len(np.unique(labels[unseen])) == len(np.unique(labels)) // 2
    again, _ = selection_folds(len(wordnet["old"]), labels, 3, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_out_of_fold_queries_come_from_maps_that_never_saw_the_pair(wordnet) -> None:
    from adapters.methods.auto import Auto, out_of_fold, selection_folds

    old, new, labels = wordnet["old"], wordnet["new"], wordnet["labels"]
    params = {**Auto.default_params(), "min_eval_items": 1}  # stop after the first fold
    oof = out_of_fold(["procrustes"], old, new, labels, params, seed=3, progress=lambda f, m: None, screen=None)
    parts, unseen = selection_folds(len(old), labels, 3, seed=3)
    np.testing.assert_array_equal(oof.pool, parts[0])
    np.testing.assert_array_equal(oof.unseen, unseen[parts[0]])
    rest = np.setdiff1d(np.arange(len(old)), parts[0])
    alone = Procrustes()
    alone.fit(old[rest], new[rest])
    np.testing.assert_allclose(oof.queries["procrustes"], alone.transform(new[parts[0]]), atol=1e-5)
    capped = out_of_fold(["procrustes"], old, new, labels, {**params, "max_eval_items": 30}, 3, lambda f, m: None, None)
    assert len(capped.pool) == 30 and set(capped.pool) <= set(parts[0])


def test_cluster_labels_find_separated_groups() -> None:
    from adapters.metrics import cluster_labels

    rng = np.random.default_rng(0)
    centres = np.eye(6, dtype=np.float32)[:3] * 5
    x = np.repeat(centres, 20, axis=0) + rng.normal(scale=0.05, size=(60, 6)).astype(np.float32)
    labels = cluster_labels(x, items_per_cluster=20, seed=1)
    assert len(np.unique(labels)) == 3
    for g in range(3):  # each true group is exactly one cluster
        assert len(np.unique(labels[g * 20 : (g + 1) * 20])) == 1
    np.testing.assert_array_equal(labels, cluster_labels(x, items_per_cluster=20, seed=1))


def test_bad_inputs_are_rejected() -> None:
    adapter = create("procrustes")
    with pytest.raises(ValueError, match="paired"):
        adapter.fit(np.ones((5, 3)), np.ones((4, 3)))
    bad = np.ones((5, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        adapter.fit(bad, np.ones((5, 3)))
    with pytest.raises(ValueError, match="unknown method"):
        create("nope")
    with pytest.raises(ValueError, match="unknown parameters"):
        create("oca", wrong=1)
    with pytest.raises(RuntimeError, match="fit"):
        adapter.transform(np.ones((2, 3)))
    assert set(METHODS) == {*ALL_METHODS, "auto"}


def test_worse_gain_ranking_is_not_rescaled_by_one_exceptional_candidate() -> None:
    """worse_gain measures each part against the baselines, so a candidate far ahead on one part
    (bt2 on seen classes) cannot lower everyone else's score there; worse_part can be swayed."""
    from adapters.methods.auto import PoolScores, average_pools, rank_candidates

    def pool(bt2_seen: float) -> PoolScores:
        parts = {"unseen": {"procrustes": 0.30, "affine": 0.28, "adjoint": 0.33, "bt2": 0.27},
                 "seen": {"procrustes": 0.30, "affine": 0.31, "adjoint": 0.34, "bt2": bt2_seen}}
        row = {"new/old": {"top1": 0.5, "mAP@R": 0.3}, "ecc": False, "fit_seconds": 1.0}
        rows = {k: {"top1": 0.4, "mAP@R": 0.2} for k in ("old/old", "new/new", "new/old raw")}
        return PoolScores({n: dict(row) for n in parts["seen"]}, parts, rows, "label")

    modest, exceptional = pool(0.36), pool(0.60)
    gain_modest, gain_exceptional = rank_candidates(modest, "worse_gain"), rank_candidates(exceptional, "worse_gain")
    assert gain_modest["adjoint"] == pytest.approx(min(0.33 / 0.30, 0.34 / 0.31))
    assert gain_exceptional["adjoint"] == gain_modest["adjoint"]  # unchanged by bt2's seen score
    assert max(gain_exceptional, key=gain_exceptional.get) == "adjoint"  # bt2 is below the baselines on unseen
    part = rank_candidates(exceptional, "worse_part")
    assert max(part, key=part.get) == "bt2"  # 0.27/0.33 = 0.82 beats adjoint's 0.34/0.60 = 0.57
    merged = average_pools([modest, exceptional])
    assert merged.parts["seen"]["bt2"] == pytest.approx(0.48) and merged.results["bt2"]["fit_seconds"] == 2.0
    assert merged.results["bt2"]["ecc"]  # the verdict is taken again on the means (0.3 > 0.2), not copied


def test_a_training_run_that_never_beats_its_start_says_so() -> None:
    import torch

    from adapters.training import TrainConfig, split_indices, train_loop

    def run(target: float) -> bool:
        weight = torch.nn.Parameter(torch.zeros(1))
        module = torch.nn.Module()
        module.weight = weight
        data = torch.full((64,), target)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            return ((weight - data[idx]) ** 2).mean()

        cfg = TrainConfig(lr=0.05, max_steps=60, min_steps=60, eval_every=5, patience=3)
        gen = torch.Generator().manual_seed(0)
        report = train_loop(module, loss, split_indices(64, cfg, gen), cfg, gen, lambda f, m: None, "toy")
        return report.stayed_at_start

    assert run(target=0.0)  # already at the optimum: every step is at best a tie
    assert not run(target=1.0)  # training moves it
