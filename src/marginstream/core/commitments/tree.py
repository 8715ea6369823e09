"""A dense, index-addressed binary Merkle-sum tree, updated in place.

Why this shape (docs/verifiable-state.md has the byte layout and golden vectors):

- dense and index-addressed: leaf i is the i-th account its partition ever saw, so the
  depth is ceil(log2 n), 17 for 131k accounts, not the 256 of a sparse tree keyed by hash
  (11 times the hashing per update in Python);
- every node carries two sums, liabilities and deficit, as unsigned integers of 16 bytes
  (units of 10^-SCALE, core/commitments/leaf.py): a bankrupt account's negative equity
  goes into the deficit, never netted against another's liabilities, so it cannot lower
  the published total (the hidden negative-account trick of early proofs of reserves);
- SHA-256 with RFC 6962's domain separation: 0x00 before a leaf's bytes, 0x01 before a
  node's children, so a leaf can never be passed off as a node;
- updates are batched: set() marks a leaf, root() recomputes each marked path once per
  level, so paths that share upper nodes share their hashing (a market move that
  re-prices every holder costs about one hash per node, not one per node per leaf).

The tree grows by doubling: past its capacity the old root becomes the left child of a
new root whose right subtree is empty. Empty slots are EMPTY (32 zero bytes, sums 0).
"""

from __future__ import annotations

from hashlib import sha256
from typing import NamedTuple

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
SUM_BYTES = 16
SUM_LIMIT = 1 << (8 * SUM_BYTES - 1)  # a sum at or past this is refused: overflow


class Node(NamedTuple):
    hash: bytes  # 32 bytes
    liabilities: int  # sum of max(equity, 0) below, in units of 10^-SCALE
    deficit: int  # sum of max(-equity, 0) below


EMPTY = Node(bytes(32), 0, 0)


class SumOverflow(ValueError):
    """A sum outside 0 <= sum < 2^127: refused rather than wrapped."""


def leaf_node(leaf_bytes: bytes, liabilities: int, deficit: int) -> Node:
    """A leaf: the hash of its bytes, under the leaf prefix, and its two sums."""
    _check(liabilities, deficit)
    return Node(sha256(LEAF_PREFIX + leaf_bytes).digest(), liabilities, deficit)


def node_bytes(left: Node, right: Node) -> bytes:
    """What a node hashes: its prefix, then each child's hash and sums, left first."""
    return b"".join(
        (
            NODE_PREFIX,
            left.hash,
            left.liabilities.to_bytes(SUM_BYTES, "big"),
            left.deficit.to_bytes(SUM_BYTES, "big"),
            right.hash,
            right.liabilities.to_bytes(SUM_BYTES, "big"),
            right.deficit.to_bytes(SUM_BYTES, "big"),
        )
    )


def parent(left: Node, right: Node) -> Node:
    liabilities = left.liabilities + right.liabilities
    deficit = left.deficit + right.deficit
    _check(liabilities, deficit)
    return Node(sha256(node_bytes(left, right)).digest(), liabilities, deficit)


def _check(liabilities: int, deficit: int) -> None:
    if not (0 <= liabilities < SUM_LIMIT and 0 <= deficit < SUM_LIMIT):
        raise SumOverflow(f"a sum out of range: liabilities {liabilities}, deficit {deficit}")


_EMPTY_ROOTS = [EMPTY]  # the root of an empty subtree of each height


def empty_root(height: int) -> Node:
    while len(_EMPTY_ROOTS) <= height:
        below = _EMPTY_ROOTS[-1]
        _EMPTY_ROOTS.append(parent(below, below))
    return _EMPTY_ROOTS[height]


def depth_for(count: int) -> int:
    """The height of a tree of count leaves (capacity 2^depth): 0 for one leaf or none."""
    return max(count - 1, 0).bit_length()


# Inside the tree a node is a plain tuple (packed, liabilities, deficit), packed being
# what its parent hashes of it: hash ‖ liabilities ‖ deficit (64 bytes), so a parent is one
# concatenation and one sha256 (children are never negative: leaves are checked).
Packed = tuple[bytes, int, int]


def _packed(node: Node) -> Packed:
    sums = node.liabilities.to_bytes(SUM_BYTES, "big") + node.deficit.to_bytes(SUM_BYTES, "big")
    return (node.hash + sums, node.liabilities, node.deficit)


def leaf_node_packed(packed: bytes) -> Packed:
    """A leaf as SumTree keeps it, from its 64 bytes (hash ‖ liabilities ‖ deficit)."""
    liabilities = int.from_bytes(packed[32:48], "big")
    deficit = int.from_bytes(packed[48:64], "big")
    _check(liabilities, deficit)
    return (bytes(packed), liabilities, deficit)


