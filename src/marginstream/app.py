"""`faust -A marginstream.app worker`: the worker, configured from the environment."""

import sys

from marginstream.stream.settings import SettingsError
from marginstream.stream.worker import create_app

try:
    app = create_app()
except SettingsError as error:  # one line, as for every other reason not to start
    print(f"marginstream: error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
