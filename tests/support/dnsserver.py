"""A tiny real DNS server on loopback for tests (UDP and TCP), built with dnspython.

Serves whatever records a test sets: ``server.add("example.com", "TXT", '"v=spf1 include:x -all"')``,
``server.add("example.com", "MX", "10 mx.example.com.")``, ``A``, ``AAAA`` ... (any type dnspython
parses, values in zone-file text form). Unknown names get NXDOMAIN, known names without the type an empty
NOERROR answer; ``fail(name)`` makes a name answer SERVFAIL. Point a resolver at ``server.address`` and
``server.port``. A query with the DO bit also gets the RRSIG records (added as ``RRSIG`` values) that
cover the answer, as a signed zone's authoritative server gives them (``support.dnssec`` signs zones).

    with DnsServer() as dns_server:
        dns_server.add(...)
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections import defaultdict

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address
        self._records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = defaultdict(list)
        self._ttl: dict[tuple[dns.name.Name, int], int] = {}
        self._failing: set[dns.name.Name] = set()
        self._lock = threading.Lock()
        self.queries: list[tuple[str, str]] = []  # (name, type) asked, for assertions
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                header = self.request.recv(2)
                if len(header) < 2:
                    return
                (length,) = struct.unpack("!H", header)
                data = b""
                while len(data) < length:
                    chunk = self.request.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data)
                if reply is not None:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        udp_class = type("UdpServer", (socketserver.ThreadingUDPServer,), {"address_family": family})
        for _ in range(50):  # the same port number must be free for TCP too
            self._udp = udp_class((address, 0), Udp)
            self.port = self._udp.server_address[1]
            try:
                self._tcp = _bind_tcp(family, address, self.port, Tcp)
                break
            except OSError:
                self._udp.server_close()
        else:
            raise OSError("no port free for both UDP and TCP")
        self._threads: list[threading.Thread] = []

    def add(self, name: str, rdtype: str, *values: str, ttl: int = 60) -> None:
        key = (dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
        with self._lock:
            for value in values:
                self._records[key].append(dns.rdata.from_text(dns.rdataclass.IN, key[1], value))
            self._ttl[key] = ttl

    def clear(self, name: str) -> None:
        target = dns.name.from_text(name)
        with self._lock:
            for key in [k for k in self._records if k[0] == target]:
                del self._records[key]
            self._failing.discard(target)

    def fail(self, name: str) -> None:
        with self._lock:
            self._failing.add(dns.name.from_text(name))

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if query.edns >= 0:
            response.use_edns(0, query.ednsflags & dns.flags.DO, 1232)
        for question in query.question:
            self.queries.append((question.name.to_text(omit_final_dot=True),
                                 dns.rdatatype.to_text(question.rdtype)))
            with self._lock:
                if question.name in self._failing:
                    response.set_rcode(dns.rcode.SERVFAIL)
                    continue
                rdatas = list(self._records.get((question.name, question.rdtype), []))
                known = any(name == question.name for name, _ in self._records)
                ttl = self._ttl.get((question.name, question.rdtype), 60)
                sigs = [sig for sig in self._records.get((question.name, dns.rdatatype.RRSIG), [])
                        if sig.type_covered == question.rdtype]  # type: ignore[attr-defined]
            if rdatas:
                response.answer.append(dns.rrset.from_rdata_list(question.name, ttl, rdatas))
                if sigs and query.ednsflags & dns.flags.DO:
                    response.answer.append(dns.rrset.from_rdata_list(question.name, ttl, sigs))
            elif not known:
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire(max_size=65535)

    def start(self) -> DnsServer:
        for srv in (self._udp, self._tcp):
            thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for srv in (self._udp, self._tcp):
            srv.shutdown()
            srv.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bind_tcp(family: int, address: str, port: int, handler: type[socketserver.BaseRequestHandler]
              ) -> socketserver.ThreadingTCPServer:
    tcp_class = type("TcpServer", (socketserver.ThreadingTCPServer,), {"address_family": family})
    server = tcp_class((address, port), handler, bind_and_activate=False)
    server.allow_reuse_address = True
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.server_bind()
    server.server_activate()
    server.daemon_threads = True
    return server
