"""The apps the end-to-end tests serve (module paths are given to uvicorn, gunicorn and Django)."""
