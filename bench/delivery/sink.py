"""The timing sink: the front-door bench's null sink that also writes one line per message it receives,
``<seq> <time.monotonic()>``, as the message's final dot arrives. ``seq`` comes from the Message-ID the
load generator writes (``<seq@loadgen.localhost>``); -1 for any other message (a bounce, say). Each
connection a peer opens is a line too, ``connect <time>``: how well a peer reuses its connections shows.
Lines are written as they happen, so the orchestrator can watch delivery progress.

``python -m bench.delivery.sink --receipts FILE --port 0``
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import TextIO

from bench.delivery.receipts import CONNECT
from bench.frontdoor.serve import serve_until_signalled
from bench.frontdoor.sink import Sink

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<(\d+)@loadgen\.localhost>", re.IGNORECASE | re.MULTILINE)


def message_seq(data: bytes) -> int:
    """The load generator's seq from the message's header section, or -1."""
    found = _MESSAGE_ID.search(data.partition(b"\r\n\r\n")[0])
    return int(found.group(1)) if found else -1


class TimingSink(Sink):
    def __init__(self, receipts: TextIO) -> None:
        super().__init__()
        self._receipts = receipts

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._receipts.write(f"{CONNECT} {time.monotonic():.6f}\n")
        await super().session(reader, writer)

    def received(self, data: bytes) -> None:
        at = time.monotonic()
        super().received(data)
        self._receipts.write(f"{message_seq(data)} {at:.6f}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", required=True, help="file to write the receipt lines to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with open(args.receipts, "w", buffering=1) as receipts:  # line-buffered: one write per receipt
        sink = TimingSink(receipts)
        asyncio.run(serve_until_signalled(lambda: sink.start(args.host, args.port),
                                          lambda: {"messages": sink.messages}))


if __name__ == "__main__":
    main()
