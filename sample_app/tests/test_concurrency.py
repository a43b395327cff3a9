"""One captcha verified by many threads, then many processes, at once: exactly one wins."""

import multiprocessing
import threading

from captcha_testlib import new_captcha


def test_32_threads_verify_one_id(app):
    client = app.test_client()
    captcha_id, answer = new_captcha(client)
    barrier = threading.Barrier(32)
    statuses = []

    def worker():
        own = app.test_client()
        barrier.wait()
        response = own.post(f"/api/captchas/{captcha_id}/verify", json={"answer": answer})
        statuses.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count((200, {"valid": True})) == 1
    assert [status for status, _ in statuses].count(404) == 31


def _verify_in_child(app, captcha_id, answer, start, results):
    start.wait(10)
    response = app.test_client().post(f"/api/captchas/{captcha_id}/verify", json={"answer": answer})
    results.put(response.status_code)


def test_processes_verify_one_id(app):
    # fork, like uWSGI and gunicorn: the children inherit an app whose store the parent used,
    # so this also checks that no connection is shared across the fork.
    context = multiprocessing.get_context("fork")
    client = app.test_client()
    captcha_id, answer = new_captcha(client)
    start = context.Event()
    results = context.Queue()
    children = [
        context.Process(target=_verify_in_child, args=(app, captcha_id, answer, start, results))
        for _ in range(8)
    ]
    for child in children:
        child.start()
    start.set()
    statuses = sorted(results.get(timeout=20) for _ in children)
    for child in children:
        child.join(10)
    assert statuses == [200] + [404] * 7
    # The parent's own connection still works after the children used theirs.
    assert new_captcha(client)
