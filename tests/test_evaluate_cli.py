"""`nobackfill evaluate`: report, JSON shape and exit codes (0 compatible, 3 not, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli.main import app

DATA = Path(__file__).parent / "data" / "wordnet_subset.npz"
runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("eval")
    with np.load(DATA) as f:
        old, new, labels = f["minilm"], f["mpnet"], f["labels"]
    train, test = np.arange(0, len(old), 2), np.arange(1, len(old), 2)
    rng = np.random.default_rng(0)
    arrays = {
        "old_train": old[train], "new_train": new[train], "old_test": old[test], "new_test": new[test],
        "labels_train": labels[train], "labels_test": labels[test],
        "noise_train": rng.normal(size=(len(train), 32)).astype(np.float32),
        "noise_test": rng.normal(size=(len(test), 32)).astype(np.float32),
        "short": old[:10], "short_labels": labels[:10], "int_labels": np.unique(labels[test], return_inverse=True)[1],
    }
    nan = old[test].astype(np.float32).copy()
    nan[3, 5] = np.nan
    arrays["nan_test"] = nan
    paths = {}
    for name, arr in arrays.items():
        paths[name] = out / f"{name}.npy"
        np.save(paths[name], arr)
    paths["dir"] = out
    return paths


def args(files, **override) -> list[str]:
    base = {"--old-train": "old_train", "--new-train": "new_train", "--old-test": "old_test",
            "--new-test": "new_test", "--labels-train": "labels_train", "--labels-test": "labels_test"}
    base.update(override)
    out = ["evaluate"]
    for flag, name in base.items():
        if name is not None:
            out += [flag, str(files[name]) if name in files else name]
    return out


def test_compatible_upgrade_exits_0_and_writes_the_json_report(files) -> None:
    out = files["dir"] / "report.json"
    quick = json.dumps({"max_steps": 60, "min_steps": 30, "eval_every": 10})
    result = runner.invoke(app, args(files) + ["--method", "bt2", "--params", quick, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "old/old" in result.output and "new/old bt2" in result.output
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"old/old", "new/new", "new/old raw"}
    assert set(report["rows"]["old/old"]) >= {"top1", "top5", "mAP", "mAP@R"}
    bt2 = report["methods"]["bt2"]
    assert {"new/old", "ecc", "gap_closed", "fit_seconds"} <= set(bt2)
    assert bt2["ecc"] is True and report["selected"] == "bt2"
    assert bt2["new/old"]["mAP@R"] > report["rows"]["old/old"]["mAP@R"]
    assert bt2["curve"][0]["step"] == 0


def test_integer_test_labels_and_no_training_labels_work(files) -> None:
    result = runner.invoke(app, args(files, **{"--labels-train": None, "--labels-test": "int_labels"})
                           + ["--method", "affine"])
    assert result.exit_code in (0, 3), result.output
    assert "new/old affine" in result.output


def test_label_free_report_has_recall_and_mrr(files) -> None:
    out = files["dir"] / "free.json"
    result = runner.invoke(app, args(files, **{"--labels-train": None, "--labels-test": None})
                           + ["--method", "procrustes", "--json", str(out)])
    assert result.exit_code in (0, 3), result.output
    report = json.loads(out.read_text())
    assert report["relevance"] == "consensus-neighbours"
    assert {"recall@1", "recall@10", "MRR"} <= set(report["methods"]["procrustes"]["new/old"])


def test_auto_reports_the_transformation_it_serves_even_when_it_is_the_hedge(files) -> None:
    """auto serves a closed-form pick on few pairs as `hedge`, which is no candidate of its own: the
    report must still carry the served map's row (the exit code and the summary line read it)."""
    out = files["dir"] / "auto.json"
    result = runner.invoke(app, args(files, **{"--labels-train": None}) + ["--method", "auto", "--json", str(out)])
    assert result.exit_code in (0, 3), result.output
    report = json.loads(out.read_text())
    assert report["selected"] == "hedge", report["selection"]  # 240 pairs: below auto's hedge_max_pairs
    assert report["selection"]["hedged_from"] in ("procrustes", "affine", "adjoint")
    assert {"procrustes", "adjoint", "hedge"} <= set(report["methods"])
    assert "new/old hedge *" in result.output and "selected: hedge" in result.output
    assert result.exit_code == (0 if report["methods"]["hedge"]["ecc"] else 3)


def test_incompatible_upgrade_exits_3(files) -> None:
    """A 'new model' that is pure noise cannot be made compatible; the report still prints."""
    result = runner.invoke(app, args(files, **{"--new-train": "noise_train", "--new-test": "noise_test"})
                           + ["--method", "procrustes"])
    assert result.exit_code == 3, result.output
    assert "FAILS" in result.output


@pytest.mark.parametrize("override,message", [
    ({"--old-test": "missing.npy"}, "does not exist"),
    ({"--old-test": "short"}, "row count mismatch"),
    ({"--old-test": "nan_test"}, "NaN"),
    ({"--old-test": "new_test", "--new-test": "new_test"}, "shape mismatch"),
    ({"--labels-test": "short_labels"}, "expected 240 labels"),
])
def test_bad_input_exits_2_with_a_clear_message(files, override, message) -> None:
    result = runner.invoke(app, args(files, **override) + ["--method", "procrustes"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_unknown_method_or_parameter_exits_2(files) -> None:
    result = runner.invoke(app, args(files) + ["--method", "magic"])
    assert result.exit_code == 2 and "unknown method" in result.output
    result = runner.invoke(app, args(files) + ["--method", "oca", "--params", '{"nope": 1}'])
    assert result.exit_code == 2 and "unknown parameters" in result.output
    result = runner.invoke(app, args(files) + ["--method", "oca", "--params", "{bad"])
    assert result.exit_code == 2 and "--params" in result.output
