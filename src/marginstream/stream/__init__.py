"""The stream shell: Kafka consumers and transactional producers around the margin core.

Nothing here computes risk. worker starts a RiskService (runner), which opens one
OwnedPartition (partition) per assigned partition, feeds it records and commits each in
its own fenced transaction (commit); changelog restores and follows state, store keeps
it in RocksDB, fanout copies market records to every partition, web, riskpage and
metrics serve the views. docs/architecture.md names the module for every step.
No import cycle among these modules, and none imports cli or feeds (pyproject's contracts).
"""
