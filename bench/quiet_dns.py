"""A DNS server for benchmarks that knows no names: every query gets NXDOMAIN at once,
over UDP and TCP. The server under test resolves through it, so a benchmark never asks
the system's resolver (or anything off the machine).

usage: quiet_dns.py IP PORT   (prints "ready" once listening)
"""
import socket
import struct
import sys
import threading


def answer(q):
    if len(q) < 12:
        return None
    flags = 0x8403 | (struct.unpack(">H", q[2:4])[0] & 0x0100)  # response, authoritative, NXDOMAIN, RD echoed
    i = 12
    while i < len(q) and q[i]:
        i += 1 + q[i]
    question = q[12:i + 5]
    # An SOA for the root in the authority section: resolvers cache the "no such name"
    # for its minimum TTL, as they would a real server's.
    soa_rdata = b"\0\0" + struct.pack(">IIIII", 1, 3600, 600, 86400, 300)
    soa = b"\0" + struct.pack(">HHIH", 6, 1, 300, len(soa_rdata)) + soa_rdata
    return q[:2] + struct.pack(">HHHHH", flags, 1, 0, 1, 0) + question + soa


def udp(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    while True:
        q, a = s.recvfrom(4096)
        r = answer(q)
        if r:
            s.sendto(r, a)


def tcp_client(c):
    with c:
        while True:
            n = c.recv(2)
            if len(n) < 2:
                return
            want, q = struct.unpack(">H", n)[0], b""
            while len(q) < want:
                chunk = c.recv(want - len(q))
                if not chunk:
                    return
                q += chunk
            r = answer(q)
            if r:
                c.sendall(struct.pack(">H", len(r)) + r)


def main():
    ip, port = sys.argv[1], int(sys.argv[2])
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((ip, port))
    t.listen(64)
    threading.Thread(target=udp, args=(ip, port), daemon=True).start()
    print("ready", flush=True)
    while True:
        c, _ = t.accept()
        threading.Thread(target=tcp_client, args=(c,), daemon=True).start()


main()
