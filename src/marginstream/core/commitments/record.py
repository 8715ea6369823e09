"""One partition's state tree and input chain, and the commitment record of each commit.

A worker seals a commit (core/delivery/unit.py) and, in the same Kafka transaction as its
state and outputs, publishes one record to `commitments` (key: the partition), canonical
JSON with sorted keys:

    schema       RECORD_SCHEMA
    deployment   the deployment's name (prefix and app id): two deployments may share the
                 prefix, and with it the topic (`repartition` moves one to a new app id)
    partition    the account partition
    epoch        the commit's version: every part the commit writes carries it
    prev         sha256 of the partition's previous commitment record (zeros: none)
    runs         what the commit applied, in order: [topic, partition, first, last]
    input_head   the input chain's head after them (chain.py)
    state_root   the state tree's root hash (tree.py), over the fund slice and accounts
    accounts     accounts in the tree (leaves in use, less the fund's)
    liabilities  the root's sums, as decimals (units of 10^-scale, leaf.py)
    deficit
    scale        leaf.SCALE
    owed         closing work is owed at this commit (core/engine.py: steps, owe=True)
    engine       the engine's name and version
    params       sha256 of the margin parameters in force (EngineConfig, canonical)

The partition's chain state, its head and its last record (whose sha256 is the next
record's prev), is a state part (CHAIN_KEY) written by every commit, so a new owner goes
on from the last commit, and proves accounts against it before its own first commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import Decimal
from hashlib import sha256
from typing import Any

import orjson

from marginstream import __version__
from marginstream.core.books.ledger import Account
from marginstream.core.commitments import leaf as leaves
from marginstream.core.commitments.chain import GENESIS, InputChain
from marginstream.core.commitments.tree import (
    SUM_BYTES,
    Node,
    SumTree,
    leaf_node,
    leaf_node_packed,
)
from marginstream.core.inputs.numbers import decimal_text
from marginstream.core.liquidation.fund import InsuranceFund
from marginstream.core.risk.market import Market

RECORD_SCHEMA = 1
CHAIN_KEY = ("delivery", "chain")
ENGINE = f"marginstream {__version__}"


def params_hash(config: Any) -> str:
    """sha256 of the engine's parameters: its config as canonical JSON, every float as
    its repr (the parameters are named here, never fed into a ledger figure), without
    resident_accounts (how much a worker keeps decoded changes no figure)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, float | Decimal):
            return repr(value)
        return value

    data = plain(dataclasses.asdict(config))
    data.pop("resident_accounts", None)
    return sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def amount(units: int) -> str:
    return decimal_text(Decimal(units).scaleb(-leaves.SCALE))


