"""The durable tier: ``PostgresDurableSaver`` on PostgreSQL (SQL and migrations,
DeltaChannel history and pruning, partitions, the audit trail)."""
