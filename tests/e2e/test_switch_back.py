"""Switching app_server away and back leaves exactly one server, serving."""

from __future__ import annotations

from conftest import DEPLOY_VARS, WORKERS
from stack import Stack


def test_switching_back_to_uwsgi_leaves_one_server(stack: Stack):
    for server in ("gunicorn", "uwsgi"):
        result = stack.deploy(f"switch-to-{server}", app_server=server, **DEPLOY_VARS)
        assert result.rc == 0, result.tail()
    assert stack.server_pids("gunicorn") == []
    assert len(stack.server_pids("uwsgi")) == WORKERS + 1
    assert stack.wait_until_serving("/").status == 200
