"""Webmail benchmark helpers: `load` fills a mailbox over IMAP (pipelined APPENDs with
non-synchronising literals, several connections), `agora` and `roundcube` time the same
browser requests against each webmail over one keep-alive HTTPS connection.

  python3 bench/webmail_load.py load PORT LOGIN PASSWORD COUNT
  python3 bench/webmail_load.py maildir DIR COUNT; warm PORT LOGIN PASSWORD
  python3 bench/webmail_load.py agora HOST:PORT LOGIN PASSWORD OPENS
  python3 bench/webmail_load.py roundcube HOST:PORT LOGIN PASSWORD OPENS
Each timing line: name, what is counted, median milliseconds (or requests/s).
"""
import http.client, random, re, socket, ssl, statistics, sys, threading, time, urllib.parse

NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth",
         "Frances Allen", "Ken Thompson", "Margaret Hamilton", "Niklaus Wirth", "Радослав Петров", "山田 太郎"]
WORDS = "budget meeting plan review release draft report invoice travel lunch offsite roadmap design notes".split()


def message(i):
    rnd = random.Random(i)
    name = rnd.choice(NAMES)
    subject = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(2, 6))).capitalize()
    day = 1 + i % 28
    body = "\r\n".join(" ".join(rnd.choice(WORDS) for _ in range(12)) for _ in range(rnd.randint(5, 60)))
    enc = name.encode()
    if any(b >= 0x80 for b in enc):
        import base64
        shown = "=?UTF-8?B?" + base64.b64encode(enc).decode() + "?="
    else:
        shown = name
    return (f"From: {shown} <user{i % 500}@example.net>\r\nTo: bench@example.org\r\nSubject: {subject} #{i}\r\n"
            f"Date: {['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'][i % 7]}, {day:02d} Nov 2026 "
            f"{i % 24:02d}:{i % 60:02d}:00 +0000\r\nMessage-ID: <m{i}@example.net>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def load(port, login, password, count, conns=4):
    def worker(start, step):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        f.readline()
        s.sendall(f'a LOGIN "{login}" "{password}"\r\n'.encode())
        while not f.readline().startswith(b"a "):
            pass
        pending = 0
        n = start
        while n < count or pending:
            while n < count and pending < 100:
                m = message(n)
                s.sendall(b"t APPEND INBOX {%d+}\r\n" % len(m) + m + b"\r\n")
                pending += 1
                n += step
            line = f.readline()
            if line.startswith(b"t "):
                assert line.startswith(b"t OK"), line
                pending -= 1
        s.sendall(b"z LOGOUT\r\n")
        s.close()
    t = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k, conns)) for k in range(conns)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"loaded\t{count}\t{count / (time.perf_counter() - t):.0f}/s")


