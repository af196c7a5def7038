"""The storage layer against SQLite and PostgreSQL: migrations, upserts, atomicity, lookups."""

from __future__ import annotations

import re

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import IntegrityError

from service.store import AlreadyExists, Store
from service.store.db import HEAD_REVISION, alembic_config, make_engine, migrate
from service.store.tables import Base


@pytest.fixture
def store(database_url: str) -> Store:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent: a second start must not fail
    yield Store(engine)
    engine.dispose()


def seed(store: Store, dim: int = 4):
    model = store.create_model("v1", dim, "cosine", None, None)
    coll = store.create_collection("g", model.id, {"kind": "flat"})
    return model, coll


def test_migrations_create_the_schema(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"models", "collections", "items", "item_history", "upgrades", "upgrade_pairs", "transformations",
            "jobs", "collection_retirements", "transformation_files", "index_journal", "alembic_version"} <= tables
    head = ScriptDirectory.from_config(alembic_config(str(store.engine.url))).get_current_head()
    assert head == HEAD_REVISION, "a new migration: set service.store.db.HEAD_REVISION to its revision"
    with store.engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == head
        # The migrations and the table definitions describe the same schema (no drift).
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_unique_names(store: Store) -> None:
    model, _ = seed(store)
    with pytest.raises(AlreadyExists):
        store.create_model("v1", 8, "cosine", None, None)
    with pytest.raises(AlreadyExists):
        store.create_collection("g", model.id, {})


def test_upsert_assigns_row_ids_and_reports_replacements(store: Store) -> None:
    model, coll = seed(store)
    v = np.eye(4, dtype=np.float32)
    first = store.upsert_items(coll.id, model.id, ["a", "b", "c"], v[:3], [{"n": 1}, None, None])
    assert first.created == 3 and first.updated == 0 and first.tag == 3
    a, b, c = first.ids.tolist()
    assert len({a, b, c}) == 3
    second = store.upsert_items(coll.id, model.id, ["b", "d"], v[[3, 0]], [{"n": 2}, None])
    assert second.created == 1 and second.updated == 1 and second.tag == 5
    assert second.ids[0] == b, "a replaced item keeps its row id"
    d = int(second.ids[1])
    assert second.replaced[model.id].tolist() == [b]
    item = store.get_item(coll.id, "b", {model.id: 4}.__getitem__)
    assert item.payload == {"n": 2} and item.seq == 4
    np.testing.assert_array_equal(item.vector, v[3])
    assert store.partition_ids(coll.id, model.id).tolist() == sorted([a, b, c, d])
    assert store.partition_ids(coll.id, model.id, changed_after=3).tolist() == sorted([b, d])
    assert store.item_counts(coll.id) == {model.id: 4}


def test_vectors_round_trip_exactly(store: Store) -> None:
    model, coll = seed(store, dim=7)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(600, 7)).astype(np.float32)  # more than one IN-chunk
    out = store.upsert_items(coll.id, model.id, [f"k{i}" for i in range(600)], v, [None] * 600)
    found, vecs = store.vectors_by_id(coll.id, model.id, out.ids.tolist(), 7)
    by_id = dict(zip(found.tolist(), range(len(found)), strict=True))
    np.testing.assert_array_equal(vecs[[by_id[i] for i in out.ids.tolist()]], v)
    hits = store.hits_by_id(coll.id, [int(out.ids[0]), int(out.ids[599]), 10**12])
    assert hits[int(out.ids[0])].key == "k0" and hits[int(out.ids[599])].key == "k599"
    assert 10**12 not in hits


def test_a_batch_mixing_new_and_existing_items_gets_each_items_own_row(store: Store) -> None:
    """Row ids come back in the batch's order, whatever order the keys sort in and however new and
    existing items interleave (new rows' ids are read back by key, across IN-chunks)."""
    model, coll = seed(store, dim=5)
    rng = np.random.default_rng(1)
    first_keys = [f"item-{n}" for n in rng.permutation(400)]
    first = store.upsert_items(coll.id, model.id, first_keys, rng.normal(size=(400, 5)).astype(np.float32),
                               [None] * 400)
    row_of = dict(zip(first_keys, first.ids.tolist(), strict=True))
    keys = [first_keys[n] for n in range(0, 400, 2)] + [f"new-{n}" for n in rng.permutation(900)]
    keys = [keys[n] for n in rng.permutation(len(keys))]
    v = rng.normal(size=(len(keys), 5)).astype(np.float32)
    out = store.upsert_items(coll.id, model.id, keys, v, [{"n": n} for n in range(len(keys))])
    assert (out.created, out.updated) == (900, 200)
    assert all(int(i) == row_of[k] for k, i in zip(keys, out.ids, strict=True) if k in row_of)
    found, vecs = store.vectors_by_id(coll.id, model.id, out.ids.tolist(), 5)
    by_id = dict(zip(found.tolist(), range(len(found)), strict=True))
    np.testing.assert_array_equal(vecs[[by_id[i] for i in out.ids.tolist()]], v)
    hits = store.hits_by_id(coll.id, out.ids.tolist())
    assert [hits[int(i)].key for i in out.ids] == keys


