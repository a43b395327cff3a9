import os
import re
import sqlite3

import click
from flask import current_app, g
from flask.cli import with_appcontext


def get_db():
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"], detect_types=sqlite3.PARSE_DECLTYPES)
        g.db.row_factory = sqlite3.Row
    return g.db


def close_db(e=None):
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_db():
    db = get_db()
    with current_app.open_resource("schema.sql") as f:
        db.executescript(f.read().decode("utf8"))
    db.execute("PRAGMA user_version = 0")


def pending_migrations(version):
    """(number, file name, path) of each migration newer than `version`, in name order."""
    folder = current_app.config["MIGRATIONS"]
    found = []
    for name in sorted(os.listdir(folder)):
        match = re.fullmatch(r"(\d{4})_.+\.sql", name)
        if match and int(match[1]) > version:
            found.append((int(match[1]), name, os.path.join(folder, name)))
    return found


def migrate_db():
    """Apply the pending migrations, each in one transaction; return the names applied."""
    db = get_db()
    applied = []
    for number, name, path in pending_migrations(db.execute("PRAGMA user_version").fetchone()[0]):
        with open(path, encoding="utf8") as f:
            script = f.read()
        try:
            db.executescript(f"BEGIN;\n{script}\n;PRAGMA user_version = {number:d};\nCOMMIT;")
        except sqlite3.Error as e:
            db.rollback()
            raise click.ClickException(f"migration {name} failed: {e}") from e
        applied.append(name)
    return applied


@click.command("init-db")
@with_appcontext
def init_db_command():
    """Clear the existing data and create new tables."""
    init_db()
    click.echo("Initialized the database.")


@click.command("migrate")
@with_appcontext
def migrate_command():
    """Apply the pending migrations."""
    applied = migrate_db()
    for name in applied:
        click.echo(f"Applied {name}.")
    if not applied:
        click.echo("Nothing to migrate.")


def init_app(app):
    app.teardown_appcontext(close_db)
    app.cli.add_command(init_db_command)
    app.cli.add_command(migrate_command)
