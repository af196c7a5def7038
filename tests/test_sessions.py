"""Dashboard sessions are server-side and revocable; failed authentication is throttled; the login
form refuses posts from other sites. Real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import create_engine, text

KEY = "sessions-admin-key"
FORM = {"content-type": "application/x-www-form-urlencoded"}
ADMIN = {"Authorization": f"Bearer {KEY}"}
CSRF = {"X-Nobackfill-CSRF": "1"}


def _client(server, source: str = "127.0.0.1", **kw) -> httpx.Client:
    """A client whose connections come from `source` (any 127/8 address reaches the server)."""
    return httpx.Client(base_url=server.url, follow_redirects=False, timeout=30,
                        transport=httpx.HTTPTransport(local_address=source), **kw)


def _login(c: httpx.Client, key: str = KEY, **headers) -> httpx.Response:
    return c.post("/dashboard/login", content=f"api_key={key}", headers={**FORM, **headers})


def _works(server, cookie: str) -> bool:
    """Does this session cookie still authorise an admin write?"""
    with _client(server, cookies={"nobackfill_session": cookie}) as c:
        r = c.post("/v1/jobs/1/cancel", headers=CSRF)
        assert r.status_code in (401, 404), r.text
        return r.status_code == 404  # authorised, and job 1 does not exist


@pytest.fixture
def secured(start_server, database_url, tmp_path):
    def start(**overrides):
        return start_server(database_url, data_dir=tmp_path / "data", api_key=overrides.pop("api_key", KEY),
                            **overrides)
    return start


def test_logout_and_admin_revocation_end_sessions_at_once(secured, database_url) -> None:
    server = secured()
    with _client(server) as c:
        assert _login(c).status_code == 303
        first = c.cookies["nobackfill_session"]
        assert _works(server, first)
        assert c.post("/dashboard/logout").status_code == 303
    assert not _works(server, first), "a copied cookie must stop working at logout, not after 12 h"

    with _client(server) as a, _client(server, "127.0.0.2") as b:
        _login(a, **{"user-agent": "browser-a"})
        _login(b)
        cookie_a, cookie_b = a.cookies["nobackfill_session"], b.cookies["nobackfill_session"]
    listed = httpx.get(f"{server.url}/v1/sessions", headers=ADMIN).json()
    assert len(listed) == 2 and {s["client"] for s in listed} == {"127.0.0.1", "127.0.0.2"}
    session_a = next(s for s in listed if s["user_agent"] == "browser-a")
    assert session_a["role"] == "admin" and session_a["revoked_at"] is None
    assert httpx.get(f"{server.url}/v1/sessions").status_code == 401, "listing sessions is admin-only"
    with _client(server, cookies={"nobackfill_session": cookie_b}) as reader_of_b:
        assert reader_of_b.get("/v1/sessions").status_code == 200, "an admin session may list them too"
    assert httpx.delete(f"{server.url}/v1/sessions/{session_a['id']}", headers=ADMIN).status_code == 204
    assert httpx.delete(f"{server.url}/v1/sessions/{session_a['id']}", headers=ADMIN).status_code == 204, "idempotent"
    assert httpx.delete(f"{server.url}/v1/sessions/999999", headers=ADMIN).status_code == 404
    assert not _works(server, cookie_a) and _works(server, cookie_b)
    ended = httpx.get(f"{server.url}/v1/sessions?include_ended=true", headers=ADMIN).json()
    assert len(ended) == 3 and sum(s["revoked_at"] is None for s in ended) == 1
    assert httpx.delete(f"{server.url}/v1/sessions", headers=ADMIN).json() == {"revoked": 1}
    assert not _works(server, cookie_b)

    # only the token's hash is stored: the database holds no usable cookie
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = {row[0] for row in conn.execute(text("SELECT token_hash FROM dashboard_sessions"))}
    engine.dispose()
    assert hashlib.sha256(cookie_a.encode()).hexdigest() in stored and cookie_a not in stored


def test_rotating_the_key_ends_sessions(secured, database_url, tmp_path) -> None:
    server = secured()
    with _client(server) as c:
        _login(c)
        cookie = c.cookies["nobackfill_session"]
    assert _works(server, cookie)
    server.stop()
    rotated = secured(api_key="a-brand-new-key")
    with _client(rotated, cookies={"nobackfill_session": cookie}) as c:
        assert c.post("/v1/jobs/1/cancel", headers=CSRF).status_code == 401


def test_failed_logins_and_keys_are_throttled_per_client(secured) -> None:
    server = secured(auth_failures_per_client="3/minute")
    with _client(server) as attacker, _client(server, "127.0.0.3") as other:
        assert [_login(attacker, "wrong").status_code for _ in range(3)] == [401, 401, 401]
        r = _login(attacker)  # even the right key: the key is not compared once throttled
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert "nobackfill_session" not in r.headers.get("set-cookie", "")
        assert _login(other).status_code == 303, "another client address is not affected"
        # bearer keys count against the same per-client budget
        bad = {"Authorization": "Bearer wrong"}
        assert [other.get("/v1/sessions", headers=bad).status_code for _ in range(3)] == [403, 403, 403]
        r = other.get("/v1/sessions", headers=ADMIN)
        assert r.status_code == 429 and r.json()["error"] == "too_many_requests" and "retry-after" in r.headers
        assert attacker.get("/v1/sessions", headers=ADMIN).status_code == 429
    with _client(server, "127.0.0.4") as fresh:
        assert fresh.get("/v1/sessions", headers=ADMIN).status_code == 200


def test_a_login_flood_from_many_addresses_closes_the_form_not_the_api(secured) -> None:
    server = secured(auth_failures_per_client="100/minute", login_failures_overall="4/minute")
    for i in range(4):
        with _client(server, f"127.0.1.{i + 1}") as c:
            assert _login(c, "wrong").status_code == 401
    with _client(server, "127.0.2.1") as c:
        assert _login(c).status_code == 429
        assert c.get("/v1/sessions", headers=ADMIN).status_code == 200, "the API key keeps working"


def test_login_posted_from_another_site_is_refused(secured) -> None:
    server = secured(trusted_origins=["https://nobackfill.example.com"])
    own = server.url
    cases = [
        ({"origin": "https://evil.example"}, 403),
        ({"referer": "https://evil.example/page"}, 403),
        ({"origin": "null"}, 403),  # sandboxed iframes, file: pages
        ({"origin": own}, 303),
        ({"referer": f"{own}/dashboard/login"}, 303),
        ({"origin": "https://nobackfill.example.com"}, 303),
        ({}, 303),  # no browser, no CSRF
    ]
    for headers, expected in cases:
        with _client(server) as c:
            r = _login(c, **headers)
            assert r.status_code == expected, (headers, r.status_code)
            assert ("nobackfill_session" in r.headers.get("set-cookie", "")) == (expected == 303), headers
