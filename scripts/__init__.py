"""Operator scripts: model export, bootstrap, settings table, API-key hashing (run from the
repository root, `python scripts/<name>.py`; they import the installed `app` package)."""
