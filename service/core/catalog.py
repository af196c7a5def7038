"""Model versions, their lineages, and collections: validation rules over the store.

Models and collections are immutable once created (only a collection's change counter moves, and
the catalog never hands that out), so they are cached in memory and refreshed from the store on a
miss. That keeps the query path free of metadata round trips.
"""

from __future__ import annotations

import threading

from index import IndexSpec
from service.core.errors import Conflict, Invalid, NotFound
from service.store import AlreadyExists, CollectionRecord, ModelRecord, Store


class Catalog:
    def __init__(self, store: Store, max_dim: int) -> None:
        self.store = store
        self.max_dim = max_dim
        self._lock = threading.Lock()
        self._models: dict[str, ModelRecord] = {}
        self._models_by_id: dict[int, ModelRecord] = {}
        self._collections: dict[str, CollectionRecord] = {}

    def _refresh_models(self) -> None:
        models = self.store.list_models()
        with self._lock:
            self._models = {m.name: m for m in models}
            self._models_by_id = {m.id: m for m in models}

    # ---- models -------------------------------------------------------------------------------
    def create_model(
        self, name: str, dim: int, metric: str, successor_of: str | None, description: str | None
    ) -> ModelRecord:
        if dim > self.max_dim:
            raise Invalid(f"must be at most {self.max_dim}", "dim")
        parent_id = None
        if successor_of is not None:
            parent_id = self.model(successor_of, field="successor_of").id
        try:
            created = self.store.create_model(name, dim, metric, parent_id, description)
        except AlreadyExists:
            raise Conflict(f"model {name!r} already exists", "name") from None
        self._refresh_models()
        return created

    def model(self, name: str, field: str = "model") -> ModelRecord:
        found = self._models.get(name)
        if found is None:
            self._refresh_models()
            found = self._models.get(name)
        if found is None:
            raise NotFound(f"unknown model {name!r}", field)
        return found

    def model_by_id(self, model_id: int) -> ModelRecord:
        found = self._models_by_id.get(model_id)
        if found is None:
            self._refresh_models()
            found = self._models_by_id[model_id]
        return found

    def models(self) -> list[ModelRecord]:
        self._refresh_models()
        return sorted(self._models.values(), key=lambda m: m.id)

    def _root_id(self, model: ModelRecord) -> int:
        while model.successor_of_id is not None:
            model = self.model_by_id(model.successor_of_id)
        return model.id

    def lineage(self, model: ModelRecord) -> list[ModelRecord]:
        """Every model connected to `model` through successor links (its upgrade tree), oldest first."""
        root = self._root_id(model)
        return [m for m in self.models() if self._root_id(m) == root]

    def descendants(self, model: ModelRecord) -> set[int]:
        """Ids of every model that succeeds `model`, directly or through others."""
        children: dict[int, list[int]] = {}
        for m in self.models():
            if m.successor_of_id is not None:
                children.setdefault(m.successor_of_id, []).append(m.id)
        out: set[int] = set()
        todo = list(children.get(model.id, []))
        while todo:
            mid = todo.pop()
            if mid not in out:
                out.add(mid)
                todo.extend(children.get(mid, []))
        return out

    # ---- collections --------------------------------------------------------------------------
    def create_collection(self, name: str, model_name: str, index_spec: IndexSpec) -> CollectionRecord:
        model = self.model(model_name)
        try:
            return self.store.create_collection(name, model.id, index_spec.to_dict())
        except AlreadyExists:
            raise Conflict(f"collection {name!r} already exists", "name") from None

    def collection(self, name: str) -> CollectionRecord:
        found = self._collections.get(name)
        if found is None:
            found = self.store.get_collection(name)
            if found is None:
                raise NotFound(f"unknown collection {name!r}", "collection")
            with self._lock:
                self._collections[name] = found
        return found

    def collections(self) -> list[CollectionRecord]:
        return self.store.list_collections()

    def model_for_collection(self, collection: CollectionRecord, model_name: str, field: str = "model") -> ModelRecord:
        """Resolve a model name and check it belongs to the collection's lineage."""
        model = self.model(model_name, field)
        base = self.model_by_id(collection.base_model_id)
        if self._root_id(model) != self._root_id(base):
            raise Invalid(
                f"model {model_name!r} is not in the lineage of collection {collection.name!r} "
                f"(which starts at {base.name!r})",
                field,
            )
        return model
