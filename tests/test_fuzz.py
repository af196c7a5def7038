"""schemathesis over every operation of the OpenAPI, with the admin key, against a live server on
SQLite and PostgreSQL that holds a lineage, a collection, an upgrade and a job: no request it
generates may get a server error (5xx), a status code the operation does not document, a body or
content type that does not match the documented response, or a 2xx for data the schema forbids.
Bounded: a fixed seed, a few examples per operation."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import make_collection, make_model, upsert

KEY = "fuzz-admin-key"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join(["not_a_server_error", "status_code_conformance", "content_type_conformance",
                   "response_schema_conformance", "response_headers_conformance", "negative_data_rejection"])


# Path parameters that name what the seeded server holds, so that generated requests reach the
# operations' logic instead of stopping at a 404 (the range of every other field is still fuzzed).
CONFIG = """
[parameters]
name = "g"
item_id = "i1"
upgrade_id = 1
job_id = 1

[[operations]]
include-path-regex = "^/v1/models/"
parameters = { name = "v2" }
"""


@pytest.fixture
def seeded_server(start_server, database_url, tmp_path):
    server = start_server(database_url, data_dir=tmp_path / "data", api_key=KEY, max_body_bytes=1024 * 1024)
    rng = np.random.default_rng(0)
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as c:
        make_model(c, "v1", 8)
        make_model(c, "v2", 8, successor_of="v1")
        make_collection(c, "g", "v1")
        ids = [f"i{n}" for n in range(150)]
        old = rng.normal(size=(150, 8)).astype(np.float32)
        assert upsert(c, "g", "v1", ids, old, compact=True).status_code == 200
        uid = c.get("/v1/upgrades").json()[0]["id"]
        pairs = {"ids": ids, "old_vectors": old.tolist(), "new_vectors": (old[:, ::-1] * 2).tolist()}
        assert c.post(f"/v1/upgrades/{uid}/pairs", json=pairs).status_code == 200
        assert c.post(f"/v1/upgrades/{uid}/train", json={"method": "procrustes"}).status_code == 202
    return server


def test_no_generated_request_gets_a_server_error(seeded_server, tmp_path) -> None:
    if not SCHEMATHESIS.exists() and shutil.which("schemathesis") is None:
        pytest.skip("schemathesis is not installed (test extra)")
    report = tmp_path / "junit.xml"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [str(SCHEMATHESIS if SCHEMATHESIS.exists() else "schemathesis"), "--config-file", str(config), "run",
         f"{seeded_server.url}/openapi.json",
         "--checks", CHECKS, "--header", f"Authorization: Bearer {KEY}",
         "--phases", "examples,coverage,fuzzing", "--max-examples", "12", "--seed", "7", "--workers", "1",
         "--request-timeout", "20", "--max-time", "12", "--report", "junit", "--report-junit-path", str(report)],
        capture_output=True, text=True, timeout=55, check=False, cwd=tmp_path,  # its cache stays there
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6_000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", out)
    assert counts and int(counts[1]) == int(counts[2]) >= 150, out[-2_000:]  # it really ran
    print(f"schemathesis [{CHECKS}]: {counts[0]}")  # the figures, in the test log
    assert report.exists()
