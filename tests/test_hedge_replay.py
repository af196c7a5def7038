"""bench.hedge_replay: the blend it measures is the one `hedge` serves, and its counts are right."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.methods.hedge import hedged
from bench.hedge_replay import blend, ecc_misses, rules, table, versus_baselines


def _run(p: tuple, r: tuple, a: tuple, h: tuple, auto: tuple | None = None, old_old: float = 0.1) -> dict:
    def m(v: tuple) -> dict:
        return {"top1": v[0], "mAP@R": v[1]}

    maps = {"procrustes": m(p), "affine": m(r), "adjoint": m(a), "adjoint0.5+hedge1": m(h),
            "old/old": m((0.0, old_old))}
    return {"set": "s", "pair": "a:b", "split": "stratified", "seed": 0, "mode": "labels", "maps": maps,
            "auto": None if auto is None else {"selected": "adjoint", **m(auto)}, "auto_now": None}


def test_the_measured_blend_is_the_served_hedge() -> None:
    rng = np.random.default_rng(0)
    a, p, r = (rng.normal(size=(7, 5)).astype(np.float32) for _ in range(3))
    # Procrustes' share 1 of the baselines' hedge is Procrustes alone: the two-part hedge
    np.testing.assert_allclose(blend(a, blend(p, r, 1.0), 0.5), hedged(a, p, 0.5), atol=1e-6)


def test_losses_are_counted_against_the_better_baseline_on_either_metric() -> None:
    runs = [
        _run((0.50, 0.20), (0.48, 0.21), (0.49, 0.22), (0.499, 0.215), auto=(0.49, 0.22)),  # hedge within .005
        _run((0.50, 0.20), (0.48, 0.21), (0.52, 0.23), (0.490, 0.220), auto=(0.52, 0.23)),  # hedge -.010 top-1
    ]
    assert versus_baselines(runs[0], runs[0]["maps"]["adjoint0.5+hedge1"]) == pytest.approx(
        {"top1": -0.001, "mAP@R": 0.005})
    text = table(runs)
    hedge_row = next(line for line in text.splitlines() if line.startswith("| adjoint0.5+hedge1 |"))
    assert hedge_row.split("|")[2].strip().startswith("1,")  # one of two runs more than .005 below
    auto_row = next(line for line in text.splitlines() if line.startswith("| auto, as run |"))
    assert auto_row.split("|")[2].strip().startswith("1,")  # .49 < .50 - .005
    assert set(rules(runs[0])) >= {"procrustes", "affine", "adjoint", "adjoint0.5+hedge1", "auto, as run"}


def test_an_ecc_miss_is_counted_only_where_another_map_passes() -> None:
    run = _run((0.5, 0.09), (0.5, 0.08), (0.5, 0.11), (0.5, 0.095), old_old=0.10)
    assert ecc_misses(run, run["maps"]["adjoint0.5+hedge1"])  # the adjoint passes, the hedge does not
    nobody = _run((0.5, 0.09), (0.5, 0.08), (0.5, 0.095), (0.5, 0.095), old_old=0.10)
    assert not ecc_misses(nobody, nobody["maps"]["adjoint0.5+hedge1"])
