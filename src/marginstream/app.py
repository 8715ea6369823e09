"""`faust -A marginstream.app worker`: the worker, configured from the environment (a
value out of range: one line and exit status 2, settings.from_env_or_exit)."""

from marginstream.stream.settings import from_env_or_exit
from marginstream.stream.worker import create_app

app = create_app(from_env_or_exit())
