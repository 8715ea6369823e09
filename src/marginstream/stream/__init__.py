"""The stream shell: Faust topics, tables, the fan-out agent, the risk handler and web
views around the margin core.

Nothing here computes risk. `consumer` hands records from faust's fetch loop to the
risk handler; `partitions` feeds them to one core engine per Kafka partition and stores
the state parts each record changed; `store` keeps those parts from going backwards
when a changelog is restored over a local RocksDB; `producer` refuses a commit after a
failed send; `topics` creates and checks the topics; `web` serves account views.
"""