def test_a_write_looks_rows_up_in_one_statement_each_on_postgresql(store: Store) -> None:
    """A write reads which of its keys exist and the row ids of those it inserted; a re-embedding
    also reads and replaces the vectors kept for older versions. On PostgreSQL each of those is one
    statement with the keys or ids as one array, however many (IN chunks of 500 cost a round trip
    and a plan each: half of PostgreSQL ingest time at 5,000 items a batch); SQLite, which has no
    arrays, keeps the chunks."""
    v1, coll = seed(store, dim=4)
    v2 = store.create_model("v2", 4, "cosine", v1.id, None)
    kinds = {"key lookup": r'^SELECT .* WHERE .*items\."?key"? (IN|=)',
             "kept lookup": r'^SELECT .*FROM "?item_history"? WHERE',
             "kept delete": r'^DELETE FROM "?item_history"?',
             "kept copy": r'^INSERT INTO "?item_history"?'}
    seen: dict[str, int] = dict.fromkeys(kinds, 0)

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        flat = " ".join(statement.split())
        for kind, pattern in kinds.items():
            seen[kind] += bool(re.search(pattern, flat, re.IGNORECASE))

    keys = [f"k{n}" for n in range(1_200)]
    event.listen(store.engine, "before_cursor_execute", count)
    try:
        first = store.upsert_items(coll.id, v1.id, keys, np.ones((1_200, 4), np.float32), [None] * 1_200)
        written = dict(seen)
        again = store.upsert_items(coll.id, v2.id, keys, np.full((1_200, 4), 2, np.float32), [None] * 1_200,
                                   keep_models=frozenset({v1.id}))
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert first.created == 1_200 and len(set(first.ids.tolist())) == 1_200
    assert again.kept == 1_200 and np.array_equal(again.ids, first.ids)
    per_statement = 1 if store.engine.dialect.name == "postgresql" else 3  # ceil(1,200 / 500)
    assert written["key lookup"] == 2 * per_statement, written  # which exist; the new rows' ids
    re_embedding = {kind: seen[kind] - written[kind] for kind in kinds}
    assert re_embedding == {"key lookup": per_statement, "kept lookup": per_statement,
                            "kept delete": per_statement, "kept copy": per_statement}, re_embedding


def test_an_upload_of_keyed_pairs_replaces_them_in_one_statement_on_postgresql(store: Store) -> None:
    """A batch of keyed pairs first deletes the pairs it replaces: one statement on PostgreSQL (the
    keys as one array), IN chunks of 500 on SQLite; the replaced ones are counted either way."""
    v1, _ = seed(store, dim=4)
    v2 = store.create_model("v2", 4, "cosine", v1.id, None)
    upgrade = store.create_upgrade(v1.id, v2.id) or next(u for u in store.list_upgrades()
                                                        if (u.old_model_id, u.new_model_id) == (v1.id, v2.id))
    keys = [f"p{n}" for n in range(1_200)]
    pairs = np.ones((1_200, 4), np.float32)
    assert store.add_pairs(upgrade.id, keys[:600], pairs[:600], pairs[:600], None) == (600, 0)
    deletes: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if re.search(r'^DELETE FROM "?upgrade_pairs"?', statement.lstrip(), re.IGNORECASE):
            deletes.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        assert store.add_pairs(upgrade.id, keys, pairs, pairs, None) == (600, 600)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len(deletes) == (1 if store.engine.dialect.name == "postgresql" else 3), deletes


