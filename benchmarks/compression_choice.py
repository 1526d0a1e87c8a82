"""zstd or lz4 for channel values: ratio and speed on checkpoint values as the savers
store them (the bytes ``StrictSerializer.dumps_typed`` returns).

    .venv/bin/pip install zstandard lz4     # both, for this measurement only
    .venv/bin/python -m benchmarks.compression_choice [--repeat 5] [--out FILE]

Values: every channel value of every checkpoint of a case_8842 run (most are small),
the same run's whole state at its last step, chat histories of 1 KB messages
(10, 100 and 1,000 of them), and a 2 MB tool output (a JSON search result). Speeds are
MB/s of uncompressed bytes, the best of ``--repeat`` runs, one core.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lz4.frame
import zstandard
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_dualsaver import StrictSerializer
from langgraph_dualsaver.app import LARGE_DUPLICATE_CUSTOMER, build_graph, new_case

SERDE = StrictSerializer()


def _vocabulary(size: int = 5000, seed: int = 0) -> list[str]:
    """Made-up words of 2 to 10 letters: text drawn from them with Zipf weights has
    about the entropy of English, unlike a short word list, which flatters compressors."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(size)]


WORDS = _vocabulary()
ZIPF = [1 / rank for rank in range(1, len(WORDS) + 1)]


def _text(rng: random.Random, size: int) -> str:
    words = rng.choices(WORDS, ZIPF, k=size // 4)
    return " ".join(words)[:size]


def case_values() -> tuple[list[bytes], bytes]:
    """Every channel value a case_8842 run stores, and its last state as one value."""
    saver = InMemorySaver()
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": "case_8842-bench"}}
    graph.invoke(new_case(LARGE_DUPLICATE_CUSTOMER), config)
    blobs = [data for (type_, data) in saver.blobs.values() if type_ != "empty" and data]
    state = graph.get_state(config).values
    return blobs, SERDE.dumps_typed(state)[1]


def chat(messages: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    history = [
        (HumanMessage if i % 2 == 0 else AIMessage)(content=_text(rng, 1000), id=f"m{i}")
        for i in range(messages)
    ]
    return SERDE.dumps_typed(history)[1]


def tool_output(size: int = 2 * 2**20, seed: int = 2) -> bytes:
    rng = random.Random(seed)
    hits = []
    while sum(len(json.dumps(h)) for h in hits[-1:]) * len(hits) < size:
        hits.append(
            {
                "id": rng.getrandbits(64),
                "title": _text(rng, 60),
                "url": f"https://example.com/kb/{rng.getrandbits(32):08x}",
                "score": round(rng.random(), 4),
                "snippet": _text(rng, 300),
            }
        )
    message = ToolMessage(content=json.dumps({"hits": hits}), tool_call_id="call-1")
    return SERDE.dumps_typed(message)[1]


@dataclass(frozen=True)
class Codec:
    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


def codecs() -> list[Codec]:
    found = []
    for level in (1, 3, 6):
        c = zstandard.ZstdCompressor(level=level)
        d = zstandard.ZstdDecompressor()
        found.append(Codec(f"zstd level {level}", c.compress, d.decompress))
    found.append(Codec("lz4 frame (default)", lz4.frame.compress, lz4.frame.decompress))
    found.append(
        Codec(
            "lz4 frame, level 9 (HC)",
            lambda b: lz4.frame.compress(b, compression_level=9),
            lz4.frame.decompress,
        )
    )
    return found


def _best_seconds(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass(frozen=True)
class Row:
    workload: str
    codec: str
    raw: int
    stored: int
    compress_mb_s: float
    decompress_mb_s: float


def measure(name: str, values: list[bytes], codec: Codec, repeat: int) -> Row:
    raw = sum(len(v) for v in values)
    packed = [codec.compress(v) for v in values]
    assert [codec.decompress(p) for p in packed] == values
    c_s = _best_seconds(lambda: [codec.compress(v) for v in values], repeat)
    d_s = _best_seconds(lambda: [codec.decompress(p) for p in packed], repeat)
    return Row(name, codec.name, raw, sum(len(p) for p in packed), raw / c_s / 1e6, raw / d_s / 1e6)


def workloads() -> list[tuple[str, list[bytes]]]:
    per_channel, state = case_values()
    return [
        (f"case_8842 run: {len(per_channel)} channel values", per_channel),
        ("case_8842 run: last state, one value", [state]),
        ("chat, 10 messages of 1 KB", [chat(10)]),
        ("chat, 100 messages of 1 KB", [chat(100)]),
        ("chat, 1,000 messages of 1 KB", [chat(1000)]),
        ("tool output, 2 MB JSON", [tool_output()]),
    ]


def table(rows: list[Row]) -> str:
    lines = [
        "| workload | codec | raw bytes | stored bytes | ratio | compress MB/s | decompress MB/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.codec} | {r.raw:,} | {r.stored:,} | {r.raw / r.stored:.2f}x "
            f"| {r.compress_mb_s:,.0f} | {r.decompress_mb_s:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    rows = [
        measure(name, values, codec, args.repeat)
        for name, values in workloads()
        for codec in codecs()
    ]
    text = (
        "# zstd or lz4 for channel values\n\n"
        "`.venv/bin/python -m benchmarks.compression_choice --out "
        "benchmarks/results/compression_choice.md`: the bytes `StrictSerializer` writes for "
        "each value, compressed and decompressed one value at a time on one core, best of "
        f"{args.repeat} runs. Python {platform.python_version()}, zstandard "
        f"{zstandard.__version__}, lz4 {lz4.library_version_string()}, "
        f"{platform.machine()}.\n\n{table(rows)}\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
