"""wsgiprobe.discovery: the uWSGI stats and gunicorn record readers, worker N's pid, which
server runs, and the command (no app server: sockets and records made here)."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from wsgiprobe import discovery
from wsgiprobe.discovery import Discovery, DiscoveryError, Worker

# A uWSGI 2.0.31 stats dump (2 of its 3 workers; trimmed: locks, sockets, apps, cores).
UWSGI_STATS = """{
	"version":"2.0.31",
	"listen_queue":0,
	"pid":13331,
	"cwd":"/tmp/try4",
	"workers":[
		{
			"id":1,
			"pid":13332,
			"accepting":1,
			"requests":0,
			"status":"idle",
			"respawn_count":1,
			"cores":[{"id":0,"requests":0,"vars":[

					],"req_info":					{

					}}]
		},
		{
			"id":2,
			"pid":13333,
			"accepting":1,
			"requests":4,
			"status":"busy",
			"respawn_count":2
		},
		{
			"id":3,
			"pid":0,
			"accepting":0,
			"requests":0,
			"status":"idle",
			"respawn_count":1
		}
	]
}"""
ENV = ("WSGIPROBE_UWSGI_STATS", "WSGIPROBE_WORKERS_FILE")


@pytest.fixture
def child():
    """A live child process of this test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def write_record(tmp_path, master, workers, **more):
    path = tmp_path / "workers.json"
    record = {"server": "gunicorn", "master_pid": master, "workers": workers, **more}
    path.write_text(json.dumps(record))
    return str(path)


@contextlib.contextmanager
def stats_server(family, address, payload=UWSGI_STATS):
    """A stats server that dumps ``payload`` to each connection, like uWSGI's."""
    listener = socket.socket(family)
    listener.bind(address)
    listener.listen()

    def serve():
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                with connection:
                    connection.sendall(payload.encode())

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()


# -- uWSGI ---------------------------------------------------------------------------------


def test_parse_uwsgi_stats():
    found = discovery.parse_uwsgi_stats(UWSGI_STATS.encode())
    workers = (Worker(1, 13332, "idle", 0, 1), Worker(2, 13333, "busy", 4, 2))
    assert found == Discovery("uwsgi", workers, 3, 13331)


def test_parse_uwsgi_stats_skips_cheap_workers_and_http_headers():
    data = json.loads(UWSGI_STATS)
    data["workers"][2]["status"] = "cheap"
    raw = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + json.dumps(data)
    assert discovery.parse_uwsgi_stats(raw).expected == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not JSON"),
        (b"garbage", "not JSON"),
        (b'{"version": "2.0"}', "no 'workers' list"),
        (b'{"workers": {}}', "no 'workers' list"),
        (b"[]", "no 'workers' list"),
    ],
)
def test_unusable_uwsgi_stats_are_a_discovery_error(raw, message):
    with pytest.raises(DiscoveryError, match=f"uWSGI stats: {message}"):
        discovery.parse_uwsgi_stats(raw)


def test_read_uwsgi_stats_from_a_unix_socket_host_port_and_a_dump(tmp_path):
    path = str(tmp_path / "stats.sock")
    with (
        stats_server(socket.AF_UNIX, path),
        stats_server(socket.AF_INET, ("127.0.0.1", 0)) as (_, port),
    ):
        assert discovery.read_uwsgi_stats(path).expected == 3
        assert discovery.read_uwsgi_stats(f"127.0.0.1:{port}").expected == 3
    (tmp_path / "dump.json").write_text(UWSGI_STATS)
    assert discovery.read_uwsgi_stats(str(tmp_path / "dump.json")).master_pid == 13331


def test_read_uwsgi_stats_errors(tmp_path):
    with pytest.raises(DiscoveryError, match=r"nope.sock does not exist \(is uWSGI up\?\)"):
        discovery.read_uwsgi_stats(str(tmp_path / "nope.sock"))
    (tmp_path / "bad").write_text("{nope")
    with pytest.raises(DiscoveryError, match=r"uWSGI stats from .*bad: not JSON"):
        discovery.read_uwsgi_stats(str(tmp_path / "bad"))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(DiscoveryError, match=r"cannot read the uWSGI stats from 127\.0\.0\.1:"):
        discovery.read_uwsgi_stats(f"127.0.0.1:{port}")


def test_uwsgi_stats_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(discovery, "MAX_STATS_BYTES", 100)
    path = str(tmp_path / "stats.sock")
    with (
        stats_server(socket.AF_UNIX, path),
        pytest.raises(DiscoveryError, match="more than 16 MB"),
    ):
        discovery.read_uwsgi_stats(path)


def test_uwsgi_worker_pid():
    found = discovery.parse_uwsgi_stats(UWSGI_STATS)
    assert found.worker_pid(2) == 13333
    with pytest.raises(DiscoveryError, match="uWSGI worker 3 is not running"):
        found.worker_pid(3)
    with pytest.raises(DiscoveryError, match=r"uWSGI has no worker 4 \(workers: \[1, 2\]\)"):
        found.worker_pid(4)


# -- gunicorn ------------------------------------------------------------------------------


def test_parse_gunicorn_record():
    record = {
        "server": "gunicorn",
        "master_pid": os.getpid(),
        "num_workers": 3,
        "seq": 5,
        "updated": 1.0,
        "workers": [{"index": 1, "pid": 101}, {"index": 2, "pid": 102}, {"index": 3}],
    }
    found = discovery.parse_gunicorn_record(json.dumps(record))
    assert found == Discovery("gunicorn", (Worker(1, 101), Worker(2, 102)), 3, os.getpid())


