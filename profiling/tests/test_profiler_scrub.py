"""What a saved profile keeps of a request: allowlisted headers, query keys, no credential."""

import logging
import pickle

import pytest
from test_profiler_support import TOKEN, HelloApp, call, middleware
from test_profiler_support import profile_ids as ids

from wsgiprobe.profiler.scrub import REDACTED, looks_like_credential, redact_query
from wsgiprobe.profiler.settings import DEFAULT_KEEP_HEADERS

# One value per kind of credential (and of data nobody allowed), each findable in raw bytes.
SECRET_HEADERS = {
    "Authorization": "Bearer secret-authorization",
    "Proxy-Authorization": "Basic secret-proxy-authorization",
    "Cookie": "session=secret-cookie; wsgiprobe_profile=secret-cookie-trigger",
    "X-Api-Key": "secret-api-key",
    "X-Auth-Token": "secret-auth-token",
    "X-Csrf-Token": "secret-csrf-token",
    "X-Xsrf-Token": "secret-xsrf-token",
    "X-Amz-Security-Token": "secret-amz-security-token",
    "X-Hub-Signature-256": "sha256=secret-hub-signature",
    "X-Session-Id": "secret-session-id",
    "X-Foo-Secret": "secret-made-up",  # nobody's list names it: the pattern catches it
    "X-Captcha-Oracle": "secret-captcha-oracle",  # scrubbed by configuration
    "X-Customer-Id": "secret-customer-id",  # no credential, but nobody allowed it
    "X-Forwarded-For": "198.51.100.7",
}
SECRET_QUERY = "token=secret-q-token&password=secret-q-password&api_key=secret-q-key&q=secret-q"
KEPT_HEADERS = {
    "User-Agent": "kept-agent/1.0",
    "Accept": "application/json",
    "Accept-Language": "en-GB",
    "Content-Type": "application/json",
    "X-Request-Id": "kept-request-id",  # allowlisted by configuration
}


def secret_values() -> list[str]:
    values = [TOKEN, "198.51.100.7", *SECRET_QUERY.replace("&", "=").split("=")[1::2]]
    for value in SECRET_HEADERS.values():
        values.extend(part for part in value.replace(";", "=").split("=") if "secret" in part)
        values.append(value.split()[-1])
    return values


@pytest.fixture
def saved(tmp_path, caplog):
    """A request carrying every credential above through a profiler that allowlists some."""
    caplog.set_level(logging.INFO, logger="wsgiprobe.profiler")
    directory = tmp_path / "profiles"
    wrapped = middleware(
        HelloApp(),
        directory,
        scrub_headers=("X-Captcha-Oracle",),
        # Allowlisting a credential, or a scrubbed header, keeps its value redacted all the same.
        keep_headers=(*DEFAULT_KEEP_HEADERS, "X-Request-Id", "X-Api-Key", "Authorization",
                      "X-Captcha-Oracle"),
    )  # fmt: skip
    target = "/items?" + SECRET_QUERY
    call(
        wrapped,
        "/items",
        method="POST",
        query=SECRET_QUERY,
        headers={"X-Wsgiprobe-Profile": TOKEN, **SECRET_HEADERS, **KEPT_HEADERS},
        # What uWSGI and gunicorn add: the raw request target, query included.
        extra={"REQUEST_URI": target, "RAW_URI": target},
    )
    (profile_id,) = ids(directory)
    pkl, record = (directory / f"{profile_id}.{suffix}" for suffix in ("pkl", "json"))
    return pkl.read_bytes() + record.read_bytes(), pickle.loads(pkl.read_bytes()), caplog.text


def test_no_credential_reaches_the_disk_or_the_log(saved):
    raw, _, log = saved
    assert len(secret_values()) > 20  # the helper found every value above
    for value in secret_values():
        assert value.encode() not in raw, value
        assert value not in log, value


def test_every_other_header_keeps_its_name_with_a_redacted_value(saved):
    _, data, _ = saved
    environ = data["environ"]
    for name in (*SECRET_HEADERS, "X-Wsgiprobe-Profile"):
        assert environ["HTTP_" + name.upper().replace("-", "_")] == REDACTED, name


def test_allowlisted_headers_are_kept(saved):
    _, data, _ = saved
    environ = data["environ"]
    assert environ["HTTP_USER_AGENT"] == "kept-agent/1.0"
    assert environ["HTTP_ACCEPT"] == "application/json"
    assert environ["HTTP_ACCEPT_LANGUAGE"] == "en-GB"
    assert environ["CONTENT_TYPE"] == "application/json"  # WSGI's unprefixed header
    assert environ["HTTP_X_REQUEST_ID"] == "kept-request-id"
    assert environ["HTTP_HOST"] == "localhost"


def test_the_query_keeps_its_keys_wherever_it_is_stored(saved):
    _, data, _ = saved
    redacted = "token=[redacted]&password=[redacted]&api_key=[redacted]&q=[redacted]"
    assert data["environ"]["QUERY_STRING"] == redacted
    assert data["wsgiprobe"]["query"] == redacted  # the listing's and the page's URL
    assert data["environ"]["PATH_INFO"] == "/items"
    assert "REQUEST_URI" not in data["environ"] and "RAW_URI" not in data["environ"]
    assert not any(key.startswith("wsgi") for key in data["environ"])
    assert all(isinstance(value, str) for value in data["environ"].values())


def test_allowlisted_credentials_are_named_in_a_warning(saved):
    _, _, log = saved
    assert "X-Api-Key, Authorization, X-Captcha-Oracle" in log


def test_an_empty_allowlist_and_no_query_redaction(tmp_path):
    directory = tmp_path / "profiles"
    wrapped = middleware(HelloApp(), directory, keep_headers=(), redact_query=False)
    call(wrapped, query="page=2&q=kept", headers={"X-Wsgiprobe-Profile": TOKEN, **KEPT_HEADERS})
    (profile_id,) = ids(directory)
    data = pickle.loads((directory / f"{profile_id}.pkl").read_bytes())
    assert data["environ"]["QUERY_STRING"] == data["wsgiprobe"]["query"] == "page=2&q=kept"
    headers = {k: v for k, v in data["environ"].items() if k.startswith(("HTTP_", "CONTENT_"))}
    assert headers and set(headers.values()) == {REDACTED}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("q=x", "q=[redacted]"),
        ("a=1&b=2", "a=[redacted]&b=[redacted]"),
        ("status", "status"),  # a bare word is a key
        ("empty=&flag&a=1", "empty=&flag&a=[redacted]"),
        ("a=b=c", "a=[redacted]"),
        ("a=1;b=2", "a=[redacted]"),  # old ; separators: the rest is the value, redacted
        ("k=%3Dsecret&%20=x", "k=[redacted]&%20=[redacted]"),
    ],
)
def test_redact_query(query, expected):
    assert redact_query(query) == expected


@pytest.mark.parametrize("name", DEFAULT_KEEP_HEADERS)
def test_no_default_kept_header_looks_like_a_credential(name):
    assert not looks_like_credential(name)  # it would be redacted: the default would lie


@pytest.mark.parametrize(
    "name",
    ["Authorization", "WWW-Authenticate", "X-Api-Version", "Sec-WebSocket-Key", "X-Passphrase",
     "X-Jwt-Assertion", "X-Signed-Url", "X-Otp", "HTTP_X_PRIVATE_THING", "x-pwd"],
)  # fmt: skip
def test_credential_looking_names(name):
    assert looks_like_credential(name)