def test_failed_batch_writes_nothing(store: Store) -> None:
    model, coll = seed(store)
    v = np.eye(4, dtype=np.float32)
    store.upsert_items(coll.id, model.id, ["a"], v[:1], [None])
    with pytest.raises(IntegrityError):
        # the duplicate key violates the unique constraint half-way through the batch
        store.upsert_items(coll.id, model.id, ["x", "y", "x"], v[:3], [None] * 3)
    assert store.item_counts(coll.id) == {model.id: 1}
    assert store.get_collection("g").seq == 1, "the sequence reservation rolls back with the batch"


def test_delete_item(store: Store) -> None:
    model, coll = seed(store)
    store.upsert_items(coll.id, model.id, ["a", "b"], np.eye(4, dtype=np.float32)[:2], [None, None])
    out = store.upsert_items(coll.id, model.id, ["c"], np.eye(4, dtype=np.float32)[:1], [None])
    a_id = store.partition_ids(coll.id, model.id)[0]
    assert store.delete_item(coll.id, "a") == ([model.id], a_id, out.tag + 1)
    assert store.delete_item(coll.id, "a") is None
    assert a_id not in store.partition_ids(coll.id, model.id).tolist()
    assert store.item_counts(coll.id) == {model.id: 2}


def test_a_re_embedding_keeps_the_older_vector_and_a_content_change_drops_it(store: Store) -> None:
    v1, coll = seed(store, dim=4)
    v2 = store.create_model("v2", 3, "cosine", v1.id, None)
    old = np.eye(4, dtype=np.float32)[:2]
    first = store.upsert_items(coll.id, v1.id, ["a", "b"], old, [None, None])
    a, b = first.ids.tolist()
    moved = store.upsert_items(coll.id, v2.id, ["a", "b"], np.ones((2, 3), np.float32), [None, None],
                               keep_models=frozenset({v1.id}))
    assert moved.kept == 2 and moved.replaced == {}  # nothing leaves the v1 partition
    assert store.partition_ids(coll.id, v1.id).tolist() == [a, b]
    assert store.partition_ids(coll.id, v1.id, current_only=True).tolist() == []
    assert store.partition_ids(coll.id, v2.id).tolist() == [a, b]
    assert store.item_counts(coll.id) == {v2.id: 2} and store.kept_counts(coll.id) == {v1.id: 2}
    found, vecs = store.vectors_by_id(coll.id, v1.id, [a, b], 4)
    assert found.tolist() == [a, b] and np.array_equal(vecs, old)  # the kept v1 vectors, byte for byte
    assert store.hits_by_id(coll.id, [a])[a].models == frozenset({v1.id, v2.id})
    # a retried re-embedding (same model again) keeps the v1 vector too
    again = store.upsert_items(coll.id, v2.id, ["a"], np.ones((1, 3), np.float32), [None],
                               keep_models=frozenset({v1.id}))
    assert again.replaced.keys() == {v2.id} and store.kept_counts(coll.id) == {v1.id: 2}
    # new content for "b": nothing is kept, its v1 vector leaves the v1 partition
    changed = store.upsert_items(coll.id, v2.id, ["b"], np.ones((1, 3), np.float32), [None])
    assert {m: ids.tolist() for m, ids in changed.replaced.items()} == {v2.id: [b], v1.id: [b]}
    assert store.partition_ids(coll.id, v1.id).tolist() == [a]
    # a write in the older model supersedes the newer vector: "a" is back in v1 only
    back = store.upsert_items(coll.id, v1.id, ["a"], old[:1] * 2, [None], keep_models=frozenset())
    assert {m: ids.tolist() for m, ids in back.replaced.items()} == {v2.id: [a], v1.id: [a]}
    assert store.hits_by_id(coll.id, [a])[a].models == frozenset({v1.id})
    assert store.kept_counts(coll.id) == {}


def test_delete_and_retire_drop_kept_vectors(store: Store) -> None:
    v1, coll = seed(store, dim=4)
    v2 = store.create_model("v2", 3, "cosine", v1.id, None)
    store.upsert_items(coll.id, v1.id, ["a", "b"], np.eye(4, dtype=np.float32)[:2], [None, None])
    ids = store.upsert_items(coll.id, v2.id, ["a", "b"], np.ones((2, 3), np.float32), [None, None],
                             keep_models=frozenset({v1.id})).ids.tolist()
    models, row_id, _ = store.delete_item(coll.id, "a")
    assert models == [v2.id, v1.id] and row_id == ids[0]
    assert store.partition_ids(coll.id, v1.id).tolist() == [ids[1]]
    assert store.retire_model(coll.id, v1.id) == 0
    assert store.partition_ids(coll.id, v1.id).tolist() == [] and store.kept_counts(coll.id) == {}


