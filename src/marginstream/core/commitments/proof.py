"""A proof that one account is a leaf of its partition's committed state tree.

Served by GET /accounts/{id}/proof (stream/web.py) and checked offline by `marginstream
verify-proof FILE` (no Kafka, no state): the leaf's bytes hash, with its sums and the
siblings' hashes and sums, up to the root the commitment record names, and the root's
sums are the record's totals. JSON:

    proof         PROOF_FORMAT
    account       the account id; partition, epoch: the commit proven
    index         the leaf's index
    leaf          the leaf's bytes, hex (leaf.py: the account's exact state)
    liabilities   the leaf's sums, in units of 10^-scale (integers)
    deficit
    siblings      [hash hex, liabilities, deficit] from the leaf's level up
    commitment    the commitment record, as published (its text)

A sibling's sums show the total of the accounts under it: a proof is the account
owner's to see (the web token), as its leaf shows its state.
"""

from __future__ import annotations

from typing import Any

import orjson

from marginstream.core.commitments.record import amount
from marginstream.core.commitments.tree import Node, SumTree, leaf_node, root_from_proof

PROOF_FORMAT = 1


class ProofError(ValueError):
    """The proof does not hold; the message says where."""


def make(account: str, index: int, leaf: bytes, tree: SumTree, commitment: bytes) -> dict[str, Any]:
    node = tree.leaf(index)
    record = orjson.loads(commitment)
    return {
        "proof": PROOF_FORMAT,
        "account": account,
        "partition": record["partition"],
        "epoch": record["epoch"],
        "index": index,
        "leaf": leaf.hex(),
        "liabilities": node.liabilities,
        "deficit": node.deficit,
        "siblings": [[s.hash.hex(), s.liabilities, s.deficit] for s in tree.proof(index)],
        "commitment": commitment.decode(),
    }


def check(proof: Any) -> dict[str, Any]:
    """What a valid proof shows (the account's and the partition's sums); ProofError else."""
    try:
        return _check(proof)
    except ProofError:
        raise
    except KeyError as error:
        raise ProofError(f"malformed proof: no {error.args[0]!r} field") from None
    except (TypeError, ValueError, AttributeError, IndexError, orjson.JSONDecodeError) as error:
        raise ProofError(f"malformed proof: {error}") from None


def _check(proof: dict[str, Any]) -> dict[str, Any]:
    if proof["proof"] != PROOF_FORMAT:
        raise ProofError(f"proof format {proof['proof']!r}, this reads {PROOF_FORMAT}")
    record = orjson.loads(proof["commitment"])
    leaf = bytes.fromhex(proof["leaf"])
    state = orjson.loads(leaf[1:])
    index = _whole(proof["index"], "index")
    if state.get("account") != proof["account"] or state.get("leaf") != index:
        raise ProofError("the leaf's bytes are not this account's leaf at this index")
    for name in ("partition", "epoch"):
        if record[name] != proof[name]:
            raise ProofError(f"the proof's {name} is not the commitment's")
    node = leaf_node(leaf, _whole(proof["liabilities"], "liabilities"),
                     _whole(proof["deficit"], "deficit"))  # fmt: skip
    siblings = [
        Node(bytes.fromhex(h), _whole(liabilities, "a sum"), _whole(deficit, "a sum"))
        for h, liabilities, deficit in proof["siblings"]
    ]
    if any(len(s.hash) != 32 for s in siblings):
        raise ProofError("a sibling's hash is not 32 bytes")
    root = root_from_proof(index, node, siblings)
    if root.hash.hex() != record["state_root"]:
        raise ProofError("the leaf and its siblings do not lead to the commitment's state root")
    if (
        amount(root.liabilities) != record["liabilities"]
        or amount(root.deficit) != record["deficit"]
    ):
        raise ProofError("the root's sums are not the commitment's totals")
    return {
        "account": proof["account"],
        "partition": record["partition"],
        "epoch": record["epoch"],
        "liabilities": amount(node.liabilities),
        "deficit": amount(node.deficit),
        "partition_liabilities": record["liabilities"],
        "partition_deficit": record["deficit"],
        "state_root": record["state_root"],
    }


def _whole(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"{name} must be a whole number >= 0, got {value!r}")
    return value
