"""The fault run of bench/faults.py, one kill -9 cycle per case below: the service is
killed during ingest (two writers, batches that overwrite earlier ones), during a training job and
during an IVF index rebuild; after each restart every acknowledged item is checked byte for byte in
the database and through the API. `python -m bench.faults --cycles 10` is the long version."""

from __future__ import annotations

import pytest

from bench.faults import SCENARIOS, run_scenario

# Three cycles, one per scenario: ingest on SQLite (the default deployment; test_durability.py
# kills PostgreSQL deployments mid-ingest too), the training job on PostgreSQL (claiming and
# recovery run on SKIP LOCKED there), the IVF rebuild on SQLite (index work, the same on both).
# bench/faults.py runs every scenario on both databases.
CASES = [("sqlite", "ingest"), ("postgresql", "training"), ("sqlite", "rebuild")]
assert {scenario for _, scenario in CASES} == set(SCENARIOS)


@pytest.mark.parametrize(("kind", "scenario"), CASES)
def test_kill_9_loses_and_corrupts_nothing(kind: str, scenario: str, tmp_path, request) -> None:
    if kind == "postgresql":
        request.getfixturevalue("pg_server")  # skips, saying why, when PostgreSQL is unreachable
    # a smaller IVF threshold than the benchmark's keeps the test well under a minute
    [result] = run_scenario(kind, scenario, cycles=1, seed=7, workdir=tmp_path, ivf_train_min=2_000)
    assert not result.restart_failed
    assert result.acknowledged_items > 0 and result.acknowledged_batches > 3
    assert (result.lost, result.corrupted, result.partial, result.unindexed) == (0, 0, 0, 0), result.examples
    if scenario == "training":
        assert result.job is not None and result.job.startswith("succeeded"), result.job
    if scenario == "rebuild":
        assert result.killed_during == "rebuild", "the kill should land while the IVF index is being trained"
