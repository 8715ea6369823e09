"""Verifiable state: each partition's state tree, input chain and commitment records.

tree.py is the Merkle-sum tree; leaf.py what a leaf holds; chain.py the input chain;
record.py puts them together per commit; proof.py proves one account's leaf. Pure: the
worker (core/delivery/unit.py, stream/commit.py), `marginstream replay --state` and
`marginstream verify` (cli/verify.py) all compute through here. May import any of core
(it commits to the engine's state), and marginstream's __version__; never the shell.
"""
