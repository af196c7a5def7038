"""`nobackfill evaluate`: the offline upgrade report (and the CI gate for model upgrades).

Loads paired embeddings from .npy files, fits the requested transformation(s) on the training
pairs, measures the four rows of methods.md on the test pairs, prints a table and optionally
writes JSON. Exit codes: 0 = the selected method passes the ECC, 3 = none does, 2 = bad input.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

EXIT_OK, EXIT_BAD_INPUT, EXIT_NOT_COMPATIBLE = 0, 2, 3


class BadInput(Exception):
    """A problem with the files given on the command line."""


def read_npy(path: Path, option: str) -> np.ndarray:
    if not path.exists():
        raise BadInput(f"{option}: file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise BadInput(f"{option}: cannot read {path} as .npy ({exc})") from None


def load_matrix(path: Path, option: str) -> np.ndarray:
    arr = read_npy(path, option)
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise BadInput(f"{option}: expected float16/float32 values, got {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise BadInput(f"{option}: expected a 2-d array with at least 2 rows, got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        row = int(np.argmax(~np.isfinite(arr).all(axis=1)))
        raise BadInput(f"{option}: row {row} contains NaN or infinity")
    return arr


def load_labels(path: Path | None, option: str, rows: int) -> np.ndarray | None:
    if path is None:
        return None
    labels = read_npy(path, option)
    if labels.ndim != 1 or len(labels) != rows:
        raise BadInput(f"{option}: expected {rows} labels (one per row), got shape {labels.shape}")
    if labels.dtype.kind not in "iuUS":
        raise BadInput(f"{option}: labels must be integers or strings, got {labels.dtype}")
    return labels


def load_inputs(old_train, new_train, old_test, new_test, labels_train, labels_test) -> dict[str, Any]:
    data = {
        "old_train": load_matrix(old_train, "--old-train"),
        "new_train": load_matrix(new_train, "--new-train"),
        "old_test": load_matrix(old_test, "--old-test"),
        "new_test": load_matrix(new_test, "--new-test"),
    }
    for split in ("train", "test"):
        old, new = data[f"old_{split}"], data[f"new_{split}"]
        if len(old) != len(new):
            raise BadInput(f"row count mismatch: --old-{split} has {len(old)} rows, --new-{split} {len(new)}")
    if data["old_train"].shape[1] != data["old_test"].shape[1]:
        raise BadInput(f"shape mismatch: --old-train has dim {data['old_train'].shape[1]}, "
                       f"--old-test {data['old_test'].shape[1]}")
    if data["new_train"].shape[1] != data["new_test"].shape[1]:
        raise BadInput(f"shape mismatch: --new-train has dim {data['new_train'].shape[1]}, "
                       f"--new-test {data['new_test'].shape[1]}")
    data["labels_train"] = load_labels(labels_train, "--labels-train", len(data["old_train"]))
    data["labels_test"] = load_labels(labels_test, "--labels-test", len(data["old_test"]))
    return data


def parse_params(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"--params: not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        raise BadInput("--params: expected a JSON object")
    return params


def build_report(data: dict[str, Any], method: str, seed: int, progress,
                 params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit and evaluate; the returned dict is the --json document."""
    from adapters import METHODS, candidates, create
    from adapters.evaluate import EvalSet, baseline_rows, method_row
    from adapters.metrics import pairing_metrics

    if method not in METHODS:
        raise BadInput(f"--method: unknown method {method!r}; choose from {', '.join(METHODS)}")
    test = EvalSet(data["old_test"], data["new_test"], data["labels_test"])
    rows = baseline_rows(test)
    # auto: every candidate, the hedge (what auto serves for a closed-form pick on few pairs) and the
    # methods it never picks (slerp), each fitted directly, so the report shows what auto did not choose
    names = ([*candidates(), "hedge", *(m for m, spec in METHODS.items() if not spec.servable)]
             if method == "auto" else [method])
    if data["labels_train"] is None:  # e.g. oca: no objective without labels (it refuses to fit)
        names = [n for n in names if n == method or not METHODS[n].cls.needs_labels]
    methods: dict[str, dict[str, Any]] = {}
    fitted: dict[str, Any] = {}
    total = len(names) + (1 if method == "auto" else 0)
    done = 0

    def fit(name: str) -> Any:
        nonlocal done
        try:
            adapter = create(name, **(params or {}) if name == method else {})
        except ValueError as exc:
            raise BadInput(f"--params: {exc}") from None
        adapter.fit(data["old_train"], data["new_train"], data["labels_train"], seed=seed,
                    progress=lambda f, msg: progress((done + f) / total, msg))
        done += 1
        return adapter

    selected = method
    selection: dict[str, Any] = {}
    if method == "auto":
        auto = fit("auto")
        selected = auto.report.notes["selected"]
        fitted[selected] = auto.chosen
        if selected not in names:  # whatever auto serves gets its row: the exit code and summary read it
            names.append(selected)
        notes = auto.report.notes
        selection = {k: notes[k] for k in ("selected_passes_ecc", "holdout_size", "holdout_unseen",
                                            "holdout_relevance", "selection_repeats", "rank_by", "best_ranked",
                                            "reference_baseline", "not_ranked", "hedged_from", "hedge_declined")}
        selection["auto_fit_seconds"] = auto.report.fit_seconds  # candidates out-of-fold + the refit
        selection["holdout_candidates"] = {
            name: {k: r[k] for k in ("new/old", "ecc", "rank_score", "unseen_mAP@R", "seen_mAP@R",
                                     "selection_mAP@R", "support") if k in r}
            for name, r in notes["candidates"].items()
        }
    queries = data.get("queries_new_test")  # optional asymmetric task: other new-model queries, item i -> gallery i
    asym = {} if queries is None else {"new/new": pairing_metrics(queries, data["new_test"]).as_dict()}
    for name in names:
        adapter = fitted.get(name) or fit(name)
        methods[name] = method_row(adapter, test, rows)
        if queries is not None and not adapter.needs_old_query:
            methods[name]["asym new/old"] = pairing_metrics(adapter.transform(queries), data["old_test"]).as_dict()
        methods[name]["needs_both_query_embeddings"] = adapter.needs_old_query
        if adapter.report and adapter.report.curve:
            methods[name]["curve"] = adapter.report.curve
    progress(1.0, "done")
    return {
        "rows": rows,
        "methods": methods,
        "asymmetric": asym,
        "selected": selected,
        "selection": selection,
        "relevance": test.relevance,
        "test_items": len(test.old),
        "train_pairs": len(data["old_train"]),
        "dims": {"old": int(data["old_train"].shape[1]), "new": int(data["new_train"].shape[1])},
        "seed": seed,
    }


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"upgrade report ({report['train_pairs']} training pairs, {report['test_items']} "
                        f"test items, relevance: {report['relevance']})")
    for col in ("row", "top-1", "top-5", "mAP", "mAP@R", "ECC", "gap closed", "fit s"):
        table.add_column(col, justify="left" if col == "row" else "right")
    for name, m in report["rows"].items():
        table.add_row(name, *(_fmt(m[k]) for k in ("top1", "top5", "mAP", "mAP@R")), "", "", "")
    for name, r in report["methods"].items():
        m = r["new/old"]
        label = f"new/old {name}" + (" *" if name == report["selected"] else "")
        if r.get("needs_both_query_embeddings"):
            label += " (query in both models)"
        table.add_row(label, *(_fmt(m[k]) for k in ("top1", "top5", "mAP", "mAP@R")),
                      "pass" if r["ecc"] else "fail", _fmt(r["gap_closed"]), f"{r['fit_seconds']:.2f}")
    console.print(table)
    sel = report["methods"][report["selected"]]
    console.print(f"selected: [bold]{report['selected']}[/bold] -- ECC (new/old mAP@R > old/old) "
                  f"{'passes' if sel['ecc'] else 'FAILS'}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def run_evaluate(old_train, new_train, old_test, new_test, labels_train, labels_test, method, seed,
                 json_out: Path | None, params: str | None = None) -> int:
    console = Console(stderr=False)
    err = Console(stderr=True)
    try:
        data = load_inputs(old_train, new_train, old_test, new_test, labels_train, labels_test)
        method_params = parse_params(params)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("fitting", total=1.0)
            report = build_report(data, method, seed,
                                  lambda f, msg: bar.update(task, completed=min(1.0, f), description=msg[:60]),
                                  method_params)
    except BadInput as exc:
        err.print(f"[red]error:[/red] {exc}")
        return EXIT_BAD_INPUT
    print_report(report, console)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(_jsonable(report), indent=2) + "\n")
        console.print(f"wrote {json_out}")
    sys.stdout.flush()
    return EXIT_OK if report["methods"][report["selected"]]["ecc"] else EXIT_NOT_COMPATIBLE
