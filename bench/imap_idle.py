#!/usr/bin/env python3
"""Holds N IMAPS sessions idling (logged in, INBOX selected, IDLE) against one server,
then reports the server's memory per session.

usage: imap_idle.py HOST PORT USERS SESSIONS PIDS...
  USERS:    users user1..userN@example.org share the sessions (password "pw")
  PIDS:     processes whose memory (PSS) is summed (the server, or every Dovecot process: pass
            "dovecot" to sum all processes whose name starts with dovecot/imap)

With HIBERNATE=1 the memory is read 15 s after the last session began to idle (Dovecot
moves idling sessions to imap-hibernate after imap_hibernate_timeout).

With MAIL=COUNT and SMTP=host:port in the environment, COUNT messages then go to
user1 over SMTP (smtp-source, 20 sessions) while everything idles: the delivery rate,
the server's CPU time, and how long until every idle session of user1 saw the last
EXISTS are reported.
"""
import asyncio
import asyncio.sslproto
import os
import resource
import ssl
import sys
import time


def processes():
    """(pid, name) of every process still running."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                out.append((p, open(f"/proc/{p}/comm").read().strip()))
            except OSError:
                continue
    return out


def pss_kib(pids):
    """Proportional set size: pages shared between processes (libraries, Dovecot's
    forked children) count once in all, split among the sharers."""
    total = 0
    if pids == ["dovecot"]:
        prefixes = ("dovecot", "imap", "anvil", "log", "config", "auth", "stats")
        pids = [p for p, name in processes() if name.startswith(prefixes)]
    for p in pids:
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


async def session(host, port, ctx, user, source, ready, stop, errors, exists):
    try:
        # IMAPS on ports ending in 993, plain IMAP otherwise.
        r, w = await asyncio.open_connection(
            host, port, ssl=(ctx if port % 1000 == 993 else None), local_addr=(source, 0))
        await r.readline()
        w.write(f"a LOGIN {user} pw\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
        await w.drain()
        while True:
            line = await r.readline()
            if not line:
                raise ConnectionError("closed before IDLE")
            if line.startswith(b"+"):
                break
            if line.startswith((b"a NO", b"a BAD", b"b NO", b"b BAD", b"c BAD")):
                raise ConnectionError(line.decode().strip())
        ready.append(1)
        # Until told to stop, note the highest EXISTS this session was told of.
        waiter = asyncio.create_task(stop.wait())
        while not stop.is_set():
            reader = asyncio.create_task(r.readline())
            done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if reader not in done:
                reader.cancel()
                break
            line = reader.result()
            if not line:
                raise ConnectionError("closed while idling")
            if line.endswith(b" EXISTS\r\n"):
                exists[id(r)] = (user, int(line.split()[1]))
        w.write(b"DONE\r\nd LOGOUT\r\n")
        await w.drain()
        w.close()
    except Exception as e:  # noqa: BLE001 - counted and reported
        errors.append(str(e))


# The client's own TLS read buffer (256 KiB per connection by default) would need 25 GiB
# for 100,000 sessions; one TLS record's worth is enough for IDLE.
asyncio.sslproto.SSLProtocol.max_size = 16 * 1024


async def main():
    host, port, users, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    pids = sys.argv[5:]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    before = pss_kib(pids)
    ready, errors, exists = [], [], {}
    stop = asyncio.Event()
    t0 = time.time()
    tasks = []
    for i in range(n):
        user = f"user{i % users + 1}@example.org"
        # One loopback source address has ~28,000 ephemeral ports: 20,000 sessions each.
        source = f"127.0.0.{1 + i // 20000}"
        tasks.append(asyncio.create_task(session(host, port, ctx, user, source, ready, stop, errors, exists)))
        if i % 200 == 199:
            # Let the handshakes of this batch progress before starting more.
            while len(ready) + len(errors) < i - 400:
                await asyncio.sleep(0.05)
    while len(ready) + len(errors) < n and time.time() - t0 < max(600, n / 50):
        await asyncio.sleep(0.2)
    # Dovecot moves a session to imap-hibernate 5 s after its IDLE: wait for that.
    await asyncio.sleep(15 if os.environ.get("HIBERNATE") else 2)
    after = pss_kib(pids)
    held = len(ready)
    per = (after - before) / held if held else 0
    print(f"sessions idling: {held} of {n}, errors: {len(errors)}{' (first: ' + errors[0] + ')' if errors else ''}")
    print(f"setup time: {time.time() - t0:.1f} s")
    print(f"server memory (PSS): {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB with the sessions")
    print(f"memory per idle session: {per:.1f} KiB")
    if pids == ["dovecot"]:
        names = {}
        for _, name in processes():
            names[name] = names.get(name, 0) + 1
        print("processes: " + ", ".join(f"{k} {v}" for k, v in sorted(names.items()) if k.startswith("imap")))
    if os.environ.get("MAIL"):
        await mail_phase(int(os.environ["MAIL"]), os.environ["SMTP"], users, n, pids, exists)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


def cpu_secs(pids):
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


async def mail_phase(count, smtp, users, n, pids, exists):
    watchers = len(range(0, n, users))  # sessions of user1
    cpu0, t0 = cpu_secs(pids), time.time()
    proc = await asyncio.create_subprocess_exec(
        "smtp-source", "-s", "20", "-l", "1024", "-m", str(count), "-f", "bench@example.org",
        "-t", "user1@example.org", smtp)
    await proc.wait()
    sent = time.time() - t0

    def caught_up():
        return sum(1 for u, k in exists.values() if u == "user1@example.org" and k >= count)

    while caught_up() < watchers and time.time() - t0 < sent + 60:
        await asyncio.sleep(0.05)
    seen = time.time() - t0
    cpu = cpu_secs(pids) - cpu0
    print(f"mail: {count} messages to user1 in {sent:.1f} s ({count / sent:.0f} msg/s), server CPU {cpu:.1f} s")
    print(f"idle sessions of user1 that saw EXISTS {count}: {caught_up()} of {watchers}, after {seen:.1f} s")


asyncio.run(main())
