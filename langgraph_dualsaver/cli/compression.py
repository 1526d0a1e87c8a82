"""``dualsaver status``'s compression line: stored bytes against the bytes the values
had before compression, from a random sample of PostgreSQL's values and writes.

Cheap: ``PostgresDurableSaver.asample_values`` reads a few random pages, not the tables,
and of each value only its size and first 18 bytes (a zstd frame header says how large
the value was) leave the server; nothing is decompressed. Redis holds the same bytes per
value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph_dualsaver.compression import compressed_type, uncompressed_size

if TYPE_CHECKING:
    from langgraph_dualsaver.durable.saver import PostgresDurableSaver

__all__ = ["SAMPLE_ROWS", "compression_sample", "describe"]

SAMPLE_ROWS = 1000
"""Values sampled per table."""


async def compression_sample(
    durable: PostgresDurableSaver, rows: int = SAMPLE_ROWS
) -> dict[str, Any]:
    """Up to ``rows`` values of each table: how many, how many compressed, and the
    stored and uncompressed bytes of those whose size is known."""
    return summarize(await durable.asample_values(rows))


def summarize(values: list[tuple[str, int, bytes]]) -> dict[str, Any]:
    """The report of sampled ``(type, stored size, head)`` triples."""
    stored = raw = compressed = unknown = 0
    for type_, size, head in values:
        if compressed_type(type_.split("+", 1)[0])[1] is not None:
            compressed += 1
        before = uncompressed_size(type_, size, head)
        if before is None:
            unknown += 1
            continue
        stored += size
        raw += before
    return {
        "sampled": len(values),
        "compressed": compressed,
        "size_unknown": unknown,
        "stored_bytes": stored,
        "uncompressed_bytes": raw,
        "ratio": round(raw / stored, 2) if stored else None,
    }


def describe(report: dict[str, Any]) -> str:
    """One line for ``dualsaver status``."""
    if not report["sampled"]:
        return "no values stored yet"
    line = (
        f"{report['ratio']:.2f}x ({_mb(report['uncompressed_bytes'])} of values stored in "
        f"{_mb(report['stored_bytes'])}; {report['compressed']} of {report['sampled']} "
        "sampled values compressed)"
        if report["ratio"] is not None
        else f"{report['compressed']} of {report['sampled']} sampled values compressed"
    )
    if report["size_unknown"]:
        line += f"; {report['size_unknown']} encrypted (size unknown), not counted"
    return line


def _mb(size: int) -> str:
    return f"{size / 1e6:,.2f} MB" if size >= 10_000 else f"{size:,} bytes"
