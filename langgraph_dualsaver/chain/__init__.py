"""The chain: ``DualSaver`` over both tiers, and the outbox that joins them (its
flusher, the write_through committer and the dead letters)."""
