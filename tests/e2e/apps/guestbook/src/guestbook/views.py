from flask import Blueprint, jsonify, request

from . import VERSION
from .db import get_db

bp = Blueprint("guestbook", __name__)


def entry_json(row):
    return {
        "id": row["id"],
        "name": row["name"],
        "message": row["message"],
        "created": row["created"],
    }


@bp.get("/hello")
def hello():
    return "Hello, World!"


@bp.get("/up")
def up():
    count = get_db().execute("SELECT COUNT(*) FROM entry").fetchone()[0]
    return {"status": "ok", "entries": count}


@bp.get("/version")
def version():
    return {"version": VERSION}


@bp.get("/entries")
def list_entries():
    rows = get_db().execute("SELECT * FROM entry ORDER BY id").fetchall()
    return jsonify([entry_json(row) for row in rows])


@bp.post("/entries")
def create_entry():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return {"error": "the body must be a JSON object"}, 400
    for field in ("name", "message"):
        if not isinstance(data.get(field), str) or not data[field].strip():
            return {"error": f"{field} is required and must be a non-empty string"}, 400

    db = get_db()
    cursor = db.execute(
        "INSERT INTO entry (name, message, created) VALUES (?, ?, CURRENT_TIMESTAMP)",
        (data["name"], data["message"]),
    )
    db.commit()
    row = db.execute("SELECT * FROM entry WHERE id = ?", (cursor.lastrowid,)).fetchone()
    return entry_json(row), 201
