"""`nobackfill jobs watch ID`: a terminal progress bar that follows a job over the HTTP API."""

from __future__ import annotations

import time

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

TERMINAL = {"succeeded", "failed", "cancelled"}


def wait_for_job(client: httpx.Client, job_id: int, timeout: float = 3_600, interval: float = 0.1) -> dict:
    """Poll GET /v1/jobs/{id} until the job ends; its final JSON (for scripts, benchmarks, tests)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["state"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s: {job['message']}")
        time.sleep(interval)


def watch(url: str, job_id: int, api_key: str | None, interval: float, console: Console | None = None) -> int:
    console = console or Console()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        first = client.get(f"/v1/jobs/{job_id}")
        if first.status_code != 200:
            console.print(f"[red]cannot read job {job_id}: HTTP {first.status_code} {first.text}")
            return 2
        job = first.json()
        columns = (TextColumn("[bold]job {task.fields[job]}[/] {task.fields[state]}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TextColumn("{task.description}"))
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(job["message"], total=1.0, job=job_id, state=job["state"])
            while True:
                bar.update(task, completed=job["progress"], description=job["message"][:80], state=job["state"])
                if job["state"] in TERMINAL:
                    break
                time.sleep(interval)
                job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
    if job["state"] == "succeeded":
        console.print(f"job {job_id} succeeded: {job['result']}")
        return 0
    console.print(f"[red]job {job_id} {job['state']}: {job.get('error') or job['message']}")
    return 1
