"""Helpers shared by the sample app's tests (not in conftest.py: another conftest module of
the same name elsewhere in the repository would shadow it in ``from conftest import``)."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from sample_app.store import Store

ORACLE = "oracle-secret-for-tests"


def store_of(app: Flask) -> Store:
    return app.extensions["sample_app"].store


def new_captcha(client: FlaskClient) -> tuple[str, str]:
    """(id, answer) of a fresh captcha; the answer is read from the store, not the API."""
    response = client.post("/api/captchas")
    assert response.status_code == 201, response.get_json()
    captcha_id = response.get_json()["id"]
    answer = store_of(client.application).peek(captcha_id)
    assert answer is not None
    return captcha_id, answer