def test_a_transformations_files_live_in_the_database_and_materialise_anywhere(store: Store, tmp_path) -> None:
    """Replicas share no disk: a process without the bundle directory writes it from the database."""
    from service.core.bundle_files import bundle_directory, read_bundle_files

    old = store.create_model("tf-old", 4, "cosine", None, None)
    new = store.create_model("tf-new", 4, "cosine", old.id, None)
    up = store.create_upgrade(old.id, new.id) or next(u for u in store.list_upgrades() if u.new_model_id == new.id)
    trained = tmp_path / "trainer" / "transformations" / "u1" / "job1"
    (trained / "to_old").mkdir(parents=True)
    (trained / "to_old" / "weights.safetensors").write_bytes(b"\x00\x01weights")
    (trained / "meta.json").write_text('{"a": 1}')
    files = read_bundle_files(trained)
    assert files == {"meta.json": b'{"a": 1}', "to_old/weights.safetensors": b"\x00\x01weights"}
    record = store.add_transformation(up.id, None, "procrustes", "transformations/u1/job1", True, {}, files=files)
    assert store.transformation_files(record.id) == files

    replica = tmp_path / "replica"
    got = bundle_directory(store, replica, record)
    assert got == replica / record.path and read_bundle_files(got) == files
    assert not list(got.parent.glob("*.partial")), "written atomically: no staging directory left"
    assert bundle_directory(store, replica, record) == got  # the second call reads nothing

    bad = store.add_transformation(up.id, None, "procrustes", "transformations/u1/job2", True, {},
                                   files={"../escape": b"x"})
    with pytest.raises(ValueError, match="unsafe file name"):
        bundle_directory(store, tmp_path / "other", bad)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "other" / "transformations" / "u1" / "job2").exists()


def test_an_upsert_reports_the_records_it_leaves(store: Store) -> None:
    """`UpsertOutcome.models` is exactly what a database read of the written items says (the hit
    cache is filled from it at write time), through creates, kept and dropped re-embeddings."""
    rng = np.random.default_rng(0)
    v1 = store.create_model("v1", 4, "cosine", None, None)
    v2 = store.create_model("v2", 4, "cosine", v1.id, None)
    v3 = store.create_model("v3", 4, "cosine", v2.id, None)
    coll = store.create_collection("g", v1.id, {"kind": "flat"})
    keys = [f"k{i}" for i in range(12)]
    steps = [(v1, keys, frozenset()), (v2, keys[:8], frozenset({v1.id})), (v3, keys[:4], frozenset({v1.id, v2.id})),
             (v3, keys[4:6], frozenset()), (v1, keys[:2], frozenset()), (v2, keys[6:12], frozenset({v1.id}))]
    for model, batch, keep in steps:
        outcome = store.upsert_items(coll.id, model.id, batch, rng.normal(size=(len(batch), 4)).astype(np.float32),
                                     [{"n": i} for i in range(len(batch))], keep_models=keep)
        read = store.hits_by_id(coll.id, outcome.ids.tolist())
        assert [read[i].models for i in outcome.ids.tolist()] == outcome.models, (model.name, batch)


def test_a_gallery_sample_holds_only_items_still_in_that_version_and_is_seeded(store: Store) -> None:
    model, coll = seed(store)
    other = store.create_model("v2", 4, "cosine", None, None)
    v = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    store.upsert_items(coll.id, model.id, [f"k{i}" for i in range(20)], v[:20], [None] * 20)
    store.upsert_items(coll.id, other.id, [f"k{i}" for i in range(20, 30)], v[20:], [None] * 10)

    whole = store.sample_gallery(model.id, 4, limit=100, seed=0)
    assert sorted(map(tuple, whole)) == sorted(map(tuple, v[:20]))  # exactly the v1 items' vectors
    part = store.sample_gallery(model.id, 4, limit=7, seed=3)
    assert part.shape == (7, 4) and {tuple(r) for r in part} <= {tuple(r) for r in v[:20]}
    assert np.array_equal(part, store.sample_gallery(model.id, 4, limit=7, seed=3))
    assert store.sample_gallery(store.create_model("v3", 4, "cosine", None, None).id, 4, 10, 0).shape == (0, 4)
