"""WSGI module for app servers: ``sample_app.wsgi:app``."""

from sample_app import create_app

app = create_app()
