// Drives headless Chromium through Playwright (playwright-core, system Chromium): opens the demo
// page, waits for the model to load and score its ~1 KB sample text (the page's first score),
// generates a short continuation, saves a screenshot and prints one JSON line with the results.
// Usage: node test.mjs URL SCREENSHOT_PNG [TIMEOUT_S]   (env CHROMIUM: browser executable)
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const [url, screenshot, timeoutS = "180"] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node test.mjs URL SCREENSHOT_PNG [TIMEOUT_S]");
  process.exit(2);
}
const timeout = Number(timeoutS) * 1000;
const profile = mkdtempSync(join(tmpdir(), "pgolf-chromium-"));
const consoleLines = [];
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1100, height: 1400 },
    timeout,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`[pageerror] ${e.message}`));
  await page.goto(url, { timeout });
  await page.waitForFunction(() => window.pgolf && (window.pgolf.ready || window.pgolf.error), null, {
    timeout,
  });
  const loaded = await page.evaluate(() => ({
    error: window.pgolf.error,
    artifactBytes: window.pgolf.artifactBytes,
    loadMs: window.pgolf.loadMs,
    buildMs: window.pgolf.buildMs,
    firstScore: window.pgolf.scores[0] || null,
    info: window.pgolf.info
      ? { param_count: window.pgolf.info.param_count, num_layers: window.pgolf.info.num_layers }
      : null,
    shownBpb: document.getElementById("bpb").dataset.bpb,
    tokenSpans: document.querySelectorAll("#tokens span").length,
  }));
  if (loaded.error) throw new Error(`the page reported: ${loaded.error}`);
  // A second score of the same text through the button (warm code; for the report).
  await page.click("#score-btn");
  await page.waitForFunction(() => window.pgolf.scores.length >= 2 || window.pgolf.error, null, { timeout });
  loaded.secondScore = await page.evaluate(() => window.pgolf.scores[1] || null);
  // Out-of-range fields are refused with a message naming the field (no silent clamp, no run).
  for (const [id, bad, name] of [
    ["#gen-n", "100000", "tokens"],
    ["#gen-n", "-5", "tokens"],
    ["#gen-temp", "7", "temperature"],
  ]) {
    await page.fill("#gen-n", "16");
    await page.fill("#gen-temp", "0");
    await page.fill(id, bad);
    await page.click("#gen-btn");
    const msg = await page.textContent("#gen-ms");
    const ran = await page.evaluate(() => Boolean(window.pgolf.lastGeneration));
    if (ran || !msg.startsWith(`${name} must be`)) {
      throw new Error(`${id} = ${bad}: expected a refusal naming ${name}, got "${msg}" (ran: ${ran})`);
    }
  }
  loaded.refusals = "tokens 100000, tokens -5, temperature 7 refused";
  // A continuation through the UI (greedy, so it is deterministic).
  await page.fill("#gen-n", "16");
  await page.fill("#gen-temp", "0");
  await page.click("#gen-btn");
  await page.waitForFunction(() => window.pgolf.lastGeneration || window.pgolf.error, null, { timeout });
  const gen = await page.evaluate(() => window.pgolf.lastGeneration || { error: window.pgolf.error });
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ ok: true, ...loaded, generation: gen, console: consoleLines }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), console: consoleLines }));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
