"""A user's own Flask app, by its contract alone: the guestbook (tests/e2e/apps/guestbook), a
typical app nobody adapted to the bundle (an app factory, SQLite in Flask's instance folder,
init and migrate commands, its own health route, no FLASK_* configuration), deployed to a
fresh VM per app server in one deploy, with only the inventory variables of
tests/e2e/apps/guestbook/inventory.

The tests of a module run in order on that VM, each building on the one before: a fresh host,
a second deploy, a new release (the data stays, its migration runs), a release whose
migration fails (never serves), make rollback after it, a setting that breaks the app (never
reaches the program), a new app name with the code it names (one deploy), make rollback with
the settings each release ran with.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SERVERS
from stack import ROOT, Stack, booted_vm, localvm

APP = ROOT / "tests/e2e/apps/guestbook"
INVENTORY = "tests/e2e/apps/guestbook/inventory"
DATABASE = "/var/lib/guestbook/data/guestbook-instance/guestbook.sqlite"
# A migration the new release brings, and one that fails.
LIKES = "ALTER TABLE entry ADD COLUMN likes INTEGER NOT NULL DEFAULT 0;\n"
BROKEN = "ALTER TABLE entry ADD COLUMN flagged INTEGER;\nTHIS IS NOT SQL;\n"


@pytest.fixture(scope="module", params=SERVERS)
def fresh(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A VM booted fresh for this app server (none of the sample app's deploys on it)."""
    localvm("destroy")
    with booted_vm("the own-app tests", server=request.param, inventory=INVENTORY) as stack:
        yield stack


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guestbook-versions")


def version(root: Path, number: str, migrations: dict[str, str]) -> list[dict[str, str]]:
    """A copy of the guestbook saying VERSION = number, with more migrations: its app_sources."""
    copy = root / number / "guestbook"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(
        APP, copy, ignore=shutil.ignore_patterns("inventory", "__pycache__", "*.egg-info", "build")
    )
    package = copy / "src" / "guestbook"
    init = package / "__init__.py"
    init.write_text(
        re.sub(r'^VERSION = ".*"$', f'VERSION = "{number}"', init.read_text(), flags=re.M)
    )
    for name, sql in migrations.items():
        (package / "migrations" / name).write_text(sql)
    return [{"name": "guestbook", "path": str(copy)}]


def deploy(stack: Stack, label: str, **extra: object):
    return stack.deploy(
        f"guestbook-{stack.server}-{label}", app_server=stack.server, app_workers=2, **extra
    )


def schema_version(stack: Stack) -> int:
    query = f"import sqlite3; print(sqlite3.connect('{DATABASE}').execute('PRAGMA user_version')"
    return int(stack.ssh(f'python3 -c "{query}.fetchone()[0])"').stdout)


def serving_version(stack: Stack) -> str:
    response = stack.get("/version")
    assert response.status == 200, response.text
    return response.json()["version"]


def test_a_fresh_host_serves_the_app_after_one_deploy(fresh: Stack):
    result = deploy(fresh, "fresh")
    assert result.rc == 0, result.tail()
    assert fresh.get("/hello").text == "Hello, World!"
    assert fresh.get("/up").json()["status"] == "ok"  # its own health route...
    assert fresh.get("/healthz").status == 404  # ...and no other imposed on it
    created = fresh.post_json("/entries", {"name": "ada", "message": "first"})
    assert created.status == 201, created.text
    assert [e["name"] for e in fresh.get("/entries").json()] == ["ada"]
    # The setup commands made the schema, the release command migrated it, in the data dir.
    owner = fresh.ssh(f"stat -c %U {DATABASE}").stdout.strip()
    assert owner == "guestbook"
    assert schema_version(fresh) == 1


def test_the_app_gets_only_what_it_asks_for(fresh: Stack):
    env = fresh.ssh("cat /etc/guestbook/app.env").stdout
    assert "FLASK_STORE_URL" not in env  # no store: the app asked for none
    stores = fresh.ssh(  # exits 1 when no unit matches
        "systemctl list-unit-files --no-legend valkey-server.service redis-server.service",
        check=False,
    )  # fmt: skip
    assert stores.stdout.strip() == "", stores.stdout
    # Its body limit is nginx's 1 MiB, not the sample app's 16 KB.
    message = "x" * 50_000
    assert fresh.post_json("/entries", {"name": "bob", "message": message}).status == 201
    # Over the limit: a browser's form gets nginx's page, a JSON client JSON.
    form = fresh.request(
        "POST", "/entries", b"m=" + b"x" * 1_200_000,
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"},
    )  # fmt: skip
    assert form.status == 413
    assert form.headers.get("Content-Type", "").startswith("text/html")
    api = fresh.post_json("/entries", {"name": "x", "message": "x" * 1_200_000})
    assert api.status == 413
    assert api.json()["error"] == "payload_too_large"


def test_a_second_deploy_changes_nothing(fresh: Stack):
    result = deploy(fresh, "again")
    assert result.rc == 0, result.tail()
    assert result.changed == 0, result.tail()


