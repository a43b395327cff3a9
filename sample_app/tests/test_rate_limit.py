"""Fixed-window rate limits per client address, counted in the store."""

import pytest

from captcha_testlib import ORACLE, new_captcha

# Hour-long windows: a test never straddles a window boundary (windows align on the clock).
CLIENT_A = {"REMOTE_ADDR": "192.0.2.1"}
CLIENT_B = {"REMOTE_ADDR": "192.0.2.2"}


def assert_rate_limited(response):
    assert response.status_code == 429
    assert response.get_json()["error"] == "rate_limited"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 3600


def test_create_is_limited_per_client(make_app):
    client = make_app(RATE_LIMIT_CREATE="3/3600").test_client()
    for _ in range(3):
        assert client.post("/api/captchas", environ_base=CLIENT_A).status_code == 201
    assert_rate_limited(client.post("/api/captchas", environ_base=CLIENT_A))
    assert client.post("/api/captchas", environ_base=CLIENT_B).status_code == 201


def test_verify_is_limited_per_client(make_app):
    client = make_app(RATE_LIMIT_VERIFY="2/3600").test_client()
    ids = [new_captcha(client) for _ in range(4)]
    for captcha_id, answer in ids[:2]:
        response = client.post(
            f"/api/captchas/{captcha_id}/verify", json={"answer": answer}, environ_base=CLIENT_A
        )
        assert response.get_json() == {"valid": True}
    captcha_id, answer = ids[2]
    assert_rate_limited(
        client.post(
            f"/api/captchas/{captcha_id}/verify", json={"answer": answer}, environ_base=CLIENT_A
        )
    )
    # Refused before the store was asked to take it: still there for another try.
    response = client.post(
        f"/api/captchas/{captcha_id}/verify", json={"answer": answer}, environ_base=CLIENT_B
    )
    assert response.get_json() == {"valid": True}


def test_create_and_verify_have_separate_buckets(make_app):
    client = make_app(RATE_LIMIT_CREATE="1/3600", RATE_LIMIT_VERIFY="1/3600").test_client()
    response = client.post("/api/captchas", environ_base=CLIENT_A)
    captcha_id = response.get_json()["id"]
    verify = client.post(
        f"/api/captchas/{captcha_id}/verify", json={"answer": "X"}, environ_base=CLIENT_A
    )
    assert verify.status_code == 200


def test_limits_are_shared_by_app_instances_on_one_store(make_app):
    # Two apps stand for two worker processes: the count lives in the store, not in memory.
    first = make_app(RATE_LIMIT_CREATE="2/3600").test_client()
    second = make_app(RATE_LIMIT_CREATE="2/3600").test_client()
    assert first.post("/api/captchas", environ_base=CLIENT_A).status_code == 201
    assert second.post("/api/captchas", environ_base=CLIENT_A).status_code == 201
    assert_rate_limited(first.post("/api/captchas", environ_base=CLIENT_A))
    assert_rate_limited(second.post("/api/captchas", environ_base=CLIENT_A))


@pytest.mark.parametrize("bucket", ["create", "verify"])
def test_the_oracle_is_exempt(make_app, bucket):
    client = make_app(
        RATE_LIMIT_CREATE="1/3600", RATE_LIMIT_VERIFY="1/3600", CAPTCHA_ORACLE_SECRET=ORACLE
    ).test_client()
    oracle = {"X-Captcha-Oracle": ORACLE}
    for _ in range(5):
        response = client.post("/api/captchas", headers=oracle, environ_base=CLIENT_A)
        assert response.status_code == 201
        if bucket == "verify":
            body = response.get_json()
            verified = client.post(
                body["verify_url"],
                json={"answer": body["answer"]},
                headers=oracle,
                environ_base=CLIENT_A,
            )
            assert verified.get_json() == {"valid": True}


def test_a_wrong_oracle_secret_is_not_exempt(make_app):
    client = make_app(RATE_LIMIT_CREATE="1/3600", CAPTCHA_ORACLE_SECRET=ORACLE).test_client()
    wrong = {"X-Captcha-Oracle": "wrong"}
    assert client.post("/api/captchas", headers=wrong, environ_base=CLIENT_A).status_code == 201
    assert_rate_limited(client.post("/api/captchas", headers=wrong, environ_base=CLIENT_A))


def test_trusted_proxy_limits_the_forwarded_client(make_app):
    client = make_app(RATE_LIMIT_CREATE="1/3600", TRUSTED_PROXIES=1).test_client()
    via_proxy = {"REMOTE_ADDR": "127.0.0.1"}

    def create(forwarded_for):
        return client.post(
            "/api/captchas", headers={"X-Forwarded-For": forwarded_for}, environ_base=via_proxy
        )

    assert create("198.51.100.1").status_code == 201
    assert_rate_limited(create("198.51.100.1"))
    # A client cannot escape by forging an earlier hop: only the last one counts.
    assert_rate_limited(create("10.9.9.9, 198.51.100.1"))
    assert create("198.51.100.2").status_code == 201


def test_retry_after_counts_down_to_the_end_of_the_window(make_app):
    client = make_app(RATE_LIMIT_CREATE="1/5").test_client()
    client.post("/api/captchas", environ_base=CLIENT_A)
    response = client.post("/api/captchas", environ_base=CLIENT_A)
    if response.status_code == 201:  # crossed into the next 5 s window: once more
        response = client.post("/api/captchas", environ_base=CLIENT_A)
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 5
