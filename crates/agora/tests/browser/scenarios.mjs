// The webmail in a real browser: Debian's Chromium driven by playwright-core through
// what people do (sign in, read, see new mail arrive, reply with a file, a draft saved
// and resumed, search, move, delete, keys), what a hostile message tries (script,
// handlers, a remote image), and the admin console making a user who then signs in.
// A screenshot of each main view goes to the directory given.
//   usage: node scenarios.mjs IP OUTDIR   (the test sends the mail and checks IMAP)
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";

const [ip, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const HOST = "mx.example.org";
const BASE = `https://${HOST}:10443`;

// Plain SMTP on the test port, for mail that arrives while a page is open.
function smtp(from, to, message) {
  return new Promise((resolve, reject) => {
    const s = createConnection(10025, ip);
    const steps = [`EHLO browser.test`, `MAIL FROM:<${from}>`, `RCPT TO:<${to}>`, "DATA", `${message.replace(/\n/g, "\r\n")}\r\n.`, "QUIT"];
    let buf = "";
    s.setEncoding("utf8");
    s.on("data", (d) => {
      buf += d;
      // A reply is complete at a line with a space after its code.
      while (/^\d{3} .*\r\n/m.test(buf)) {
        const line = buf.match(/^\d{3} .*\r\n/m)[0];
        buf = buf.slice(buf.indexOf(line) + line.length);
        if (!/^[23]/.test(line)) return reject(new Error("SMTP: " + line));
        const next = steps.shift();
        if (next === undefined) return resolve();
        s.write(next + "\r\n");
      }
    });
    s.on("error", reject);
    s.on("close", resolve);
  });
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    // The server's name is this test's address; every other name goes nowhere.
    `--host-resolver-rules=MAP ${HOST} ${ip}, MAP * ~NOTFOUND`,
  ],
});
const results = [];
function check(ok, what) {
  results.push({ ok: !!ok, what });
  if (!ok) throw new Error("failed: " + what);
}

async function signIn(context, login, password) {
  const page = await context.newPage();
  await page.goto(BASE + "/");
  await page.fill("#login", login);
  await page.fill("#password", password);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  return page;
}

