"""The README's walk-through runs as written: every block marked `<!-- readme-test -->` is executed,
in order, against one live server (SQLite + FAISS, the embedded default). Bash blocks run with
`set -euo pipefail` and a `curl` that fails on any HTTP error status (printing the body), with
`API` pointed at the server and the virtual environment's `nobackfill` on PATH; Python blocks run
in this interpreter with `API` in the environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- readme-test -->"
BLOCK = re.compile(re.escape(MARK) + r"\s*\n```(bash|python)\n(.*?)\n```", re.DOTALL)
CURL_FAILS_ON_ERRORS = 'curl() { command curl --fail-with-body --show-error "$@"; echo; }\n'


def readme_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_marks_its_walk_through() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 3 and {lang for lang, _ in blocks} == {"bash", "python"}
    assert (ROOT / "README.md").read_text().count(MARK) == len(blocks)  # every mark is on a block


def test_the_walk_through_runs_as_written(start_server, tmp_path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'readme.db'}", data_dir=tmp_path / "data")
    env = {**os.environ, "API": server.url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for n, (lang, code) in enumerate(readme_blocks()):
        if lang == "bash":
            # The blocks set API to the documented address; point it at the test server instead.
            code = re.sub(r"^API=http://127\.0\.0\.1:8000$", f"API={server.url}", code, flags=re.MULTILINE)
            command = ["bash", "-c", "set -euo pipefail\n" + CURL_FAILS_ON_ERRORS + code]
        else:
            command = [sys.executable, "-c", code]
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, f"README block {n} ({lang}) failed:\n{code}\n--- output\n{done.stdout}" \
                                     f"\n{done.stderr}"
        if lang == "python":
            assert "succeeded ['doc-0'" in done.stdout, done.stdout  # the comment's promise


@pytest.mark.parametrize("command", [["nobackfill", "--help"], ["nobackfill", "jobs", "watch", "--help"]])
def test_the_cli_the_readme_names_is_installed(command) -> None:
    exe = Path(sys.executable).with_name(command[0])
    assert exe.exists(), f"{exe} missing: `pip install -e .` puts the console script in the venv"
    assert subprocess.run([str(exe), *command[1:]], capture_output=True, timeout=60).returncode == 0