def canonical(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


class NoLeaf(ValueError):
    """An account part without its leaf (an earlier format's): load it whole, upgraded."""


class StateTree:
    """A partition's tree: the fund's slice at leaf 0, each account at its own leaf, and
    each leaf's equity inputs (leaf.Holding), so that a market move re-prices holders
    without decoding them."""

    def __init__(self) -> None:
        self.tree = SumTree()
        self.held: dict[str, tuple[int, leaves.Holding]] = {}  # account -> (leaf, holding)
        self.tree.set(leaves.FUND_LEAF, leaf_node(leaves.fund_bytes(InsuranceFund()), 0, 0))

    def put(
        self, index: int, part: dict[str, Any], held: leaves.Holding, marks: leaves.Marks
    ) -> None:
        """An account's leaf, from its state part and its holding."""
        self.held[part["account"]] = (index, held)
        self.tree.set(index, leaf_node(leaves.account_bytes(part), *leaves.sums(
            leaves.equity(held, marks))))  # fmt: skip

    def put_fund(self, fund: InsuranceFund) -> None:
        self.tree.set(
            leaves.FUND_LEAF,
            leaf_node(leaves.fund_bytes(fund), leaves.units(fund.balance),
                      leaves.units(fund.uncovered)),
        )  # fmt: skip

    def reprice(self, account_ids: Iterable[str], marks: leaves.Marks) -> None:
        """New sums for accounts whose positions' marks or funding moved."""
        held, resum, equity, sums = self.held, self.tree.resum, leaves.equity, leaves.sums
        for account_id in account_ids:
            found = held.get(account_id)
            if found is not None and found[1][1]:  # known, with positions to re-price
                resum(found[0], *sums(equity(found[1], marks)))

    @property
    def accounts(self) -> int:
        return len(self.held)

    def exported(self) -> tuple[bytes, bytes]:
        """The leaves (64 bytes each, as their parents hash them) and each account's leaf
        and holding (JSON, decimals as text): what a snapshot keeps (viewsnapshot.py)."""
        leaves_blob = b"".join(packed for packed, _, _ in self.tree.levels[0])
        rows = [
            [account, index, str(cash), [[s, str(q), str(c), str(f)] for s, q, c, f in positions]]
            for account, (index, (cash, positions)) in self.held.items()
        ]
        return leaves_blob, orjson.dumps(rows)

    @classmethod
    def imported(cls, leaves_blob: bytes, held: bytes) -> StateTree:
        """exported()'s inverse; ValueError if the two do not go together."""
        found = cls()
        width = 32 + 2 * SUM_BYTES
        if len(leaves_blob) % width:
            raise ValueError("the leaves are not whole nodes")
        nodes = []
        for start in range(0, len(leaves_blob), width):
            packed = leaves_blob[start : start + width]
            nodes.append(leaf_node_packed(packed))
        found.tree.load_leaves(nodes)
        for account, index, cash, positions in orjson.loads(held):
            if not 0 < index < len(nodes):
                raise ValueError(f"account {account!r}: leaf {index} is not in the tree")
            found.held[account] = (index, (Decimal(cash), tuple(
                (s, Decimal(q), Decimal(c), Decimal(f)) for s, q, c, f in positions)))  # fmt: skip
        return found

    def root(self) -> Node:
        return self.tree.root()


class Commitments:
    """What a partition commits to beyond its parts: its tree, its chain, the last record."""

    def __init__(
        self, partition: int, params: str, chain: Mapping[str, Any] | None, deployment: str = ""
    ) -> None:
        self.partition = partition
        self.deployment = deployment  # the shell's to name (stream/partition.py, verify)
        self.params = params
        self.tree = StateTree()
        # The last record known committed: the shell's to set once a commit went through
        # (stream/partition.py); loaded from the chain part, which the commit wrote.
        self.committed: bytes | None = None if not chain else chain["record"].encode()
        self.chain = InputChain(GENESIS if not chain else bytes.fromhex(chain["head"]))
        self.prev = GENESIS if self.committed is None else sha256(self.committed).digest()
        self.last: bytes | None = None  # the last record sealed (not yet known committed)

    # -- building the tree ---------------------------------------------------------

    @classmethod
    def of_engine(
        cls, engine: Any, partition: int, chain: Mapping[str, Any] | None = None
    ) -> Commitments:
        """From an engine holding every account in memory (replay, verify, eager loads)."""
        found = cls(partition, params_hash(engine.config), chain)
        marks = leaves.Marks(engine.market)
        for account_id in sorted(engine.accounts):
            account = engine.accounts[account_id]
            found.add_account(account, account.to_dict(), marks)
        found.tree.put_fund(engine.fund)
        return found

    @classmethod
    def of_snapshot(
        cls, tree: StateTree, partition: int, params: str, chain: Mapping[str, Any] | None
    ) -> Commitments:
        found = cls(partition, params, chain)
        found.tree = tree
        return found

    @classmethod
    def of_parts(
        cls, parts: Iterable[dict[str, Any]], market: Market, fund: InsuranceFund,
        partition: int, params: str, chain: Mapping[str, Any] | None,
    ) -> Commitments:  # fmt: skip
        """From stored account parts (decoded JSON), without building an Account each."""
        found = cls(partition, params, chain)
        marks = leaves.Marks(market)
        for part in parts:
            if "leaf" not in part:
                raise NoLeaf(f"account {part.get('account')!r} has no leaf")
            found.tree.put(part["leaf"], part, leaves.holding_from_part(part), marks)
        found.tree.put_fund(fund)
        return found

    def add_account(self, account: Account, part: dict[str, Any], marks: leaves.Marks) -> None:
        if account.leaf is None:
            raise NoLeaf(f"account {account.account_id} has no leaf (an unupgraded part)")
        self.tree.put(account.leaf, part, leaves.holding(account), marks)

    # -- sealing -------------------------------------------------------------------

    def seal(
        self,
        engine: Any,
        accounts: Mapping[str, dict[str, Any]],
        fund_changed: bool,
        repriced: set[str],
        epoch: int,
    ) -> tuple[bytes, dict[str, Any]]:
        """The commitment record of a commit, and the chain part to write with it.

        accounts: the state parts of the accounts the commit writes; repriced: symbols
        whose valuation moved since the last commit (their holders' sums move)."""
        marks = leaves.Marks(engine.market)
        for account_id, part in accounts.items():
            self.add_account(engine.accounts[account_id], part, marks)
        if repriced:
            holders = engine.view.holders(sorted(repriced))
            self.tree.reprice((a for a in holders if a not in accounts), marks)
        if fund_changed:
            self.tree.put_fund(engine.fund)
        value = self.record(epoch, self.chain.take_runs(), engine.owed is not None)
        self.prev = sha256(value).digest()
        self.last = value
        return value, self.chain_part()

    def record(self, epoch: int, runs: list[Any], owed: bool) -> bytes:
        root = self.tree.root()
        return canonical({
            "schema": RECORD_SCHEMA,
            "deployment": self.deployment,
            "partition": self.partition,
            "epoch": epoch,
            "prev": self.prev.hex(),
            "runs": runs,
            "input_head": self.chain.head.hex(),
            "state_root": root.hash.hex(),
            "accounts": self.tree.accounts,
            "liabilities": amount(root.liabilities),
            "deficit": amount(root.deficit),
            "scale": leaves.SCALE,
            "owed": owed,
            "engine": ENGINE,
            "params": self.params,
        })  # fmt: skip

    def chain_part(self) -> dict[str, Any]:
        assert self.last is not None
        return {"head": self.chain.head.hex(), "record": self.last.decode()}

    def summary(self) -> dict[str, Any]:
        """The tree's root and sums now (replay --state prints it per partition)."""
        root = self.tree.root()
        return {
            "state_root": root.hash.hex(),
            "accounts": self.tree.accounts,
            "liabilities": amount(root.liabilities),
            "deficit": amount(root.deficit),
        }
