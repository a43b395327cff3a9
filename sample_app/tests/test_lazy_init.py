"""The expensive init (renderer fonts, store connection) registered with wsgiprobe.lazyinit."""

import sys
import threading

import pytest

from captcha_testlib import new_captcha
from sample_app import captchas, create_app
from sample_app.config import ConfigError

lazyinit = pytest.importorskip("wsgiprobe.lazyinit")


@pytest.fixture
def cold_renderer(monkeypatch):
    """A process renderer that has not loaded its fonts yet."""
    renderer = captchas.Renderer()
    monkeypatch.setattr(captchas, "_renderer", renderer)
    return renderer


def test_create_app_registers_the_renderer_and_the_store(cold_renderer, app):
    assert "sample_app.store" in lazyinit.pending()
    # Done already if an earlier test of this process warmed it: the renderer is per process.
    assert "sample_app.renderer" in lazyinit.pending() + list(lazyinit.done())

    lazyinit.run_pending()

    assert {"sample_app.renderer", "sample_app.store"} <= set(lazyinit.done())
    assert lazyinit.pending() == []


def test_the_registered_init_warms_the_renderer(cold_renderer, app):
    # The registry keeps ``captchas.ensure_ready`` done once it ran in this process; make it
    # pending again to see it build the (new, cold) renderer.
    lazyinit.register("sample_app.renderer", lambda: None)
    lazyinit.register("sample_app.renderer", captchas.ensure_ready)
    assert captchas.warmup_seconds() is None
    ran = lazyinit.run_pending()
    assert captchas.warmup_seconds() is not None
    assert ran["sample_app.renderer"] >= captchas.warmup_seconds()


def test_a_request_before_the_warm_up_still_works(cold_renderer, client):
    captcha_id, _ = new_captcha(client)
    assert captchas.warmup_seconds() is None
    response = client.get(f"/api/captchas/{captcha_id}/image.png")
    assert response.status_code == 200
    assert captchas.warmup_seconds() is not None


def test_ensure_ready_builds_one_image_captcha_for_many_threads(cold_renderer, monkeypatch):
    built = []
    real = captchas.ImageCaptcha

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(captchas, "ImageCaptcha", counting)
    barrier = threading.Barrier(16)
    seen = []

    def worker():
        barrier.wait()
        seen.append(captchas.ensure_ready())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == [1]
    assert len({id(r) for r in seen}) == 1


def test_render_png_is_a_png_of_the_app_settings():
    png = captchas.render_png("ABCDE")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_store_that_is_down_stays_pending(tmp_path):
    create_app({"SECRET_KEY": "t", "STORE_URL": f"sqlite:///{tmp_path}/missing/s.db"})
    with pytest.raises(Exception, match="sqlite"):
        lazyinit.run_pending()
    assert "sample_app.store" in lazyinit.pending()
    (tmp_path / "missing").mkdir()
    assert "sample_app.store" in lazyinit.run_pending()


def test_the_app_runs_without_the_toolkit(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wsgiprobe", None)  # import wsgiprobe raises ImportError
    monkeypatch.setitem(sys.modules, "wsgiprobe.lazyinit", None)
    app = create_app({"SECRET_KEY": "t", "STORE_URL": f"sqlite:///{tmp_path}/s.db"})
    assert app.test_client().post("/api/captchas").status_code == 201


def test_extra_init_seconds_add_a_costlier_init(make_app):
    make_app(LAZYINIT_EXTRA_SECONDS=0.2)
    assert "sample_app.extra" in lazyinit.pending()
    ran = lazyinit.run_pending()
    assert ran["sample_app.extra"] >= 0.2


@pytest.mark.parametrize("value", [-1, "soon", "nan"])
def test_extra_init_seconds_must_be_a_number(make_app, value):
    with pytest.raises(ConfigError, match="LAZYINIT_EXTRA_SECONDS"):
        make_app(LAZYINIT_EXTRA_SECONDS=value)
