"""The null SMTP sink that the Postfix peer (and the relay, when it delivers) relays to: accepts every
transaction, keeps nothing, counts messages. Plain asyncio streams (PIPELINING advertised), so that it costs
little CPU on the shared cores. Loopback only.

``python -m bench.frontdoor.sink --port 0 [--no-pipelining]``
"""

from __future__ import annotations

import argparse
import asyncio

from bench.frontdoor.serve import serve_until_signalled

EHLO_REPLY = b"250-sink.localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
EHLO_REPLY_LOCKSTEP = EHLO_REPLY.replace(b"250-PIPELINING\r\n", b"")
END_OF_DATA = b"\r\n.\r\n"
STREAM_LIMIT = 64 * 1024 * 1024  # readuntil() holds a whole message


class Sink:
    def __init__(self, pipelining: bool = True) -> None:
        self.messages = 0
        self.ehlo_reply = EHLO_REPLY if pipelining else EHLO_REPLY_LOCKSTEP

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink.localhost ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(self.ehlo_reply)
                elif verb == b"DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await writer.drain()
                    self.received(await reader.readuntil(END_OF_DATA))
                    writer.write(b"250 2.0.0 Ok: discarded\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:  # MAIL, RCPT, RSET, NOOP: all fine
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def received(self, data: bytes) -> None:
        """One whole message, up to and including its final dot (the delivery bench looks inside)."""
        self.messages += 1

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.session, host, port, limit=STREAM_LIMIT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-pipelining", action="store_true", help="do not offer PIPELINING")
    args = parser.parse_args()
    sink = Sink(pipelining=not args.no_pipelining)
    asyncio.run(serve_until_signalled(lambda: sink.start(args.host, args.port),
                                      lambda: {"messages": sink.messages}))


if __name__ == "__main__":
    main()