def test_gunicorn_worker_pid(tmp_path, child):
    path = write_record(tmp_path, os.getpid(), [{"index": 1, "pid": child.pid}])
    assert discovery.worker_pid(1, gunicorn_record=path) == child.pid
    with pytest.raises(DiscoveryError, match=r"gunicorn has no worker 2 \(workers: \[1\]\)"):
        discovery.worker_pid(2, gunicorn_record=path)


def test_a_stale_or_unusable_gunicorn_record_is_refused(tmp_path, child, dead_pid):
    path = write_record(tmp_path, dead_pid, [{"index": 1, "pid": child.pid}])
    with pytest.raises(DiscoveryError, match=r"its master \(pid \d+\) is not running: stale"):
        discovery.read_gunicorn_record(path)
    # A pid that is not the master's child (reused, or a respawn since): never signalled.
    path = write_record(tmp_path, os.getpid(), [{"index": 1, "pid": os.getppid()}])
    with pytest.raises(DiscoveryError, match="not a child of master"):
        discovery.worker_pid(1, gunicorn_record=path)
    with pytest.raises(DiscoveryError, match=r"no gunicorn worker record at .*WORKERS_FILE"):
        discovery.read_gunicorn_record(str(tmp_path / "missing.json"))
    (tmp_path / "workers.json").write_text("{nope")
    with pytest.raises(DiscoveryError, match=r"workers\.json: not JSON"):
        discovery.read_gunicorn_record(str(tmp_path / "workers.json"))
    (tmp_path / "workers.json").write_text("{}")
    with pytest.raises(DiscoveryError, match="not a gunicorn worker record"):
        discovery.read_gunicorn_record(str(tmp_path / "workers.json"))


def test_parent_pid(child, dead_pid):
    assert discovery.parent_pid(child.pid) == os.getpid()
    assert discovery.parent_pid(dead_pid) is None


def test_live_workers_skip_dead_pids_of_a_master_on_this_host(child, dead_pid):
    listed = (Worker(1, child.pid), Worker(2, dead_pid))
    assert Discovery("gunicorn", listed, 2, os.getpid()).live_workers() == [listed[0]]
    # Another host's server (a master that is not ours): its pids mean nothing here.
    assert Discovery("uwsgi", listed, 2, dead_pid).live_workers() == list(listed)


# -- which server --------------------------------------------------------------------------


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    """The app's env file's two sources, neither existing yet."""
    paths = (str(tmp_path / "stats.sock"), str(tmp_path / "workers.json"))
    for name, path in zip(ENV, paths, strict=True):
        monkeypatch.setenv(name, path)
    return paths


def test_which_server_asks_the_sources_the_app_env_names(app_env, tmp_path, child):
    stats, _ = app_env
    write_record(tmp_path, os.getpid(), [{"index": 1, "pid": child.pid}])
    assert discovery.which_server() == "gunicorn"
    # A socket file uWSGI left behind refuses connections: not taken for a running uWSGI.
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(stats)
        assert discovery.which_server() == "gunicorn"
    os.unlink(stats)
    # A stats socket that answers proves uWSGI runs; a record only that its master pid exists.
    with stats_server(socket.AF_UNIX, stats):
        assert discovery.which_server() == "uwsgi"
        assert [w.index for w in discovery.workers()] == [1, 2]


def test_no_server_found_names_each_reason(app_env, monkeypatch):
    with pytest.raises(DiscoveryError) as error:
        discovery.discover()
    assert "no app server found" in str(error.value)
    assert "is uWSGI up" in str(error.value) and "no gunicorn worker record" in str(error.value)
    for name in ENV:
        monkeypatch.delenv(name)
    with pytest.raises(DiscoveryError, match="WSGIPROBE_UWSGI_STATS, WSGIPROBE_WORKERS_FILE"):
        discovery.discover()
    with pytest.raises(ValueError):
        discovery.discover("a.sock", "workers.json")


# -- the command ---------------------------------------------------------------------------


def test_the_command_prints_the_server_master_and_workers(tmp_path, capsys):
    (tmp_path / "dump.json").write_text(UWSGI_STATS)
    source = ["--uwsgi-stats", str(tmp_path / "dump.json")]
    assert discovery.main(source) == 0
    assert capsys.readouterr().out.splitlines() == [
        "server uwsgi",
        "master 13331",
        "worker 1 13332",
        "worker 2 13333",
    ]
    assert discovery.main([*source, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["server"], data["master_pid"], data["expected"]) == ("uwsgi", 13331, 3)
    assert data["workers"][1] == {
        "index": 2, "pid": 13333, "status": "busy", "requests": 4, "respawns": 2
    }  # fmt: skip
    assert discovery.main([*source, "--worker", "2"]) == 0
    assert capsys.readouterr().out == "13333\n"


def test_the_command_exits_2_with_the_reason(tmp_path, capsys):
    assert discovery.main(["--gunicorn-record", str(tmp_path / "workers.json")]) == 2
    assert "discovery: no gunicorn worker record" in capsys.readouterr().err
    (tmp_path / "dump.json").write_text(UWSGI_STATS)
    assert discovery.main(["--uwsgi-stats", str(tmp_path / "dump.json"), "--worker", "3"]) == 2
    assert "uWSGI worker 3 is not running" in capsys.readouterr().err


def test_the_module_runs(tmp_path):
    (tmp_path / "dump.json").write_text(UWSGI_STATS)
    command = [sys.executable, "-m", "wsgiprobe.discovery", "--uwsgi-stats", "dump.json"]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("server uwsgi\n")
