"""The /_profiler/ pages, rendered for real from real profile files."""

import json
import sys

import pytest
from dozer.profile import Profiler as DozerProfiler
from test_profiler_support import TOKEN, call, environ, middleware, pretend_worker
from test_profiler_support import profile_ids as ids
from werkzeug.test import Client

TRIGGER = {"X-Wsgiprobe-Profile": TOKEN}


def distinctive_work(environ, start_response):
    start_response("202 Accepted", [("Content-Type", "text/plain")])
    return [str(sum(range(100))).encode()]


@pytest.fixture
def directory(tmp_path):
    return tmp_path / "profiles"


@pytest.fixture
def wrapped(directory, monkeypatch):
    pretend_worker(monkeypatch)
    return middleware(distinctive_work, directory)


@pytest.fixture
def client(wrapped):
    return Client(wrapped)


def get(client, path, **kwargs):
    # Through a multi-process environ: Dozer's assertion must never fire.
    return client.get(path, buffered=True, environ_overrides={"wsgi.multiprocess": True}, **kwargs)


def profile(wrapped, path="/work", query="n=1", **headers):
    call(wrapped, path, query=query, headers={**TRIGGER, **headers})


def test_showall_lists_context(client, wrapped, directory):
    profile(wrapped)
    (profile_id,) = ids(directory)
    response = get(client, "/_profiler/showall")
    assert response.status_code == 200
    page = response.text
    for cell in (
        '<td class="method">GET</td>',
        '<td class="url">/work?n=[redacted]</td>',  # the query's values never shown
        '<td class="status num">202</td>',
        '<td class="worker num">3</td>',
        '<td class="process num">4242</td>',
        f'href="/_profiler/show/{profile_id}"',
    ):
        assert cell in page, cell
    assert " ms</td>" in page  # duration


@pytest.mark.parametrize("path", ["/_profiler", "/_profiler/"])
def test_ui_root_is_the_list(client, wrapped, path):
    profile(wrapped)
    response = get(client, path)
    assert response.status_code == 200
    assert "All profiles" in response.text


def test_show_renders_profile_and_context(client, wrapped, directory):
    profile(wrapped)
    (profile_id,) = ids(directory)
    response = get(client, f"/_profiler/show/{profile_id}")
    assert response.status_code == 200
    page = response.text
    assert "distinctive_work" in page
    for cell in (
        '<td class="worker">3</td>',
        '<td class="pid">4242</td>',
        '<td class="method">GET</td>',
        '<td class="url">/work?n=[redacted]</td>',  # the query's values never shown
        '<td class="status">202</td>',
        '<td class="server">uwsgi</td>',
    ):
        assert cell in page, cell
    assert '<td class="duration">' in page and " ms</td>" in page


def test_pages_show_no_secrets(client, wrapped, directory):
    profile(
        wrapped,
        query="token=query-secret",
        Cookie="session=cookie-secret",
        Authorization="Bearer auth-secret",
    )
    (profile_id,) = ids(directory)
    for path in ("/_profiler/showall", f"/_profiler/show/{profile_id}"):
        page = get(client, path).text
        assert "token=[redacted]" in page, path
        for secret in (TOKEN, "cookie-secret", "auth-secret", "query-secret"):
            assert secret not in page, (path, secret)


def test_client_text_is_escaped(client, wrapped):
    profile(wrapped, path="/<script>alert(1)</script>", query="")
    page = get(client, "/_profiler/showall").text
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page


def test_profile_gone_since_listing_is_404(client, wrapped, directory):
    profile(wrapped)
    (profile_id,) = ids(directory)
    assert "distinctive_work" not in get(client, "/_profiler/showall").text  # list only
    (directory / f"{profile_id}.pkl").unlink()
    response = get(client, f"/_profiler/show/{profile_id}")
    assert response.status_code == 404
    assert "gone" in response.text


@pytest.mark.parametrize("bad", ["..", "nope", "a.b", "%2e%2e%2fx"])
def test_show_unknown_or_bad_id_is_404(client, bad):
    assert get(client, f"/_profiler/show/{bad}").status_code == 404


def test_unreadable_record_is_listed_as_error(client, wrapped, directory):
    profile(wrapped)
    (directory / "1_w0_p1_0.json").write_text("{not json")
    response = get(client, "/_profiler/showall")
    assert response.status_code == 200
    assert "Unreadable" in response.text and "1_w0_p1_0" in response.text


def test_media_is_served(client):
    response = get(client, "/_profiler/media/css/profile.css")
    assert response.status_code == 200
    assert "#profile" in response.text


def test_ui_requests_are_never_profiled(client, directory):
    get(client, "/_profiler/showall", headers=TRIGGER)
    assert ids(directory) == []


def test_caller_environ_is_not_changed(wrapped):
    env = environ("/_profiler/showall")
    before = dict(env)
    b"".join(wrapped(env, lambda status, headers, exc_info=None: None))
    assert env == before  # wsgi.multiprocess still True, PATH_INFO untouched


