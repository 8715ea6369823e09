"""The delivery guarantee, in one place: every input record changes state exactly once.

The shell commits, per partition and in one Kafka transaction, the state parts a commit
interval changed, the outputs it produced and the input offsets after it; a worker that
lost the partition is fenced by the transaction coordinator. So the state a restore
sees and the input offsets a new owner starts from always belong together. What is left
to the core, and lives here:

    sources   where a record was read: Source (topic, partition)
    guard     the replay guard: per source, the last offset this state has seen
    parts     how state parts are keyed and stored, with their format version
    formats   reading parts written by earlier versions (format 1: at-least-once)
    restore   the restore rule: which changelog records a local store keeps
    store     the part store interface and its in-memory twin
    unit      a partition's work between two commits: apply, seal, committed

Nothing here imports Kafka or Faust; the crash model in tests/core/test_recovery.py
drives these same modules. sources, parts and store are leaves the models may import;
the rest may import any of core (it stores the engine's state), never the shell.
"""
