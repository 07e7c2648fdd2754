// Agora webmail: what the pages do beyond plain HTML. Every page works without it;
// with it, new mail appears by itself (Server-Sent Events), keys move and act
// (j/k, o, x, r, a, f, c, #, /, u), rows are picked in ranges and dragged to folders.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf"]');
  if (!csrf) return; // signed out: nothing to do
  const token = csrf.content;

  const rows = () => Array.from(document.querySelectorAll("table.list tr.msg"));
  let current = -1;
  let last = -1; // the last box ticked, for shift-click ranges

  function setCurrent(i, focus) {
    const all = rows();
    if (!all.length) return;
    i = Math.max(0, Math.min(all.length - 1, i));
    all.forEach((r, n) => r.classList.toggle("current", n === i));
    current = i;
    const link = all[i].querySelector("td.subject a");
    if (focus && link) link.focus();
    else all[i].scrollIntoView({ block: "nearest" });
  }

  function picked() {
    const ticked = rows().filter((r) => r.querySelector("input[name=u]").checked);
    if (ticked.length) return ticked;
    const all = rows();
    return current >= 0 && all[current] ? [all[current]] : [];
  }

  // Acts on messages with the page's own form, as if its button were pressed.
  function act(op) {
    const form = document.querySelector("form.tools");
    if (!form) return;
    if (!form.querySelector('input[type=hidden][name=u]')) {
      const chosen = picked();
      if (!chosen.length) return;
      chosen.forEach((r) => { r.querySelector("input[name=u]").checked = true; });
    }
    const button = form.querySelector('button[name=op][value="' + op + '"]');
    if (button) form.requestSubmit(button);
  }

  function go(selector) {
    const a = document.querySelector(selector);
    if (a) location.href = a.href;
  }

  function openCurrent(mode) {
    const r = rows()[current];
    if (!r) return;
    const link = r.querySelector("td.subject a");
    if (!link) return;
    location.href = mode ? link.href.replace("/mail/message?", "/mail/compose?mode=" + mode + "&") : link.href;
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
      if (e.key === "Escape") t.blur();
      return;
    }
    const list = rows().length > 0;
    const keys = {
      j: () => (list ? setCurrent(current + 1, true) : go('a[rel="next"]')),
      k: () => (list ? setCurrent(current - 1, true) : go('a[rel="prev"]')),
      o: () => list && openCurrent(),
      Enter: () => list && current >= 0 && openCurrent(),
      x: () => {
        const r = rows()[current];
        if (r) r.querySelector("input[name=u]").click();
      },
      r: () => (list ? openCurrent("reply") : go("a#reply")),
      a: () => (list ? openCurrent("all") : go("a#all")),
      f: () => (list ? openCurrent("forward") : go("a#forward")),
      c: () => go("a#write"),
      u: () => go("a#back"),
      "#": () => act("delete"),
      "!": () => act("junk"),
      "/": () => {
        const q = document.getElementById("q");
        if (q) q.focus();
      },
      "?": () => {
        const help = document.getElementById("keys");
        if (help) help.hidden = !help.hidden;
      },
    };
    const run = keys[e.key];
    if (run) {
      e.preventDefault();
      run();
    }
  });

  // Shift-click ticks a range; a header box ticks them all.
  document.addEventListener("click", (e) => {
    const box = e.target;
    if (!(box instanceof HTMLInputElement) || box.name !== "u" || box.type !== "checkbox") return;
    const all = rows();
    const i = all.findIndex((r) => r.contains(box));
    if (e.shiftKey && last >= 0 && i >= 0) {
      const [a, b] = [Math.min(last, i), Math.max(last, i)];
      for (let n = a; n <= b; n++) all[n].querySelector("input[name=u]").checked = box.checked;
    }
    last = i;
  });

  function selectAll() {
    const head = document.querySelector("table.list thead th");
    if (!head || head.querySelector("input")) return;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.setAttribute("aria-label", "Select all");
    box.addEventListener("change", () => rows().forEach((r) => { r.querySelector("input[name=u]").checked = box.checked; }));
    head.appendChild(box);
  }

  // Rows dragged onto a folder move there.
  function post(fields) {
    const body = new URLSearchParams();
    body.append("csrf", token);
    for (const [k, v] of fields) body.append(k, v);
    return fetch("/mail/action", { method: "POST", body, credentials: "same-origin", redirect: "manual" });
  }

  function draggable() {
    const form = document.querySelector("form.tools");
    const folder = form && form.querySelector("input[name=f]");
    if (!folder) return;
    rows().forEach((r) => {
      r.draggable = true;
      r.addEventListener("dragstart", (e) => {
        const box = r.querySelector("input[name=u]");
        const chosen = box.checked ? picked() : [r];
        e.dataTransfer.setData("text/x-agora-uids", chosen.map((x) => x.dataset.uid).join(","));
        e.dataTransfer.effectAllowed = "move";
      });
    });
    document.querySelectorAll("nav a[data-folder]").forEach((a) => {
      a.addEventListener("dragover", (e) => {
        if (e.dataTransfer.types.includes("text/x-agora-uids")) {
          e.preventDefault();
          a.classList.add("drop");
        }
      });
      a.addEventListener("dragleave", () => a.classList.remove("drop"));
      a.addEventListener("drop", (e) => {
        e.preventDefault();
        a.classList.remove("drop");
        const uids = e.dataTransfer.getData("text/x-agora-uids").split(",").filter(Boolean);
        if (!uids.length || a.dataset.folder === folder.value) return;
        const fields = [["f", folder.value], ["op", "move"], ["to", a.dataset.folder]];
        uids.forEach((u) => fields.push(["u", u]));
        post(fields).then(refresh);
      });
    });
  }

  // The mailbox page read again and put in place, keeping what was ticked.
  let pending = null;
  function refresh() {
    const box = document.querySelector(".mailbox");
    if (!box) return;
    const ticked = new Set(rows().filter((r) => r.querySelector("input[name=u]").checked).map((r) => r.dataset.uid));
    const was = rows()[current];
    const at = was ? was.dataset.uid : null;
    fetch(location.href, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then((html) => {
        const fresh = new DOMParser().parseFromString(html, "text/html").querySelector(".mailbox");
        if (!fresh) return;
        box.replaceWith(fresh);
        rows().forEach((r, n) => {
          r.querySelector("input[name=u]").checked = ticked.has(r.dataset.uid);
          if (r.dataset.uid === at) current = n;
        });
        if (current >= 0) setCurrent(current, false);
        document.title = fresh.dataset.title || document.title;
        ready();
      })
      .catch(() => {});
  }

  function ready() {
    selectAll();
    draggable();
  }

  // Writing: addresses completed from the directory, files checked against the limit
  // before they are sent, the draft saved every half minute while it changes.
  const compose = document.querySelector("form.compose");
  if (compose) {
    const people = document.getElementById("people");
    let asked = null;
    ["to", "cc", "bcc"].forEach((id) => {
      const field = document.getElementById(id);
      if (!field) return;
      field.addEventListener("input", () => {
        const value = field.value;
        const cut = value.lastIndexOf(",") + 1;
        const before = value.slice(0, cut) + (cut ? " " : "");
        const word = value.slice(cut).trim();
        clearTimeout(asked);
        if (word.length < 2) return;
        asked = setTimeout(() => {
          fetch("/mail/people?q=" + encodeURIComponent(word), { credentials: "same-origin" })
            .then((r) => (r.ok ? r.json() : []))
            .then((found) => {
              people.replaceChildren(...found.map((p) => {
                const o = document.createElement("option");
                o.value = before.replace(/^ /, "") + p;
                return o;
              }));
            })
            .catch(() => {});
        }, 150);
      });
    });
    const file = document.getElementById("file");
    if (file) {
      file.addEventListener("change", () => {
        const limit = Number(file.dataset.limit || 0);
        const total = Array.from(file.files).reduce((n, f) => n + f.size, 0);
        file.setCustomValidity(limit && total > limit ? "These files are larger together than a message may carry." : "");
        file.reportValidity();
      });
    }
    const status = compose.querySelector(".saved");
    let changed = false;
    compose.addEventListener("input", () => { changed = true; });
    const save = () => {
      if (!changed) return;
      changed = false;
      const data = new FormData(compose);
      data.set("op", "draft");
      fetch("/mail/send", { method: "POST", body: data, credentials: "same-origin" })
        .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
        .then((html) => {
          const fresh = new DOMParser().parseFromString(html, "text/html");
          const draft = fresh.querySelector("input[name=draft]");
          if (draft) compose.querySelector("input[name=draft]").value = draft.value;
          const kept = fresh.getElementById("kept");
          if (kept) document.getElementById("kept").replaceWith(kept);
          if (file) file.value = "";
          const said = fresh.querySelector(".saved");
          if (status && said) status.textContent = said.textContent;
        })
        .catch(() => { changed = true; });
    };
    setInterval(save, 30000);
  }

  if (document.querySelector(".mailbox") && "EventSource" in window) {
    const events = new EventSource("/mail/events");
    events.addEventListener("mail", () => {
      clearTimeout(pending);
      pending = setTimeout(refresh, 250);
    });
  }
  ready();
})();
