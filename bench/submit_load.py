#!/usr/bin/env python3
"""Submission load: S clients in parallel, each opening connections that do STARTTLS,
AUTH PLAIN, then send K messages (MAIL, RCPT, DATA) before QUIT, until N messages
have been accepted in all. Certificates are not checked (a private test server).

usage: submit_load.py HOST PORT USER PASSWORD RCPT MESSAGES SESSIONS PER_CONNECTION BYTES
Prints: accepted, seconds, errors.
"""
import base64
import multiprocessing
import socket
import ssl
import sys
import time


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=60)
        self.buf = b""

    def reply(self):
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\r\n")
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), line

    def cmd(self, text, want):
        self.sock.sendall(text.encode() + b"\r\n")
        code, line = self.reply()
        if code != want:
            raise RuntimeError(f"{text.split()[0]}: {line!r}")


def worker(args):
    host, port, user, password, rcpt, count, per_conn, body = args
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    sent = errors = 0
    while sent + errors < count:
        try:
            c = Conn(host, port)
            if c.reply()[0] != 220:
                raise RuntimeError("no greeting")
            c.cmd("EHLO load.bench.test", 250)
            c.cmd("STARTTLS", 220)
            c.sock = ctx.wrap_socket(c.sock, server_hostname=host)
            c.buf = b""
            c.cmd("EHLO load.bench.test", 250)
            c.cmd(f"AUTH PLAIN {token}", 235)
            for _ in range(min(per_conn, count - sent - errors)):
                try:
                    c.cmd(f"MAIL FROM:<{user}>", 250)
                    c.cmd(f"RCPT TO:<{rcpt}>", 250)
                    c.cmd("DATA", 354)
                    c.sock.sendall(body)
                    code, line = c.reply()
                    if code != 250:
                        raise RuntimeError(f"DATA: {line!r}")
                    sent += 1
                except RuntimeError as e:
                    errors += 1
                    print(e, file=sys.stderr)
                    c.cmd("RSET", 250)
            c.cmd("QUIT", 221)
            c.sock.close()
        except (OSError, RuntimeError, ConnectionError) as e:
            errors += 1
            print(e, file=sys.stderr)
    return sent, errors


def main():
    host, port, user, password, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    total, sessions, per_conn, size = (int(x) for x in sys.argv[6:10])
    filler = ("x" * 76 + "\r\n") * max(1, size // 78)
    body = (
        f"From: {user}\r\nTo: {rcpt}\r\nSubject: load\r\nMessage-ID: <{{}}>\r\n\r\n{filler}.\r\n"
    )
    jobs = []
    for i in range(sessions):
        n = total // sessions + (1 if i < total % sessions else 0)
        b = body.replace("<{}>", f"<load-{i}@bench.test>").encode()
        jobs.append((host, port, user, password, rcpt, n, per_conn, b))
    t0 = time.time()
    with multiprocessing.Pool(sessions) as pool:
        results = pool.map(worker, jobs)
    secs = time.time() - t0
    print(sum(r[0] for r in results), f"{secs:.3f}", sum(r[1] for r in results))


if __name__ == "__main__":
    main()
