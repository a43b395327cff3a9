"""Without the oracle, the answer is in no response: body, header or cookie."""

from captcha_testlib import ORACLE, new_captcha, store_of


def assert_absent(response, answer):
    for variant in {answer, answer.lower()}:
        assert variant.encode() not in response.get_data()
        for name, value in response.headers.items():
            assert variant not in value, name
    assert "Set-Cookie" not in response.headers


def test_answer_never_leaves_the_server(make_app):
    # 8 chars: no chance match in the PNG; the oracle is on, but no request sends its header.
    client = make_app(CAPTCHA_LENGTH=8, CAPTCHA_ORACLE_SECRET=ORACLE).test_client()
    created = client.post("/api/captchas")
    body = created.get_json()
    answer = store_of(client.application).peek(body["id"])
    assert_absent(created, answer)
    assert_absent(client.get(body["image_url"]), answer)
    assert_absent(client.get("/"), answer)
    wrong = client.post(body["verify_url"], json={"answer": "WRONGWRONG"})
    assert wrong.get_json() == {"valid": False}
    assert_absent(wrong, answer)
    assert_absent(client.post(body["verify_url"], json={"answer": answer}), answer)
    assert client.get_cookie("session") is None


def test_right_answer_response_says_only_valid(client):
    captcha_id, answer = new_captcha(client)
    response = client.post(f"/api/captchas/{captcha_id}/verify", json={"answer": answer})
    assert response.get_data().strip() == b'{"valid":true}'
