"""The stream shell: Faust topics, tables, agents and web views around the margin core.

Nothing here computes risk. `partitions` feeds records to one core engine per
Kafka partition and stores the state parts each record changed; `store` keeps
those parts from going backwards when a changelog is restored over a local
RocksDB; `topics` creates and checks the topics; `web` serves account views.
"""
