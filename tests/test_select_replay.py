"""bench.select_replay: replaying a ranking rule over stored out-of-fold scores."""

from __future__ import annotations

from bench.compat import summarise
from bench.select_replay import LABELLED_RULES, replay

METHODS = ["procrustes", "affine", "adjoint", "lambda_orth", "oca", "bt2"]  # the candidates of the stored runs


def metric(v: float) -> dict[str, float]:
    return {"top1": v, "mAP@R": v}


def fake_run(seed: int, test_map: dict[str, float], oof: dict[str, tuple[float, float, bool]]) -> dict:
    """One labelled compat run: test mAP@R (= top-1 here) per method, out-of-fold (unseen, seen, ecc)."""
    return {"pair": "a:b", "split": "class-disjoint", "seed": seed, "mode": "labels", "report": {
        "train_pairs": 100, "selected": "procrustes",
        "rows": {"old/old": metric(0.5), "new/new": metric(0.6), "new/old raw": metric(0.0)},
        "methods": {m: {"new/old": metric(test_map[m]), "ecc": test_map[m] > 0.5, "fit_seconds": 1.0}
                    for m in METHODS},
        "selection": {"holdout_candidates": {
            m: {"new/old": metric((u + s) / 2), "unseen_mAP@R": u, "seen_mAP@R": s, "ecc": e}
            for m, (u, s, e) in oof.items()}},
    }}


def test_replay_picks_by_the_rule_among_candidates_that_pass_and_scores_the_bar() -> None:
    test_map = {"procrustes": 0.52, "affine": 0.51, "adjoint": 0.55, "lambda_orth": 0.5, "oca": 0.52, "bt2": 0.45}
    oof = {m: (0.30, 0.30, True) for m in METHODS}
    oof["adjoint"] = (0.33, 0.31, True)   # best on unseen
    oof["bt2"] = (0.29, 0.45, True)        # large seen-class lead, below the baselines on unseen classes
    oof["oca"] = (0.40, 0.50, False)       # best everywhere but fails the ECC: never picked
    runs = [fake_run(0, test_map, oof), fake_run(1, test_map, oof)]
    worse = summarise(replay(runs, LABELLED_RULES["worse part"]))[0]
    unseen = summarise(replay(runs, LABELLED_RULES["unseen only"]))[0]
    assert worse["auto"]["selected"] == ["bt2", "bt2"] and not worse["bar_met"]  # 0.45 < procrustes 0.52
    assert unseen["auto"]["selected"] == ["adjoint", "adjoint"] and unseen["bar_met"]
    assert runs[0]["report"]["selected"] == "procrustes"  # the stored runs are not modified
    gain = summarise(replay(runs, LABELLED_RULES["worse gain (current)"]))[0]
    # measured against the baselines, bt2's seen lead no longer rescales adjoint's seen score:
    # adjoint min(0.33, 0.31) / 0.30 = 1.03 beats bt2 min(0.29 / 0.30, 0.45 / 0.30) = 0.97
    assert gain["auto"]["selected"] == ["adjoint", "adjoint"] and gain["bar_met"]


def test_the_bar_needs_the_ecc_wherever_another_method_passes_it() -> None:
    """Beating both baselines is not enough when auto's pick fails the ECC and another method passes."""
    test_map = {"procrustes": 0.40, "affine": 0.41, "adjoint": 0.45, "lambda_orth": 0.51, "oca": 0.40, "bt2": 0.40}
    oof = {m: (0.30, 0.30, True) for m in METHODS}
    oof["adjoint"] = (0.33, 0.33, True)
    row = summarise(replay([fake_run(0, test_map, oof)], LABELLED_RULES["worse part"]))[0]
    assert row["auto"]["selected"] == ["adjoint"] and row["auto_beats_baselines"]
    assert not row["bar_met"]  # adjoint 0.45 fails the ECC (old/old 0.5); lambda_orth 0.51 passes


def test_support_replay_reproduces_auto_s_choice_from_the_stored_evidence() -> None:
    """A richer map ranked first but behind the baseline on out-of-fold top-1 is chosen only when the
    rule's (z, tolerance) lets that evidence through."""
    from bench.select_replay import replay_support

    test_map = {"procrustes": 0.52, "affine": 0.51, "adjoint": 0.55, "lambda_orth": 0.5, "oca": 0.52, "bt2": 0.45}
    oof = {m: (0.30, 0.30, True) for m in METHODS}
    oof["adjoint"] = (0.33, 0.33, True)
    run = fake_run(0, test_map, oof)
    for name, entry in run["report"]["selection"]["holdout_candidates"].items():
        entry["rank_score"] = 1.1 if name == "adjoint" else 1.0
        entry["support"] = {"supported": True, "versus": "procrustes"} if name in ("procrustes", "affine") else {
            "versus": "procrustes", "items": 500, "supported": False,
            "top1": {"mean_difference": -0.004, "lower_bound": -0.012},  # standard error .008
            "AP@R": {"mean_difference": 0.01, "lower_bound": 0.008}}
    strict = replay_support([run], z=1.0, tolerance=0.005)[0]
    lenient = replay_support([run], z=0.0, tolerance=0.005)[0]
    assert strict["report"]["selected"] == "procrustes"  # -0.004 - 0.008 = -0.012 < -0.005
    assert lenient["report"]["selected"] == "adjoint"  # -0.004 >= -0.005
