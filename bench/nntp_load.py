#!/usr/bin/env python3
"""NNTP reader load and article loader for bench/nntp.sh.

usage: nntp_load.py read HOST PORT GROUP READERS NEWEST [DEPTH]
    READERS processes at once, each: MODE READER, GROUP, OVER over the NEWEST
    newest articles, ARTICLE of each of them (DEPTH commands in flight, default 1:
    one at a time), QUIT.
    Prints: articles, bytes, seconds, errors, overview lines.
usage: nntp_load.py feed HOST PORT DIR STREAMS
    Offers every file of DIR (an article with its Message-ID) with IHAVE over
    STREAMS connections at once. Prints: taken, refused.
"""
import multiprocessing
import os
import socket
import sys
import time


class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=120)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(262144)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def block(self):
        """The lines of a multi-line block up to its ".", still dot-stuffed."""
        self.buf = b"\r\n" + self.buf
        end = self.buf.find(b"\r\n.\r\n")
        while end < 0:
            chunk = self.s.recv(262144)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
            end = self.buf.find(b"\r\n.\r\n", max(0, len(self.buf) - len(chunk) - 5))
        data, self.buf = self.buf[2: end + 2], self.buf[end + 5:]
        return data

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")
        return self.line()


def reader(args):
    host, port, group, newest, depth = args
    arts = nbytes = errors = overs = 0
    c = Conn(host, port)
    c.line()
    c.cmd("MODE READER")
    r = c.cmd(f"GROUP {group}").split()
    if r[0] != b"211":
        return 0, 0, 1, 0
    last = int(r[3])
    first = max(int(r[2]), last - newest + 1)
    if c.cmd(f"OVER {first}-{last}").startswith(b"224"):
        lines = c.block()
        numbers = [int(l.split(b"\t", 1)[0]) for l in lines.split(b"\r\n") if l]
        overs = len(numbers)
    else:
        return 0, 0, 1, 0
    for i in range(0, len(numbers), depth):
        chunk = numbers[i:i + depth]
        c.s.sendall(b"".join(f"ARTICLE {n}\r\n".encode() for n in chunk))
        for _ in chunk:
            if c.line().startswith(b"220"):
                nbytes += len(c.block())
                arts += 1
            else:
                errors += 1
    c.cmd("QUIT")
    return arts, nbytes, errors, overs


def feeder(args):
    host, port, files = args
    taken = refused = 0
    c = Conn(host, port)
    c.line()
    for path in files:
        data = open(path, "rb").read()
        mid = next(l.split(b":", 1)[1].strip() for l in data.split(b"\r\n") if l.lower().startswith(b"message-id:"))
        r = c.cmd(f"IHAVE {mid.decode()}")
        if not r.startswith(b"335"):
            refused += 1
            continue
        stuffed = b"\r\n".join(b"." + l if l.startswith(b".") else l for l in data.split(b"\r\n"))
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        c.s.sendall(stuffed + b".\r\n")
        if c.line().startswith(b"235"):
            taken += 1
        else:
            refused += 1
    c.cmd("QUIT")
    return taken, refused


def main():
    mode = sys.argv[1]
    if mode == "read":
        host, port, group, readers, newest = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        depth = int(sys.argv[7]) if len(sys.argv) > 7 else 1
        t0 = time.time()
        with multiprocessing.Pool(readers) as pool:
            results = pool.map(reader, [(host, port, group, newest, depth)] * readers)
        dt = time.time() - t0
        print(f"{sum(r[0] for r in results)} {sum(r[1] for r in results)} {dt:.3f} "
              f"{sum(r[2] for r in results)} {sum(r[3] for r in results)}")
    elif mode == "feed":
        host, port, d, streams = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        files = sorted(os.path.join(d, f) for f in os.listdir(d))
        parts = [(host, port, files[i::streams]) for i in range(streams)]
        with multiprocessing.Pool(streams) as pool:
            results = pool.map(feeder, parts)
        print(f"{sum(r[0] for r in results)} {sum(r[1] for r in results)}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