def _node(packed: Packed) -> Node:
    return Node(packed[0][:32], packed[1], packed[2])


_EMPTY_PACKED: list[Packed] = []


def _empty_packed(height: int) -> Packed:
    while len(_EMPTY_PACKED) <= height:
        _EMPTY_PACKED.append(_packed(empty_root(len(_EMPTY_PACKED))))
    return _EMPTY_PACKED[height]


class SumTree:
    """The tree of one partition. levels[0] are the leaves; levels[k][j] the node over
    leaves j*2^k .. (j+1)*2^k - 1; a node not in a level's list is an empty subtree."""

    def __init__(self) -> None:
        self.levels: list[list[Packed]] = [[]]
        self._marked: set[int] = set()

    @property
    def count(self) -> int:
        """Leaf slots in use: one past the highest index set."""
        return len(self.levels[0])

    def set(self, index: int, node: Node) -> None:
        leaves = self.levels[0]
        if index >= len(leaves):  # every new slot is marked: its parents are computed
            self._marked.update(range(len(leaves), index + 1))
            leaves.extend([_empty_packed(0)] * (index + 1 - len(leaves)))
        packed = _packed(node)
        if leaves[index] != packed:
            leaves[index] = packed
            self._marked.add(index)

    def load_leaves(self, leaves: list[Packed]) -> None:
        """Every leaf at once (a snapshot's), each marked: root() computes the nodes."""
        self.levels = [list(leaves)]
        self._marked = set(range(len(leaves)))

    def resum(self, index: int, liabilities: int, deficit: int) -> None:
        """Leaf index with new sums and the same hash (its account re-priced)."""
        found = self.levels[0][index]
        if found[1] != liabilities or found[2] != deficit:
            _check(liabilities, deficit)
            sums = liabilities.to_bytes(SUM_BYTES, "big") + deficit.to_bytes(SUM_BYTES, "big")
            self.levels[0][index] = (found[0][:32] + sums, liabilities, deficit)
            self._marked.add(index)

    def leaf(self, index: int) -> Node:
        return _node(self.levels[0][index])

    def root(self) -> Node:
        """The root over every leaf set so far (marked paths recomputed first)."""
        depth = depth_for(self.count)
        levels = self.levels
        while len(levels) <= depth:
            levels.append([])
        marked, self._marked = self._marked, set()
        digest, prefix, limit, width = sha256, NODE_PREFIX, SUM_LIMIT, SUM_BYTES
        for height in range(depth):
            below, above = levels[height], levels[height + 1]
            size, empty = len(below), _empty_packed(height)
            wanted = (size + 1) // 2
            if len(above) < wanted:
                above.extend([empty] * (wanted - len(above)))
            last = size >> 1 if size % 2 else -1  # the node whose right child is empty
            up = {i >> 1 for i in marked}
            for j in up:  # parent(), on packed nodes: most of a commitment's cost
                first = below[2 * j]
                second = below[2 * j + 1] if j != last else empty
                liabilities, deficit = first[1] + second[1], first[2] + second[2]
                if liabilities >= limit or deficit >= limit:
                    _check(liabilities, deficit)
                above[j] = (
                    digest(prefix + first[0] + second[0]).digest()
                    + liabilities.to_bytes(width, "big") + deficit.to_bytes(width, "big"),
                    liabilities, deficit,
                )  # fmt: skip
            marked = up
        top = levels[depth]
        return _node(top[0]) if top else EMPTY

    def proof(self, index: int) -> list[Node]:
        """The siblings of leaf index, bottom up (root() first, for current nodes)."""
        self.root()
        siblings = []
        for height in range(depth_for(self.count)):
            level, other = self.levels[height], (index >> height) ^ 1
            siblings.append(_node(level[other]) if other < len(level) else empty_root(height))
        return siblings


def root_from_proof(index: int, leaf: Node, siblings: list[Node]) -> Node:
    """The root a leaf and its siblings (SumTree.proof) lead to."""
    node = leaf
    for height, sibling in enumerate(siblings):
        node = parent(sibling, node) if (index >> height) & 1 else parent(node, sibling)
    if index >> len(siblings):
        raise ValueError(f"leaf index {index} is outside a tree of depth {len(siblings)}")
    return node


def build(leaves: list[Node]) -> Node:
    """The root over leaves, from scratch: the reference the incremental tree must equal."""
    if not leaves:
        return EMPTY
    level, height = list(leaves), 0
    while len(level) > 1 or height < depth_for(len(leaves)):
        empty = empty_root(height)
        if len(level) % 2:
            level.append(empty)
        level = [parent(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        height += 1
    return level[0]
