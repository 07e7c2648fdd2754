#!/usr/bin/env python3
"""POP3 download load: N users in parallel, each logs in, RETRs every message, QUITs.

usage: pop3_load.py HOST PORT USER_FORMAT PASSWORD USERS [stls]
USER_FORMAT is a str.format pattern with {i} (e.g. "u{i}@bench.test"). With "stls",
each session upgrades to TLS with STLS before it logs in (the certificate is not checked).
Prints: messages, bytes, seconds, errors.
"""
import multiprocessing
import socket
import ssl
import sys
import time


def read_line(sock, buf):
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    line, _, rest = buf.partition(b"\r\n")
    return line, rest


def read_multiline(sock, buf):
    end = buf.find(b"\r\n.\r\n")
    while end < 0:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
        end = buf.find(b"\r\n.\r\n", max(0, len(buf) - len(chunk) - 5))
    return buf[: end + 2], buf[end + 5:]


def one_user(args):
    host, port, user, password, stls = args
    msgs = nbytes = errors = 0
    s = socket.create_connection((host, port), timeout=60)
    buf = b""
    line, buf = read_line(s, buf)
    if stls:
        s.sendall(b"STLS\r\n")
        line, buf = read_line(s, buf)
        if not line.startswith(b"+OK"):
            return 0, 0, 1
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    s.sendall(f"USER {user}\r\n".encode())
    line, buf = read_line(s, buf)
    s.sendall(f"PASS {password}\r\n".encode())
    line, buf = read_line(s, buf)
    if not line.startswith(b"+OK"):
        return 0, 0, 1
    s.sendall(b"STAT\r\n")
    line, buf = read_line(s, buf)
    count = int(line.split()[1])
    for n in range(1, count + 1):
        s.sendall(f"RETR {n}\r\n".encode())
        line, buf = read_line(s, buf)
        if not line.startswith(b"+OK"):
            errors += 1
            continue
        body, buf = read_multiline(s, b"\r\n" + buf)
        # "+OK n octets" counts the message before dot-stuffing: check it.
        size = len(body) - 2 - body.count(b"\r\n..")
        if line.split()[1:2] and int(line.split()[1]) != size:
            errors += 1
        msgs += 1
        nbytes += len(body) - 2
    s.sendall(b"QUIT\r\n")
    read_line(s, buf)
    s.close()
    return msgs, nbytes, errors


def main():
    host, port, fmt, password, users = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    stls = sys.argv[6:7] == ["stls"]
    jobs = [(host, port, fmt.format(i=i), password, stls) for i in range(users)]
    with multiprocessing.Pool(users) as pool:
        # The workers are started before the clock starts: only the sessions are timed.
        pool.map(time.sleep, [0.2] * users)
        t0 = time.time()
        results = pool.map(one_user, jobs)
        dt = time.time() - t0
    msgs = sum(r[0] for r in results)
    nbytes = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    print(f"{msgs} {nbytes} {dt:.3f} {errors}")


if __name__ == "__main__":
    main()
