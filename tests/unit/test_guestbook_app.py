"""The e2e tests' guestbook app (tests/e2e/apps/guestbook), a user's own flaskr-shaped Flask app:
its CLI (init-db, migrate with PRAGMA user_version) and its JSON routes, on a temporary SQLite file.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests/e2e/apps/guestbook/src"))

from guestbook import create_app

MIGRATIONS = (
    Path(__file__).resolve().parents[2] / "tests/e2e/apps/guestbook/src/guestbook/migrations"
)


@pytest.fixture(autouse=True)
def instance_path(tmp_path, monkeypatch):
    """The instance folder in tmp_path, not next to the package in the source tree."""
    folder = tmp_path / "instance"
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(folder))
    return folder


@pytest.fixture
def app(tmp_path):
    return create_app(
        {
            "TESTING": True,
            "DATABASE": str(tmp_path / "guestbook.sqlite"),
            "MIGRATIONS": str(tmp_path / "migrations"),
        }
    )


@pytest.fixture(autouse=True)
def migrations(tmp_path):
    """A copy of the package's migrations, which a test may add a broken one to."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    return folder


@pytest.fixture
def cli(app):
    return app.test_cli_runner()


@pytest.fixture
def client(app):
    return app.test_client()


def user_version(app) -> int:
    with sqlite3.connect(app.config["DATABASE"]) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def columns(app) -> list[str]:
    with sqlite3.connect(app.config["DATABASE"]) as db:
        return [row[1] for row in db.execute("PRAGMA table_info(entry)")]


def run_ok(cli, command: str) -> str:
    result = cli.invoke(args=[command])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def migrated(app, cli):
    run_ok(cli, "init-db")
    run_ok(cli, "migrate")
    return app


def test_defaults_the_database_to_the_instance_folder_and_the_migrations_to_the_package(
    instance_path,
):
    instance_path.mkdir()
    (instance_path / "config.py").write_text('SECRET_KEY = "from the instance folder"\n')
    app = create_app()
    assert app.config["SECRET_KEY"] == "from the instance folder"
    assert Path(app.config["DATABASE"]) == instance_path / "guestbook.sqlite"
    assert Path(app.config["MIGRATIONS"]) == MIGRATIONS


def test_init_db_creates_version_0_and_migrate_applies_0001(app, cli):
    assert "Initialized" in run_ok(cli, "init-db")
    assert user_version(app) == 0
    assert columns(app) == ["id", "name", "message"]

    assert "Applied 0001_add_created.sql." in run_ok(cli, "migrate")
    assert user_version(app) == 1
    assert columns(app) == ["id", "name", "message", "created"]

    assert run_ok(cli, "migrate").strip() == "Nothing to migrate."
    assert user_version(app) == 1


def test_migrate_fills_created_of_the_existing_rows(app, cli):
    run_ok(cli, "init-db")
    with sqlite3.connect(app.config["DATABASE"]) as db:
        db.execute("INSERT INTO entry (name, message) VALUES ('old', 'from v0')")
    run_ok(cli, "migrate")
    with sqlite3.connect(app.config["DATABASE"]) as db:
        (created,) = db.execute("SELECT created FROM entry").fetchone()
    assert created


def test_post_then_get_entries(migrated, client):
    response = client.post("/entries", json={"name": "Ada", "message": "Hi there"})
    assert response.status_code == 201
    entry = response.get_json()
    assert entry["id"] == 1
    assert (entry["name"], entry["message"]) == ("Ada", "Hi there")
    assert entry["created"]

    response = client.get("/entries")
    assert response.status_code == 200
    assert response.get_json() == [entry]
    assert client.get("/up").get_json() == {"status": "ok", "entries": 1}


def test_up_needs_the_table(app, cli, client):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # TESTING would raise instead of answering 500
    assert client.get("/up").status_code == 500
    run_ok(cli, "init-db")
    response = client.get("/up")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "entries": 0}


def test_hello_and_version(client):
    assert client.get("/hello").get_data(as_text=True) == "Hello, World!"
    assert client.get("/version").get_json() == {"version": "1"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "not json", "content_type": "application/json"},
        {"data": "name=Ada&message=Hi"},
        {"json": ["Ada", "Hi"]},
        {"json": {"name": "Ada"}},
        {"json": {"name": "", "message": "Hi"}},
        {"json": {"name": "Ada", "message": 3}},
    ],
)
def test_bad_bodies_are_400(migrated, client, kwargs):
    response = client.post("/entries", **kwargs)
    assert response.status_code == 400
    assert "error" in response.get_json()
    assert client.get("/entries").get_json() == []


def test_a_broken_migration_changes_nothing(migrated, cli, client, migrations):
    client.post("/entries", json={"name": "Ada", "message": "Hi"})
    before = client.get("/entries").get_json()
    (migrations / "0002_broken.sql").write_text(
        "ALTER TABLE entry ADD COLUMN email TEXT;\nDELETE FROM entry;\nTHIS IS NOT SQL;\n"
    )

    result = cli.invoke(args=["migrate"])
    assert result.exit_code != 0
    assert "0002_broken.sql" in result.output
    assert "syntax error" in result.output
    assert user_version(migrated) == 1
    assert columns(migrated) == ["id", "name", "message", "created"]
    assert client.get("/entries").get_json() == before

    (migrations / "0002_broken.sql").write_text("ALTER TABLE entry ADD COLUMN email TEXT;\n")
    assert "Applied 0002_broken.sql." in run_ok(cli, "migrate")
    assert user_version(migrated) == 2


def test_migrations_apply_in_number_order_from_the_version(app, cli, migrations):
    (migrations / "0003_c.sql").write_text("CREATE TABLE c (x);\n")
    (migrations / "0002_b.sql").write_text("CREATE TABLE b (x);\n")
    (migrations / "README.txt").write_text("not a migration\n")
    run_ok(cli, "init-db")
    output = run_ok(cli, "migrate")
    assert output.splitlines() == [
        "Applied 0001_add_created.sql.",
        "Applied 0002_b.sql.",
        "Applied 0003_c.sql.",
    ]
    assert user_version(app) == 3
