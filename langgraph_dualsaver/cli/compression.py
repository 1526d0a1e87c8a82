"""``dualsaver status``'s compression line: stored bytes against the bytes the values
had before compression, from a random sample of PostgreSQL's values and writes; and its
offload line: the objects in the offload store (its listing) and how many sampled
values are references to them.

Cheap: ``PostgresDurableSaver.asample_values`` reads a few random pages, not the tables,
and of each value only its size and first 18 bytes (a zstd frame header says how large
the value was) leave the server; nothing is decompressed. Redis holds the same bytes per
value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph_dualsaver.compression import compressed_type, uncompressed_size
from langgraph_dualsaver.offload.serde import is_offloaded

if TYPE_CHECKING:
    from langgraph_dualsaver.durable.saver import PostgresDurableSaver
    from langgraph_dualsaver.offload.store import Offload

__all__ = [
    "LISTED_OBJECTS",
    "SAMPLE_ROWS",
    "compression_sample",
    "describe",
    "describe_offload",
    "offload_summary",
]

SAMPLE_ROWS = 1000
"""Values sampled per table."""
LISTED_OBJECTS = 100_000
"""Objects of the offload store counted at most (the listing is paged, 1,000 a call)."""


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
        if is_offloaded(type_):  # a reference: the offload line counts its bytes
            continue
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


def offload_summary(
    offload: Offload, sample: list[tuple[str, int, bytes]] | None, limit: int = LISTED_OBJECTS
) -> dict[str, Any]:
    """The store's objects (count and bytes, from its listing, at most ``limit``) and
    the references among ``sample`` (``asample_values``' sampled values)."""
    objects = total = 0
    for found in offload.objects():
        if objects == limit:
            break
        objects += 1
        total += found.size
    return {
        "url": offload.url,
        "min_bytes": offload.min_bytes,
        "objects": objects,
        "bytes": total,
        "complete": objects < limit,
        "sampled": None if sample is None else len(sample),
        "references_sampled": None if sample is None else sum(is_offloaded(v[0]) for v in sample),
    }


def describe_offload(report: dict[str, Any]) -> str:
    """One line for ``dualsaver status``."""
    more = "" if report["complete"] else "at least "
    line = f"{more}{report['objects']:,} objects, {_mb(report['bytes'])} in {report['url']}"
    if report["sampled"]:
        line += f"; {report['references_sampled']} of {report['sampled']} sampled values offloaded"
    return line


def _mb(size: int) -> str:
    return f"{size / 1e6:,.2f} MB" if size >= 10_000 else f"{size:,} bytes"