def test_dozer_own_pages_read_our_files(wrapped, directory):
    profile(wrapped)
    (profile_id,) = ids(directory)
    limit = sys.getrecursionlimit()  # Dozer's show page lowers it for the whole process
    try:
        dozer = Client(DozerProfiler(None, profile_path=str(directory)))
        overrides = {"wsgi.multiprocess": False}
        listing = dozer.get("/_profiler/showall", buffered=True, environ_overrides=overrides)
        shown = dozer.get(
            f"/_profiler/show/{profile_id}", buffered=True, environ_overrides=overrides
        )
    finally:
        sys.setrecursionlimit(limit)
    assert listing.status_code == 200 and "/work" in listing.text
    assert shown.status_code == 200 and "distinctive_work" in shown.text


def test_custom_ui_path(directory, monkeypatch):
    pretend_worker(monkeypatch)
    wrapped = middleware(distinctive_work, directory, path="/admin/prof")
    profile(wrapped)
    client = Client(wrapped)
    page = get(client, "/admin/prof/showall").text
    assert 'href="/admin/prof/show/' in page
    assert "/_profiler" not in page
    # The default path now belongs to the app.
    assert get(client, "/_profiler/showall").text == "4950"


# -- method and origin rules ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", ["/_profiler/delete", "/_profiler/delete/", "/_profiler/delete/x"])
def test_delete_by_get_or_head_is_refused(client, wrapped, directory, method, path):
    profile(wrapped)
    response = client.open(path, method=method, buffered=True)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.headers["Content-Type"] == "application/json"
    if method == "GET":
        assert json.loads(response.text)["error"] == "method_not_allowed"
    assert len(ids(directory)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost.evil.example"},
        {"Referer": "http://evil.example/_profiler/showall"},
        {"Origin": "http://evil.example", "Referer": "http://localhost/_profiler/showall"},
        {"Origin": "http://localhost:8081", "Host": "localhost:8082"},
    ],
)
def test_delete_from_another_origin_is_refused(client, wrapped, directory, headers):
    profile(wrapped)
    (profile_id,) = ids(directory)
    response = client.post(f"/_profiler/delete/{profile_id}", headers=headers, buffered=True)
    assert response.status_code == 403
    assert json.loads(response.text)["error"] == "forbidden"
    assert ids(directory) == [profile_id]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost"},
        {"Referer": "http://localhost/_profiler/showall"},
        {"Origin": "http://127.0.0.1:8081", "Host": "127.0.0.1:8081"},
        # nginx's `proxy_set_header Host $host` drops the tunnel's port.
        {"Origin": "http://127.0.0.1:8081", "Host": "127.0.0.1"},
        {"Origin": "https://app.example", "Host": "app.example:443"},
    ],
)
def test_delete_one_same_origin(client, wrapped, directory, headers):
    profile(wrapped)
    profile(wrapped)
    first, second = ids(directory)
    response = client.post(f"/_profiler/delete/{first}", headers=headers, buffered=True)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/_profiler/showall")
    assert ids(directory) == [second]
    assert not (directory / f"{first}.json").exists()


def test_delete_all_same_origin(client, wrapped, directory):
    profile(wrapped)
    profile(wrapped)
    (directory / "notes.txt").write_text("not ours")
    response = client.post(
        "/_profiler/delete", headers={"Origin": "http://localhost"}, buffered=True
    )
    assert response.status_code == 303
    assert ids(directory) == []
    assert not list(directory.glob("*.json"))
    assert (directory / "notes.txt").exists()


def test_delete_of_a_missing_profile_is_fine(client):
    response = client.post(
        "/_profiler/delete/1_w0_p1_0", headers={"Origin": "http://localhost"}, buffered=True
    )
    assert response.status_code == 303


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_other_pages_answer_get_only(client, method):
    response = client.open(
        "/_profiler/showall", method=method, headers={"Origin": "http://localhost"}, buffered=True
    )
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


def test_pages_are_not_framed_or_cached(client):
    response = get(client, "/_profiler/showall")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    # Its own policy, which nginx keeps instead of the page's stricter one.
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_unexposed_dozer_methods_are_not_reachable(client):
    assert get(client, "/_profiler/render").status_code == 403
    assert get(client, "/_profiler/nothing").status_code == 404


def test_other_paths_reach_the_app(client, directory):
    assert get(client, "/elsewhere").text == "4950"
    assert ids(directory) == []


def test_profile_file_writable_by_others_is_not_loaded(client, wrapped, directory):
    profile(wrapped)
    (profile_id,) = ids(directory)
    (directory / f"{profile_id}.pkl").chmod(0o646)
    response = get(client, f"/_profiler/show/{profile_id}")
    assert response.status_code == 403
    assert "not loaded" in response.text
