"""Profiles are saved compact and become Dozer's call tree when they are read."""

import cProfile
import pickle
import pickletools
from datetime import datetime

import pytest
from dozer.profile import buildtree
from test_profiler_support import TOKEN, call, middleware
from test_profiler_support import profile_ids as ids
from werkzeug.test import Client

from wsgiprobe.profiler import calltree


def _fib(n):
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)  # recursive calls


class _Thing:
    def method(self):
        return sorted(str(i) for i in range(50))  # a generator, builtins


def _work():
    _fib(8)
    _Thing().method()
    (lambda: max([1, 2]))()
    return len("x")


def _stats():
    prof = cProfile.Profile()
    prof.enable()
    _work()
    prof.disable()
    return prof.getstats()


def test_the_tree_is_the_one_dozer_builds():
    stats = _stats()
    codes, entries = calltree.compact(stats)
    tree = calltree.dozer_tree(codes, entries)
    assert tree == buildtree(stats)
    assert any(key.startswith("_fib ") for key in tree)
    assert any(key.startswith("<built-in method builtins.sorted>") for key in tree)


def test_unpickling_builds_the_tree():
    stats = _stats()
    saved = pickle.dumps({"profile": calltree.DeferredTree(*calltree.compact(stats))}, 5)
    assert pickle.loads(saved)["profile"] == buildtree(stats)
    # Plain data (no code objects), and smaller than the tree itself.
    assert len(saved) < len(pickle.dumps(buildtree(stats), 5))


def test_top_level_ms_is_the_tree_top_level_cost():
    stats = _stats()
    tree = buildtree(stats)
    top = [
        float(node["cost"])
        for node in tree.values()
        if not node.get("callers") and "of '_lsprof.Profiler'" not in node["function"]
    ]
    # Dozer's costs are rounded to 0.01 ms each.
    assert calltree.top_level_ms(*calltree.compact(stats)) == pytest.approx(
        sum(top), abs=0.005 * len(top) + 1e-9
    )


@pytest.fixture
def directory(tmp_path):
    return tmp_path / "profiles"


def _globals(path):
    """The module.name pairs a pickle file refers to (what unpickling it imports)."""
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(path.read_bytes()):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif opcode.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


def test_a_saved_profile_needs_only_datetime_and_dozer_tree(directory):
    wrapped = middleware(_app, directory)
    call(wrapped, headers={"X-Wsgiprobe-Profile": TOKEN})
    (profile_id,) = ids(directory)
    path = directory / f"{profile_id}.pkl"
    assert _globals(path) == {"datetime.datetime", "wsgiprobe.profiler.calltree.dozer_tree"}
    data = pickle.loads(path.read_bytes())
    assert isinstance(data["profile"], dict)
    assert any(key.startswith("_app ") for key in data["profile"])


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_profiles_saved_with_the_tree_itself_still_show(directory):
    # As saved before the tree was deferred (and as plain Dozer saves them).
    wrapped = middleware(_app, directory)
    stats = _stats()
    data = {
        "time": datetime.now(),
        "profile": buildtree(stats),
        "environ": {"SCRIPT_NAME": "", "PATH_INFO": "/old", "QUERY_STRING": ""},
        "wsgiprobe": {"method": "GET", "path": "/old"},
    }
    wrapped.store.save("1_old", pickle.dumps(data), data["wsgiprobe"])
    page = Client(wrapped).get(
        "/_profiler/show/1_old", buffered=True, environ_overrides={"wsgi.multiprocess": True}
    )
    assert page.status_code == 200
    assert "_fib" in page.text
