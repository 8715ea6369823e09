"""A snapshot of the risk view's columns in the partition's store, for a fast restart.

Built from the account parts, the view costs a JSON decode per account (seconds at a
million). A worker that closes a partition cleanly (its last commit written to the
store) saves the view's columns and the account ids under bookkeeping keys of the store
(META_PREFIX: local, never parts, never in the changelog), tagged with the store's
changelog offset and the partition's version. The next load takes them only if the
store still holds that offset: every write of parts (a commit, a restore) saves a new
offset in the same batch, and a wipe drops the snapshot with everything else, so an
equal offset means the same parts. Anything else (no snapshot, another offset, another
snapshot format, other instruments) and the view is rebuilt from the parts.

The partition's state tree (core/commitments) is kept beside it, its leaves and each
account's holding, which a restart would otherwise rebuild from every account part (the
most of a restart's time at 300k accounts).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson

from marginstream.core.delivery.store import META_PREFIX, PartReader, PartStore
from marginstream.core.risk.view import RiskView

SNAPSHOT_FORMAT = 4  # 2: the liquidation deadline column; 3: the state tree; 4: portfolio
_PREFIX = META_PREFIX + b"view/"
HEADER = _PREFIX + b"header"
_ARRAYS = (
    "cash", "level", "deadline", "portfolio", "row_account", "row_instrument", "inputs",
)  # fmt: skip
_IDS = _PREFIX + b"ids"
_TREE = (_PREFIX + b"tree-leaves", _PREFIX + b"tree-held")


def save(
    store: PartStore, view: RiskView, version: int, tree: tuple[bytes, bytes] | None = None
) -> None:
    """Save the view (and the state tree's StateTree.exported(), if given) as the store
    holds it now: call only when every change the view has seen is in the store (after
    the last commit's local write)."""
    columns = view.exported()
    header = {
        "format": SNAPSHOT_FORMAT,
        "changelog_offset": store.changelog_offset(),
        "version": version,
        "symbols": view.symbols(),
        "accounts": len(columns["cash"]),
        "rows": len(columns["row_account"]),
    }
    items = [(HEADER, orjson.dumps(header)), (_IDS, orjson.dumps(view.account_ids()))]
    items += [(_PREFIX + name.encode(), _npy(columns[name])) for name in _ARRAYS]
    items += zip(_TREE, tree or (None, None), strict=True)  # None: none (an older one gone)
    store.write_meta(items)


def tree_of(store: PartReader) -> tuple[bytes, bytes] | None:
    """The state tree saved with a usable snapshot (header checked first), if any."""
    leaves, held = (store.get(key) for key in _TREE)
    return None if leaves is None or held is None else (leaves, held)


def header_of(store: PartReader) -> dict[str, Any] | None:
    raw = store.get(HEADER)
    return None if raw is None else orjson.loads(raw)


def usable(header: dict[str, Any] | None, changelog_offset: int, symbols: list[str]) -> bool:
    """Whether a snapshot with this header matches a store at changelog_offset whose
    market defines symbols (numbered in any order: load_into renumbers)."""
    return (
        header is not None
        and header.get("format") == SNAPSHOT_FORMAT
        and header.get("changelog_offset") == changelog_offset
        and sorted(header.get("symbols", ())) == sorted(symbols)
    )


def load_into(store: PartReader, header: dict[str, Any], view: RiskView) -> bool:
    """Load the snapshot into an empty view; False (view untouched) if any piece is amiss."""
    raw_ids = store.get(_IDS)
    arrays = {name: store.get(_PREFIX + name.encode()) for name in _ARRAYS}
    if raw_ids is None or any(raw is None for raw in arrays.values()):
        return False
    ids = orjson.loads(raw_ids)
    columns = {name: np.load(io.BytesIO(raw), allow_pickle=False) for name, raw in arrays.items()}
    accounts, rows = header["accounts"], header["rows"]
    if len(ids) != accounts or len(columns["cash"]) != accounts:
        return False
    if columns["inputs"].shape != (rows, 7) or len(columns["row_account"]) != rows:
        return False
    # The live view numbered instruments as they were defined; this one, in symbol order.
    numbers = {symbol: n for n, symbol in enumerate(view.symbols())}
    renumbered = np.array([numbers[s] for s in header["symbols"]], dtype=np.int64)
    row_instrument = renumbered[columns["row_instrument"]] if rows else columns["row_instrument"]
    view.load(
        ids,
        columns["cash"],
        columns["level"],
        columns["row_account"],
        row_instrument,
        columns["inputs"],
        columns["deadline"],
        columns["portfolio"],
    )
    return True


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