def maildir(path, count):
    """The same messages written straight into a Maildir's cur/ (Dovecot's APPEND slows
    down as a Maildir grows: each one rewrites its UID list)."""
    import os
    cur = os.path.join(path, "cur")
    os.makedirs(cur, exist_ok=True)
    for d in ("new", "tmp"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    t = time.perf_counter()
    base = int(time.time()) - count
    for i in range(count):
        m = message(i).replace(b"\r\n", b"\n")
        with open(os.path.join(cur, f"{base + i}.M{i}P1.bench,S={len(m)}:2,"), "wb") as f:
            f.write(m)
    print(f"written\t{count}\t{count / (time.perf_counter() - t):.0f}/s")


def warm(port, login, password):
    """Dovecot indexes a Maildir when first asked: asked here, before any timing."""
    import imaplib
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login(login, password)
    t = time.perf_counter()
    m.select("INBOX", readonly=True)
    m.fetch("1:*", "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
    m.logout()
    print(f"indexed\t\t{time.perf_counter() - t:.1f} s")


CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


class Browser:
    def __init__(self, hostport, host_header):
        self.hostport, self.host = hostport, host_header
        self.cookies = {}
        self.conn = None

    def req(self, method, path, body=None, headers=None):
        for attempt in range(2):
            if self.conn is None:
                h, p = self.hostport.rsplit(":", 1)
                self.conn = http.client.HTTPSConnection(h, int(p), context=CTX, timeout=120)
            hd = {"Host": self.host, "User-Agent": "Bench/1.0", "Origin": "https://" + self.host}
            if self.cookies:
                hd["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            if body is not None:
                hd["Content-Type"] = "application/x-www-form-urlencoded"
            hd.update(headers or {})
            try:
                self.conn.request(method, path, body=body, headers=hd)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn = None
                if attempt:
                    raise
        for v in r.headers.get_all("Set-Cookie") or []:
            k, _, rest = v.partition("=")
            val = rest.split(";")[0]
            if val in ("", "deleted") or "Max-Age=0" in v:
                self.cookies.pop(k, None)
            else:
                self.cookies[k] = val
        return r, data.decode("utf-8", "replace")

    def timed(self, path, n, headers=None, check=None):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            r, page = self.req("GET", path, headers=headers)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status == 200, (path, r.status, page[:300])
            if check:
                assert check in page, (path, page[:500])
        return statistics.median(times)


def opens(make, paths, threads):
    """Requests per second opening `paths` from `threads` signed-in browsers."""
    browsers = [make() for _ in range(threads)]
    chunks = [paths[k::threads] for k in range(threads)]
    def run(b, chunk):
        for p in chunk:
            r, page = b.req("GET", p)
            assert r.status == 200, (p, r.status)
    t = time.perf_counter()
    ths = [threading.Thread(target=run, args=(b, c)) for b, c in zip(browsers, chunks)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return len(paths) / (time.perf_counter() - t)


def agora(hostport, login, password, n_open):
    host = "mx.example.org"
    def make():
        b = Browser(hostport, host)
        r, page = b.req("GET", "/mail/")
        pre = re.search(r'name="pre" value="([^"]+)"', page).group(1)
        r, page = b.req("POST", "/mail/login", urllib.parse.urlencode({"pre": pre, "login": login, "password": password}))
        assert r.status == 303, (r.status, page[:300])
        return b
    b = make()
    r, page = b.req("GET", "/mail/")
    folder = re.search(r'name="f" value="(\d+)"', page).group(1)
    total = int(re.search(r"<small>(\d+) messages</small>", page).group(1))
    row = 'class="msg'
    first = b.timed("/mail/", 30, check=row)
    print(f"list first page\tms\t{first:.2f}")
    deep = b.timed(f"/mail/?f={folder}&p=1000", 15, check=row) if total > 50_000 else b.timed(f"/mail/?f={folder}&p={total // 100}", 15, check=row)
    print(f"list page 1000\tms\t{deep:.2f}")
    print(f"list by size\tms\t{b.timed(f'/mail/?f={folder}&sort=size', 15, check=row):.2f}")
    uids = random.Random(7).sample(range(1, total + 1), n_open)
    paths = [f"/mail/message?f={folder}&u={u}" for u in uids]
    print(f"open one at a time\treq/s\t{opens(make, paths[: n_open // 2], 1):.0f}")
    print(f"open, 8 browsers\treq/s\t{opens(make, paths[n_open // 2:], 8):.0f}")


def roundcube(hostport, login, password, n_open):
    host = "webmail.example.org"
    def make():
        b = Browser(hostport, host)
        r, page = b.req("GET", "/?_task=login")
        m = re.search(r'name="_token" value="([^"]+)"', page)
        assert m, (r.status, page[:2000])
        token = m.group(1)
        r, page = b.req("POST", "/?_task=login", urllib.parse.urlencode({
            "_token": token, "_task": "login", "_action": "login", "_timezone": "UTC", "_url": "",
            "_user": login, "_pass": password}))
        assert r.status in (302, 303), (r.status, page[:500])
        r, page = b.req("GET", "/?_task=mail&_mbox=INBOX")
        b.token = re.search(r'"request_token":"([^"]+)"', page).group(1)
        return b
    b = make()
    ajax = {"X-Requested-With": "XMLHttpRequest", "X-Roundcube-Request": b.token}
    # The first list a reader sees: the mail page, then the list it asks for.
    shell = b.timed("/?_task=mail&_mbox=INBOX", 15)
    listing = b.timed("/?_task=mail&_action=list&_mbox=INBOX&_page=1&_remote=1", 30, headers=ajax, check="add_message_row")
    print(f"list first page\tms\t{shell + listing:.2f}")
    r, page = b.req("GET", "/?_task=mail&_action=list&_mbox=INBOX&_page=1&_remote=1", headers=ajax)
    total = int(re.search(r'"messagecount":(\d+)', page).group(1))
    deep = 1000 if total > 50_000 else max(1, total // 100)
    print(f"list page 1000\tms\t{b.timed(f'/?_task=mail&_action=list&_mbox=INBOX&_page={deep}&_remote=1', 15, headers=ajax, check='add_message_row'):.2f}")
    print(f"list by size\tms\t{b.timed('/?_task=mail&_action=list&_mbox=INBOX&_page=1&_sort=size_DESC&_remote=1', 15, headers=ajax, check='add_message_row'):.2f}")
    # Back to the default order for later readers.
    b.timed("/?_task=mail&_action=list&_mbox=INBOX&_page=1&_sort=date_DESC&_remote=1", 1, headers=ajax)
    r, page = b.req("GET", "/?_task=mail&_action=list&_mbox=INBOX&_page=1&_remote=1", headers=ajax)
    total = int(re.search(r'"messagecount":(\d+)', page).group(1))
    uids = random.Random(7).sample(range(1, total + 1), n_open)
    paths = [f"/?_task=mail&_action=show&_uid={u}&_mbox=INBOX" for u in uids]
    print(f"open one at a time\treq/s\t{opens(make, paths[: n_open // 2], 1):.0f}")
    print(f"open, 8 browsers\treq/s\t{opens(make, paths[n_open // 2:], 8):.0f}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "load":
        load(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif mode == "maildir":
        maildir(sys.argv[2], int(sys.argv[3]))
    elif mode == "warm":
        warm(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif mode == "agora":
        agora(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        roundcube(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
