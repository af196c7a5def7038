"""The admin dashboard in headless Chromium (Debian's /usr/bin/chromium driven by Playwright), and its
session/CSRF rules, /metrics and the compatibility-matrix API over real HTTP.

Screenshots go to $NOBACKFILL_SCREENSHOT_DIR when set (docs/img is produced that way), else to a
temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from adapters.vectors import normalize
from tests.helpers import make_model, upsert
from tests.upgrade_helpers import lineage_with_gallery, train, upload_pairs, wordnet

KEY = "dashboard-admin-key"
READ_KEY = "dashboard-read-key"
CHROMIUM = "/usr/bin/chromium"
OLD, NEW, LABELS, IDS = wordnet()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A server with a two-upgrade lineage v1 -> v2 -> v3 (pairs share ids) and a partly backfilled gallery."""
    from tests.conftest import LiveServer, make_settings

    tmp = tmp_path_factory.mktemp("dash")
    server = LiveServer(make_settings(tmp / "data", f"sqlite:///{tmp / 'd.db'}", api_key=KEY, read_api_key=READ_KEY,
                                      max_body_bytes=2 * 1024 * 1024)).start()
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as c:
        labels = [str(x) for x in LABELS]
        uid12 = lineage_with_gallery(c, ("v1", "v2", "wordnet"), OLD, NEW, IDS, LABELS)
        assert upload_pairs(c, uid12, IDS, OLD, NEW, labels).status_code == 200
        train(c, uid12)
        c.post(f"/v1/upgrades/{uid12}/activate", json={"force": True})
        rng = np.random.default_rng(3)
        rot, _ = np.linalg.qr(rng.normal(size=(768, 768)))
        v3 = (normalize(NEW) @ rot[:, :512] + rng.normal(scale=0.01, size=(len(IDS), 512))).astype(np.float32)
        make_model(c, "v3", 512, successor_of="v2")
        uid23 = next(u["id"] for u in c.get("/v1/upgrades").json() if u["new_model"] == "v3")
        assert upload_pairs(c, uid23, IDS, NEW, v3, labels).status_code == 200
        train(c, uid23)
        c.post(f"/v1/upgrades/{uid23}/activate", json={"force": True})
        third = list(range(0, len(IDS), 3))
        assert upsert(c, "wordnet", "v2", [IDS[i] for i in third], NEW[third], compact=True).status_code == 200
        for i in range(30):  # some traffic for the health page
            c.post("/v1/collections/wordnet/query", json={"model": "v3", "vector": v3[i].tolist(), "k": 5})
    yield {"server": server, "uid12": uid12, "uid23": uid23}
    server.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian packages chromium, chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    target = Path(os.environ.get("NOBACKFILL_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def test_dashboard_end_to_end_in_chromium(seeded, browser, shots) -> None:
    url = seeded["server"].url
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.on("dialog", lambda dialog: dialog.accept())  # confirmations of activate / roll back

    # anonymous: read-only view (reads are open on this server), no admin buttons
    page.goto(f"{url}/dashboard")
    assert "read-only (not logged in)" in page.inner_text("header")
    page.goto(f"{url}/dashboard/upgrades/{seeded['uid23']}")
    assert page.locator("#train-button").count() == 0 and page.locator("button.activate").count() == 0

    # log in: a wrong key is refused, the admin key gives an HttpOnly SameSite session
    page.goto(f"{url}/dashboard/login")
    page.fill("#api_key", "wrong")
    page.click("#login-button")
    assert page.inner_text("#login-error") == "key not accepted"
    page.fill("#api_key", KEY)
    page.click("#login-button")
    page.wait_for_url(f"{url}/dashboard")
    cookie = next(c for c in page.context.cookies() if c["name"] == "nobackfill_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and KEY not in cookie["value"]
    assert "admin" in page.inner_text("header")
    overview = page.inner_text("main")
    assert "wordnet" in overview and "v1: 320" in overview and "v2: 160" in overview and "0.0% in v3" in overview
    assert page.locator("svg.lineage g.node").count() == 3
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # the compatibility matrix of the seeded lineage: 3 x 3 heatmap with AC and AM
    page.click("text=compatibility matrix of this lineage")
    assert page.locator("svg.heatmap g.cell").count() == 9
    assert page.inner_text("#ac").startswith("AC = ") and page.inner_text("#am").startswith("AM = ")
    assert f"({len(IDS)} probe items" in page.inner_text("main")
    assert "—" not in page.text_content("svg.heatmap"), "every pair of versions has a route"
    page.screenshot(path=str(shots / "compatibility.png"), full_page=True)

    # the migration curve of v1 -> v2: both client kinds, and where the wordnet gallery stands (1/3)
    page.goto(f"{url}/dashboard/upgrades/{seeded['uid12']}")
    for metric in ("top1", "mAP@R"):  # one chart per metric: the order moves top-1 more than mAP@R
        assert page.locator(f"svg.migration[data-metric='{metric}'] polyline.series").count() == 3
    marker = page.locator("svg.migration[data-metric='top1'] g.now[data-collection='wordnet']")
    assert marker.count() == 1 and "wordnet 33%" in marker.text_content()
    assert page.inner_text("#training-policy").startswith("Trains on request")

    # start a training job from the page and watch its progress reach 100 %
    page.goto(f"{url}/dashboard/upgrades/{seeded['uid23']}")
    first_active = page.inner_text("#active-id")
    assert page.locator("#four-rows tr").count() == 6  # header + old/old, new/new, raw, transformed, old/new
    page.select_option("#train-method", "lambda_orth")
    page.click("#train-button")
    new_job = page.locator("#upgrade-jobs tr.new-job")
    new_job.locator(".pct").filter(has_text="100%").wait_for()
    assert new_job.locator(".state").inner_text() == "succeeded"
    page.wait_for_load_state("load")
    page.wait_for_selector("#transformations tr[data-transformation]:nth-of-type(3)")  # header + 2 rows
    page.screenshot(path=str(shots / "upgrade.png"), full_page=True)

    # roll back / switch: activate the transformation that is not active now, confirm the dialog
    before = page.inner_text("#active-id")
    button = page.locator("button.activate").first
    target = button.get_attribute("data-transformation")
    button.click()
    page.wait_for_function(f"document.querySelector('#active-id').textContent.trim() === '#{target}'")
    assert page.inner_text("#active-id") == f"#{target}" != before
    assert first_active in (before, f"#{target}")

    page.goto(f"{url}/dashboard/jobs")
    assert page.locator("#jobs tr.job").count() >= 3
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)
    page.goto(f"{url}/dashboard/health")
    assert int(page.inner_text("#query-summary td")) >= 30
    page.screenshot(path=str(shots / "health.png"), full_page=True)
    page.close()


def test_read_only_login_and_csrf_rules(seeded) -> None:
    url = seeded["server"].url
    with httpx.Client(base_url=url, follow_redirects=False) as c:
        r = c.post("/dashboard/login", content="api_key=" + READ_KEY,
                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 303
        assert c.get("/dashboard").status_code == 200 and "read-only" in c.get("/dashboard").text
        assert c.post(f"/v1/upgrades/{seeded['uid12']}/deactivate",
                      headers={"X-Nobackfill-CSRF": "1"}).status_code == 403, "read-only session"
    with httpx.Client(base_url=url, follow_redirects=False) as c:
        form = {"content-type": "application/x-www-form-urlencoded"}
        c.post("/dashboard/login", content="api_key=" + KEY, headers=form)
        r = c.post("/v1/jobs/1/cancel")
        assert r.status_code == 403 and "x-nobackfill-csrf" in r.text, "session writes need the CSRF header"
        assert c.post("/v1/jobs/1/cancel", headers={"X-Nobackfill-CSRF": "1"}).status_code == 200
        c.cookies.set("nobackfill_session", "admin.99999999999.forged")
        assert c.post("/v1/jobs/1/cancel", headers={"X-Nobackfill-CSRF": "1"}).status_code == 401


def test_metrics_and_compatibility_api(seeded) -> None:
    with httpx.Client(base_url=seeded["server"].url) as c:
        text = c.get("/metrics").text
        assert 'nobackfill_requests_total{method="POST",route="/v1/collections/{name}/query",status="200"}' in text
        assert 'nobackfill_items{collection="wordnet",model="v2"} 160.0' in text
        assert "nobackfill_request_seconds_bucket" in text and 'nobackfill_jobs{state="succeeded"}' in text
        m = c.get("/v1/models/v2/compatibility").json()
        assert m["models"] == ["v1", "v2", "v3"] and m["items"] == len(IDS) and m["relevance"] == "label"
        assert len(m["matrix"]) == 3 and all(v is not None for row in m["matrix"] for v in row)
        assert 0.0 <= m["AC"] <= 1.0 and m["AM"] > 0


def test_closed_deployment_sends_anonymous_visitors_to_login(start_server, tmp_path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'closed.db'}", data_dir=tmp_path / "closed", api_key=KEY,
                          read_requires_key=True)
    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        r = c.get("/dashboard")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
        assert c.get("/dashboard/login").status_code == 200
        assert c.get("/metrics").status_code == 401, "metrics name collections: behind the read key"
        assert c.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_static_assets_are_vendored() -> None:
    static = Path(__file__).parents[1] / "service" / "api" / "dashboard" / "static"
    for f in static.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text, f"{f.name} must not load anything remote"


def test_api_docs_render_offline_in_chromium(seeded, browser) -> None:
    """Swagger UI and ReDoc come from this server's files: with every other host blocked, both
    pages render the operations."""
    url = seeded["server"].url
    page = browser.new_page()
    page.set_default_timeout(60_000)
    remote: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{url}/docs")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() >= 30
    assert "/v1/collections/{name}/query" in page.inner_text("body").replace("\u200b", "")
    page.goto(f"{url}/redoc")
    page.wait_for_selector("[role=menuitem], li[data-item-id]", state="attached")
    assert "/v1/collections/{name}/query" in page.content()
    assert remote == [], remote
    page.close()