try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
  // Anything that leaves for another host, or a dialog a script opened, is a failure.
  // (Chromium reports a request its CSP stopped as one that failed with
  // "csp": that one never left; any other did, or tried to.)
  const elsewhere = [];
  const dialogs = [];
  const foreign = (r) => {
    const u = new URL(r.url());
    return !["https:", "data:", "about:"].includes(u.protocol) || (u.protocol === "https:" && u.hostname !== HOST);
  };
  context.on("requestfinished", (r) => { if (foreign(r)) elsewhere.push(r.url()); });
  context.on("requestfailed", (r) => {
    const why = (r.failure() && r.failure().errorText) || "";
    if (foreign(r) && why !== "csp" && !why.includes("BLOCKED_BY_CSP")) elsewhere.push(`${r.url()} (${why})`);
  });
  context.on("page", (p) => p.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); }));

  const front = await context.newPage();
  await front.goto(BASE + "/");
  check(await front.isVisible("form.signin"), "the sign-in form shows");
  await front.screenshot({ path: `${out}/sign-in.png` });
  await front.close();

  const page = await signIn(context, "web@example.org", "web-secret");
  page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
  check(await page.isVisible("text=Welcome aboard"), "mail delivered over SMTP is listed");
  await page.screenshot({ path: `${out}/list.png` });

  // New mail appears without a reload.
  await page.evaluate(() => { window.notReloaded = true; });
  await smtp("news@remote.test", "web@example.org", "From: news@remote.test\nTo: web@example.org\nSubject: Fresh arrival\n\nJust in.");
  await page.waitForSelector("text=Fresh arrival", { timeout: 15000 });
  check(await page.evaluate(() => window.notReloaded === true), "new mail appeared with no reload");

  // Keys: j to the first row, o to open it.
  await page.keyboard.press("j");
  await Promise.all([page.waitForNavigation(), page.keyboard.press("o")]);
  check(page.url().includes("/mail/message?"), "j then o opens a message");
  await page.goBack();

  // Read a message.
  await Promise.all([page.waitForNavigation(), page.click("text=Welcome aboard")]);
  check(await page.isVisible("text=Glad to have you"), "the message reads");
  await page.screenshot({ path: `${out}/message.png` });

  // Reply with an attachment.
  await Promise.all([page.waitForNavigation(), page.click("a#reply")]);
  check((await page.inputValue("#subject")) === "Re: Welcome aboard", "the reply is filled in");
  await page.fill("#to", "other@example.org");
  await page.fill("#body", "Thanks! The plan is attached.\n\n" + (await page.inputValue("#body")));
  await page.setInputFiles("#file", { name: "plan.txt", mimeType: "text/plain", buffer: Buffer.from("step 1\nstep 2\n") });
  await page.screenshot({ path: `${out}/compose.png` });
  await Promise.all([page.waitForNavigation(), page.click("button[value=send]")]);
  check(await page.isVisible("text=on its way"), "the reply is sent");

  // A draft saved and resumed.
  await page.goto(BASE + "/mail/compose");
  await page.fill("#to", "other@example.org");
  await page.fill("#subject", "Unfinished thoughts");
  await page.fill("#body", "To be continued");
  await Promise.all([page.waitForNavigation(), page.click("button[value=draft]")]);
  check(await page.isVisible("text=Draft saved"), "the draft is saved");
  await page.goto(BASE + "/mail/");
  await Promise.all([page.waitForNavigation(), page.click("nav a:has-text('Drafts')")]);
  await Promise.all([page.waitForNavigation(), page.click("text=Unfinished thoughts")]);
  await Promise.all([page.waitForNavigation(), page.click("text=Continue writing")]);
  check((await page.inputValue("#subject")) === "Unfinished thoughts", "the draft resumes with its subject");
  check((await page.inputValue("#body")).includes("To be continued"), "and its text");

  // Search.
  await page.goto(BASE + "/mail/");
  await page.fill("#q", "Fresh");
  await Promise.all([page.waitForNavigation(), page.click("form.search button[type=submit]")]);
  check((await page.locator("tr.msg").count()) === 1 && (await page.isVisible("text=Fresh arrival")), "search finds the one message");

  // Move to another folder, then delete.
  await page.goto(BASE + "/mail/");
  const row = page.locator("tr.msg", { hasText: "Fresh arrival" });
  await row.locator("input[name=u]").check();
  await page.selectOption("#to", { label: "Archive" });
  await Promise.all([page.waitForNavigation(), page.click("button[value=move]")]);
  check(!(await page.isVisible("text=Fresh arrival")), "moved out of the inbox");
  await Promise.all([page.waitForNavigation(), page.click("nav a:has-text('Archive')")]);
  check(await page.isVisible("text=Fresh arrival"), "and into Archive");
  await Promise.all([page.waitForNavigation(), page.click("text=Fresh arrival")]);
  await Promise.all([page.waitForNavigation(), page.click("button[value=delete]")]);
  check(!(await page.isVisible("text=Fresh arrival")), "deleted");

  // A hostile HTML message: no script runs, nothing remote loads.
  await page.goto(BASE + "/mail/");
  await Promise.all([page.waitForNavigation(), page.click("text=Totally harmless")]);
  const frame = page.frameLocator("iframe.html");
  await frame.locator("text=Hello there").waitFor({ timeout: 10000 });
  await page.waitForTimeout(1500);
  check(dialogs.length === 0, "no script ran (no dialogs): " + dialogs.join(","));
  check(elsewhere.length === 0, "nothing was fetched from elsewhere: " + elsewhere.join(","));
  check(await page.evaluate(() => !window.pwned), "the page's own world is untouched");
  await page.screenshot({ path: `${out}/html-message.png` });

  await page.goto(BASE + "/mail/settings");
  await page.screenshot({ path: `${out}/settings.png` });
  await context.close();

  // The admin console makes a user, who then signs in.
  const admin = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const console_ = await signIn(admin, "boss@example.org", "boss-secret");
  await console_.goto(BASE + "/admin");
  await console_.screenshot({ path: `${out}/admin.png` });
  await console_.goto(BASE + "/admin/users");
  await console_.fill("#ulogin", "hired@example.org");
  await console_.fill("#uname", "New Hire");
  await console_.fill("#upw", "first-day-secret");
  await Promise.all([console_.waitForNavigation(), console_.click("fieldset button[type=submit]")]);
  check(await console_.isVisible("text=User hired@example.org added."), "the admin made a user");
  await console_.screenshot({ path: `${out}/admin-users.png` });
  await admin.close();
  // A phone, in the dark theme the system asks for.
  const phone = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, colorScheme: "dark",
  });
  const small = await signIn(phone, "web@example.org", "web-secret");
  check(await small.isVisible("text=Welcome aboard"), "the list reads on a phone");
  const wide = await small.evaluate(() => document.documentElement.scrollWidth);
  const culprits = await small.evaluate(() => Array.from(document.querySelectorAll("body *"))
    .filter((e) => e.getBoundingClientRect().right > 391)
    .slice(0, 5).map((e) => e.tagName + "." + e.className + "#" + e.id + " " + Math.round(e.getBoundingClientRect().right)));
  check(wide <= 390 + 1, "nothing wider than the phone's screen: " + wide + " " + culprits.join(", "));
  const dark = await small.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(dark !== "rgb(255, 255, 255)", "the dark theme follows the system: " + dark);
  await small.screenshot({ path: `${out}/phone-dark.png` });
  await phone.close();
  const hired = await browser.newContext({ ignoreHTTPSErrors: true });
  const first = await signIn(hired, "hired@example.org", "first-day-secret");
  check(first.url().endsWith("/mail/") && (await first.isVisible("text=INBOX")), "the new user signs in");
  await hired.close();
} catch (e) {
  results.push({ ok: false, what: String(e && e.stack || e) });
} finally {
  await browser.close();
  writeFileSync(`${out}/results.json`, JSON.stringify(results, null, 1));
}
const failed = results.filter((r) => !r.ok);
for (const r of results) console.log((r.ok ? "ok    " : "FAIL  ") + r.what);
process.exit(failed.length ? 1 : 0);
