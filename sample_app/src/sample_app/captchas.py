"""Captcha ids, answers, comparison and PNG rendering."""

from __future__ import annotations

import hmac
import re
import secrets
import string
import threading
import time

from captcha.image import ImageCaptcha

# Upper case only (answers compare case-insensitively), without the look-alikes 0 O 1 I L.
ALPHABET = "".join(c for c in string.ascii_uppercase + string.digits if c not in "0O1IL")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")  # what secrets.token_urlsafe(16) makes


def new_id() -> str:
    return secrets.token_urlsafe(16)


def is_valid_id(captcha_id: str) -> bool:
    return ID_PATTERN.fullmatch(captcha_id) is not None


def new_answer(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def answers_match(given: str, expected: str) -> bool:
    # Constant time, so response timing does not reveal how much of a guess was right.
    return hmac.compare_digest(given.upper().encode(), expected.upper().encode())


class Renderer:
    """An ImageCaptcha built on first use.

    Building it and rendering the first image (which loads the fonts) takes ~20 ms, so the app
    registers ``ensure_ready`` as a lazy init; a request that comes first builds it itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._captcha: ImageCaptcha | None = None
        self.warmup_seconds: float | None = None

    def ensure_ready(self) -> ImageCaptcha:
        captcha = self._captcha
        if captcha is not None:
            return captcha
        with self._lock:
            if self._captcha is None:
                start = time.perf_counter()
                captcha = ImageCaptcha()
                captcha.generate(ALPHABET[:5])  # loads the fonts
                self.warmup_seconds = time.perf_counter() - start
                self._captcha = captcha
            return self._captcha

    def render_png(self, answer: str) -> bytes:
        return self.ensure_ready().generate(answer, format="png").getvalue()


# One renderer per process, shared by every app in it: the fonts load once.
_renderer = Renderer()


def ensure_ready() -> ImageCaptcha:
    """Idempotent and thread-safe: every path that renders goes through it."""
    return _renderer.ensure_ready()


def render_png(answer: str) -> bytes:
    return _renderer.render_png(answer)


def warmup_seconds() -> float | None:
    """What building the renderer took in this process; None while it is not built."""
    return _renderer.warmup_seconds
