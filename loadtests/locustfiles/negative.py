"""Scenario "negative": the answers a client gets when it is wrong, as EXPECTED outcomes.

Each case is a success when the server answers as documented, and has its own stats name:
- wrong answer: verify -> 200 {"valid": false};
- replay: a second verify of one captcha -> 404 unknown_captcha, its image too;
- expired: captchas set aside until past their `expires_in` (+1 s) -> 404 on verify and image.
  With the deployed TTL (300 s) expiries only show in runs longer than ~5 min; a server
  started with a short FLASK_CAPTCHA_TTL shows them at once.
Tag: `negative`. The oracle secret is optional here (it lifts the rate limits).
"""

from __future__ import annotations

import time
from typing import Any

from captchaload import CaptchaUser
from locust import between, tag, task

# "0" is not in the answers' alphabet: such an answer is wrong whatever the captcha.
WRONG = "0"
EXPIRY_MARGIN_S = 1.0
SET_ASIDE_MAX = 3


class NegativeUser(CaptchaUser):
    wait_time = between(0.2, 0.8)
    needs_oracle = False

    def on_start(self) -> None:
        super().on_start()
        self.set_aside: list[tuple[float, dict[str, Any]]] = []  # (due, captcha)
        self._set_aside()  # the first expiry comes one TTL after the start, whatever tasks run

    def _set_aside(self) -> None:
        captcha = self.create()
        if captcha is not None:
            due = time.monotonic() + captcha["expires_in"] + EXPIRY_MARGIN_S
            self.set_aside.append((due, captcha))

    def _check_due(self) -> bool:
        """A set-aside captcha past its expiry, checked before any case (which one runs is
        random): whether it was done."""
        if not (self.set_aside and self.set_aside[0][0] <= time.monotonic()):
            return False
        _, captcha = self.set_aside.pop(0)
        self.image(captcha, status=404, case="expired")
        self.verify(captcha, self._wrong(captcha), status=404, case="expired")
        return True

    def _wrong(self, captcha: dict[str, Any]) -> str:
        return WRONG * len(captcha.get("answer", "xxxxx"))

    @tag("negative")
    @task
    def wrong_answer(self) -> None:
        if self._check_due():
            return
        captcha = self.create()
        if captcha is not None:
            self.verify(captcha, self._wrong(captcha), valid=False, case="wrong answer")

    @tag("negative")
    @task
    def replay(self) -> None:
        if self._check_due():
            return
        captcha = self.create()
        if captcha is None:
            return
        self.verify(captcha, self._wrong(captcha), valid=False, case="wrong answer")
        self.verify(captcha, self._wrong(captcha), status=404, case="replay")
        self.image(captcha, status=404, case="used")

    @tag("negative")
    @task
    def expired(self) -> None:
        if not self._check_due() and len(self.set_aside) < SET_ASIDE_MAX:
            self._set_aside()
