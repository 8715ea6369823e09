"""`faust -A marginstream.app worker`: the worker, configured from the environment."""

from marginstream.stream.worker import create_app

app = create_app()
