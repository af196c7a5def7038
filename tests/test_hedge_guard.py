"""bench.hedge_guard: it replays auto's own rule on the recorded out-of-fold rows, refuses a replay that
does not reproduce what auto served, and counts what each guard would have cost."""

from __future__ import annotations

import pytest

from bench.hedge_guard import margin_guard, ratio_guard, replayable, rows_above_baselines, summarise


def _run(oof: dict[str, float], test: dict[str, float], served: str, picked: str = "adjoint",
         oof_old_old: float = 0.20, test_old_old: float = 0.20) -> dict:
    def m(v: float) -> dict:
        return {"top1": 0.5, "mAP@R": v}

    maps = {name: m(v) for name, v in test.items()} | {"old/old": m(test_old_old)}
    served_result = maps["adjoint0.5+hedge1" if served == "hedge" else served]
    return {"set": "s", "pair": "a:b", "split": "stratified", "seed": 0, "mode": "labels", "maps": maps,
            "auto_now": {**served_result, "selected": served, "hedged_from": picked if served == "hedge" else None,
                         "out_of_fold": {"old/old": m(oof_old_old), "picked": picked,
                                         "candidates": {n: m(v) for n, v in oof.items()}}}}


# out-of-fold Procrustes at 70% of the adjoint; on the test half the hedge fails the ECC, the adjoint passes
FAR = _run({"procrustes": 0.14, "affine": 0.16, "adjoint": 0.20, "hedge": 0.19},
           {"procrustes": 0.12, "affine": 0.17, "adjoint": 0.21, "adjoint0.5+hedge1": 0.19}, served="hedge",
           oof_old_old=0.18)


def test_the_ratio_guard_is_autos_rule_and_keeps_the_adjoint_where_procrustes_is_far_below() -> None:
    evidence = FAR["auto_now"]["out_of_fold"]
    assert ratio_guard(evidence, 0.0) == "hedge" and ratio_guard(evidence, 0.8) == "adjoint"
    assert margin_guard(evidence, 0.01) == "hedge" and margin_guard(evidence, 0.1) == "adjoint"  # clears by 5.6%
    unguarded, guarded = summarise([FAR], ratio_guard, 0.0), summarise([FAR], ratio_guard, 0.8)
    assert unguarded["ecc_misses"] == 1 and unguarded["served_hedge"] == 1
    assert guarded["ecc_misses"] == 0 and guarded["served_hedge"] == 0
    assert guarded["gain"]["mAP@R"] == pytest.approx(0.21 - 0.17)  # against the better baseline (ridge)


def test_a_replay_that_does_not_reproduce_what_auto_served_is_refused() -> None:
    assert replayable([FAR]) == [FAR]
    wrong = {**FAR, "auto_now": {**FAR["auto_now"], "mAP@R": 0.2}}  # auto served something else
    with pytest.raises(ValueError, match="the replay has"):
        replayable([wrong])
    assert replayable([{**FAR, "auto_now": None}]) == []  # a run without auto's evidence is skipped


def test_rows_above_the_baselines_count_what_auto_serves_now_mean_of_seeds() -> None:
    """The compat tables' "auto > baselines" column, from the replays: a row counts when what auto serves
    is above both baselines on both metrics, seeds averaged."""
    def with_adjoint_top1(run: dict, top1: float) -> dict:
        return {**run, "maps": {**run["maps"], "adjoint": {**run["maps"]["adjoint"], "top1": top1}}}

    # the adjoint (served where the guard declines the hedge) is above on top-1 too; the hedge ties Procrustes
    run = with_adjoint_top1(FAR, 0.56)
    second_seed = {**run, "seed": 1}
    assert rows_above_baselines([run, second_seed], 0.8) == {"s": {"rows": 1, "above": 1}}
    assert rows_above_baselines([run, second_seed], 0.0) == {"s": {"rows": 1, "above": 0}}  # the hedge served
    # averaged over seeds: a second seed far below on top-1 pulls the row under the baselines
    low = {**with_adjoint_top1(FAR, 0.40), "seed": 1}
    assert rows_above_baselines([run, low], 0.8) == {"s": {"rows": 1, "above": 0}}
    assert rows_above_baselines([run, {**run, "split": "class-disjoint"}], 0.8) == {"s": {"rows": 2, "above": 2}}
