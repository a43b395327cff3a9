"""Scenario "flow": what a real client does, end to end.

Create a captcha, fetch its image, verify it with the right answer (given by the oracle: the
run needs the oracle secret), plus the health check. Tags: `smoke` (everything, the API
description included) and `load` (the flow and the health check).
Run: python loadtests/run.py --scenario flow   (or: locust --config loadtests/locust.conf)
"""

from __future__ import annotations

from captchaload import CaptchaUser, expect_json
from locust import between, tag, task


class CaptchaFlowUser(CaptchaUser):
    # A person reads the image before typing: think time between iterations.
    wait_time = between(0.5, 1.5)

    @tag("smoke", "load")
    @task(10)
    def solve(self) -> None:
        captcha = self.create()
        if captcha is None:
            return
        self.image(captcha)
        self.verify(captcha, captcha["answer"])

    @tag("smoke", "load")
    @task(1)
    def health(self) -> None:
        self.healthz()

    @tag("smoke")
    @task(1)
    def api_description(self) -> None:
        with self.client.get("/openapi.json", name="/openapi.json", catch_response=True) as resp:
            body = expect_json(resp, 200)
            if body is not None and "openapi" not in body:
                resp.failure("/openapi.json without an openapi version")