def test_a_new_release_runs_its_migration_and_keeps_the_data(fresh: Stack, versions: Path):
    before = fresh.get("/entries").json()
    sources = version(versions, "2", {"0002_likes.sql": LIKES})
    result = deploy(fresh, "v2", app_sources=sources)
    assert result.rc == 0, result.tail()
    assert serving_version(fresh) == "2"
    assert schema_version(fresh) == 2
    assert fresh.get("/entries").json() == before


def test_a_release_whose_migration_fails_never_serves(fresh: Stack, versions: Path):
    before = fresh.get("/entries").json()
    serving = fresh.ssh("readlink /srv/guestbook/current").stdout.strip()
    sources = version(versions, "3", {"0002_likes.sql": LIKES, "0003_broken.sql": BROKEN})
    result = deploy(fresh, "v3-broken", app_sources=sources)
    assert result.rc != 0
    assert "A release command failed" in result.output, result.tail()
    assert "0003_broken.sql" in result.output, result.tail()
    assert fresh.ssh("readlink /srv/guestbook/current").stdout.strip() == serving
    assert serving_version(fresh) == "2"
    assert schema_version(fresh) == 2  # the failed migration left nothing behind
    assert fresh.get("/entries").json() == before


def env_file(stack: Stack) -> str:
    return stack.ssh("cat /etc/guestbook/app.env").stdout


def test_make_rollback_works_after_a_failed_deploy(fresh: Stack):
    result = fresh.rollback(f"guestbook-{fresh.server}-rollback")
    assert result.rc == 0, result.tail()
    assert serving_version(fresh) == "1"
    # The data is the app's, not the release's: still there under the older code.
    assert [e["name"] for e in fresh.get("/entries").json()][:2] == ["ada", "bob"]
    assert json.loads(fresh.get("/up").text)["status"] == "ok"


def test_a_setting_that_breaks_the_app_never_reaches_the_running_program(fresh: Stack):
    result = deploy(fresh, "bad-name", app_wsgi_app="guestbook:missing()")
    assert result.rc != 0
    assert "failed its check before it serves" in result.output, result.tail()
    assert "guestbook:create_app()" in env_file(fresh)  # the settings in use, untouched
    assert " RUNNING " in fresh.ssh("supervisorctl status guestbook").stdout
    assert serving_version(fresh) == "1"


def test_a_new_name_and_the_code_it_names_switch_in_one_deploy(fresh: Stack, versions: Path):
    sources = version(versions, "4", {"0002_likes.sql": LIKES})
    module = Path(sources[0]["path"]) / "src" / "guestbook" / "wsgi.py"
    module.write_text("from guestbook import create_app\n\napp = create_app()\n")
    result = deploy(fresh, "v4-renamed", app_sources=sources, app_wsgi_app="guestbook.wsgi:app")
    assert result.rc == 0, result.tail()
    assert serving_version(fresh) == "4"
    assert "guestbook.wsgi:app" in env_file(fresh)
    assert " RUNNING " in fresh.ssh("supervisorctl status guestbook").stdout


def test_make_rollback_takes_the_settings_its_release_ran_with(fresh: Stack):
    back = fresh.rollback(f"guestbook-{fresh.server}-rollback-renamed")
    assert back.rc == 0, back.tail()
    assert serving_version(fresh) == "1"  # the code without guestbook/wsgi.py...
    assert "guestbook:create_app()" in env_file(fresh)  # ...with the name it ran with
    again = fresh.rollback(f"guestbook-{fresh.server}-rollback-undone")
    assert again.rc == 0, again.tail()
    assert serving_version(fresh) == "4"
    assert "guestbook.wsgi:app" in env_file(fresh)


def test_stream_paths_get_a_stream_pool_that_goes_with_them(fresh: Stack):
    """An app without streams has no stream pool; app_stream_paths gives it one, which serves
    those paths while the request workers are down, stops on a rollback to a release without
    gevent, and goes when they are gone."""
    assert "guestbook-streams" not in fresh.ssh("supervisorctl status", check=False).stdout
    result = deploy(fresh, "streams", app_stream_paths=["/hello"])
    assert result.rc == 0, result.tail()
    assert " RUNNING " in fresh.ssh("supervisorctl status guestbook-streams").stdout
    fresh.ssh("supervisorctl stop guestbook")
    try:
        assert fresh.get("/hello").text == "Hello, World!"  # the stream pool's
        assert fresh.get("/up").status == 502  # the request workers'
    finally:
        fresh.ssh("supervisorctl start guestbook")
    # make rollback to the release before, which has no gevent: the pool stops (its paths get
    # nginx's 502). (A rollback to a release with gevent restarts it: test_redeploy.py.)
    back = fresh.rollback(f"guestbook-{fresh.server}-rollback-streams")
    assert back.rc == 0, back.tail()
    assert " STOPPED " in fresh.ssh("supervisorctl status guestbook-streams", check=False).stdout
    assert fresh.get("/hello").status == 502
    assert fresh.get("/up").status == 200
    result = deploy(fresh, "no-streams")
    assert result.rc == 0, result.tail()
    assert "guestbook-streams" not in fresh.ssh("supervisorctl status", check=False).stdout
    assert fresh.ssh("ls /etc/supervisor/conf.d").stdout.split() == [
        "00-console.conf",
        "guestbook.conf",
    ]
    assert fresh.get("/hello").text == "Hello, World!"
