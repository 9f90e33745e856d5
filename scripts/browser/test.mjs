// Drives headless Chromium through Playwright (playwright-core, system Chromium): opens the demo
// page (its model runs in a Web Worker), waits for the model to load and score its ~1 KB sample
// text (the page's first score), then checks through the page:
//   * a second score, and the stepped score of a several-window text equals the one-call score
//     bit for bit (test hook window.pgolf.checkChunked),
//   * out-of-range fields and an empty prompt are refused with a message, and text split into
//     byte-fallback tokens gets a note,
//   * a generation is streamed (a message per token) and a hover card shows a token's top guesses,
//   * a 1000-token generation and a ~100 KB score stop within STOP_MS of the click on Stop, the
//     long score shows progress and an estimated time, and a 50 ms timer on the main thread
//     keeps ticking during it,
//   * where the browser offers WebGPU (BROWSER_WEBGPU, default: Chromium's SwiftShader adapter),
//     the sample scored on WebGPU and on the CPU, the hover card of a WebGPU score, and a long
//     WebGPU score stopped while a pass is on the GPU,
// saves a screenshot and prints one JSON line with the results (scripts/browser-test.sh judges).
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
// BROWSER_WEBGPU: "swiftshader" (default: Chromium's software WebGPU adapter, what a machine
// without a GPU has), "gpu" (the machine's own adapter, if Chromium finds one) or "off" (no GPU
// process at all: the page has no WebGPU and scores on the CPU).
const webgpuMode = process.env.BROWSER_WEBGPU || "swiftshader";
const webgpuArgs = {
  swiftshader: ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-webgpu-adapter=swiftshader"],
  gpu: ["--enable-unsafe-webgpu", "--enable-features=Vulkan"],
  off: ["--disable-gpu"],
}[webgpuMode];
if (!webgpuArgs) {
  console.error(`BROWSER_WEBGPU=${webgpuMode}: expected swiftshader, gpu or off`);
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "pgolf-chromium-"));
const consoleLines = [];
let context;

// Waits for `fn` (run in the page) to return something truthy, or for the page to report an error.
async function until(page, fn, arg) {
  await page.waitForFunction(
    ([src, a]) => window.pgolf.error || new Function("a", `return (${src})(a)`)(a),
    [fn.toString(), arg],
    { timeout, polling: 20 },
  );
  const err = await page.evaluate(() => window.pgolf.error);
  if (err) throw new Error(`the page reported: ${err}`);
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      ...webgpuArgs,
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
    path: window.pgolf.path,
    artifactBytes: window.pgolf.artifactBytes,
    loadMs: window.pgolf.loadMs,
    buildMs: window.pgolf.buildMs,
    firstScore: window.pgolf.scores[0] || null,
    info: window.pgolf.info
      ? { param_count: window.pgolf.info.param_count, num_layers: window.pgolf.info.num_layers }
      : null,
    footer: document.getElementById("footer-model").textContent,
    shownBpb: document.getElementById("bpb").dataset.bpb,
    tokenSpans: document.querySelectorAll("#tokens span").length,
    shownChars: document.getElementById("tokens").textContent,
    sample: document.getElementById("text").value,
    firstLoad: window.pgolf.loads[0] || null,
    modelNote: document.getElementById("model-note").textContent,
    webgpu: window.pgolf.webgpu,
    webgpuWhy: window.pgolf.webgpuWhy,
    pathShown: document.getElementById("path").textContent,
  }));
  loaded.webgpuMode = webgpuMode;
  if (loaded.error) throw new Error(`the page reported: ${loaded.error}`);
  // The coloured view keeps the text's own characters (newlines included).
  loaded.keepsText = loaded.shownChars === loaded.sample;
  delete loaded.shownChars;
  const sample = loaded.sample;
  delete loaded.sample;

  // A second score of the same text through the button (warm code; for the report).
  await page.click("#score-btn");
  await until(page, () => window.pgolf.scores.length >= 2);
  loaded.secondScore = await page.evaluate(() => window.pgolf.scores[1] || null);

  // Where the browser offers WebGPU: the sample on the other path than the default one too
  // (the same text, the same windows), then the default path again.
  if (loaded.webgpu) {
    const other = loaded.firstScore.on === "webgpu" ? "cpu" : "webgpu";
    await page.evaluate((on) => window.pgolf.scoreOn(on), other);
    await until(page, () => window.pgolf.scores.length >= 3);
    loaded.otherScore = await page.evaluate(() => window.pgolf.scores[2]);
    if (other === "webgpu") {
      // Warm: the first WebGPU score compiled its pipelines.
      await page.evaluate(() => window.pgolf.scoreOn("webgpu"));
      await until(page, () => window.pgolf.scores.length >= 4);
      loaded.otherScoreWarm = await page.evaluate(() => window.pgolf.scores[3]);
    }
    // The shown score is now WebGPU's: the hover card below ranks from its context on the CPU.
    loaded.hoverOn = "webgpu";
    await page.selectOption("#score-on", loaded.firstScore.on);
  }

  // The stepped score (one window per step) of a text of several windows, against one call.
  loaded.chunkCheck = await page.evaluate((t) => window.pgolf.checkChunked(t), sample.repeat(6));

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
  const prompt = await page.inputValue("#prompt");
  await page.fill("#gen-n", "16");
  await page.fill("#gen-temp", "0");
  await page.fill("#prompt", "");
  await page.click("#gen-btn");
  const emptyMsg = await page.textContent("#gen-ms");
  if (!emptyMsg.includes("empty") || (await page.evaluate(() => Boolean(window.pgolf.lastGeneration)))) {
    throw new Error(`an empty prompt: expected a message, got "${emptyMsg}"`);
  }
  await page.fill("#prompt", prompt);
  loaded.refusals = "tokens 100000, tokens -5, temperature 7, empty prompt refused";

  // A continuation through the UI (greedy, so it is deterministic), streamed token by token.
  await page.click("#gen-btn");
  await until(page, () => window.pgolf.lastGeneration);
  const gen = await page.evaluate(() => window.pgolf.lastGeneration);

  // An evaluation of the fixed text as the challenge scores it (the page's default plan: windows
  // of 128, stride 64, #461's full TTT in chunks of 128, the Hedge mixer, the audit); the shell
  // script compares it with `pgolf-rt eval --text`. A chunk of 0 is refused first.
  await page.fill("#ev-chunk", "0");
  await page.click("#ev-btn");
  const chunkMsg = await page.textContent("#ev-status");
  if (!chunkMsg.startsWith("chunk must be") || (await page.evaluate(() => window.pgolf.evaluations.length))) {
    throw new Error(`chunk 0: expected a refusal naming the chunk, got "${chunkMsg}"`);
  }
  // Plans the worker must refuse, each with a message that names the mistake.
  for (const [plan, want] of [
    [{ seq_len: 128, windows: 3 }, "unknown plan field"],
    [{ seq_len: 0 }, "plan.seq_len must be a whole number"],
    [{ ttt: "lora", recipe: "pr461" }, "full-model recipe"],
    [{ recipe: "pr999" }, "unknown TTT recipe"],
    [{ ttt_chunk: 64 }, "need plan.ttt or plan.recipe"],
    [{ mix: "hedge", stride: 500, seq_len: 128 }, "stride 500"],
  ]) {
    await page.evaluate((p) => window.pgolf.evaluateWith(p), plan);
    await until(page, () => window.pgolf.busy === null);
    const msg = await page.textContent("#ev-status");
    if (!msg.includes(want) || (await page.evaluate(() => window.pgolf.evaluations.length))) {
      throw new Error(`plan ${JSON.stringify(plan)}: expected a refusal with "${want}", got "${msg}"`);
    }
  }
  loaded.refusals += "; chunk 0 and 6 bad evaluation plans refused";
  await page.fill("#ev-chunk", "128");
  await page.click("#ev-btn");
  await until(page, () => window.pgolf.evaluations.length >= 1);
  loaded.evaluation = await page.evaluate(() => ({
    ...window.pgolf.evaluations[0],
    shown: document.getElementById("ev-bpb").textContent,
    audit_shown: document.getElementById("ev-audit-result")?.textContent,
  }));


  // The hover card of a token: its bits and the model's top three guesses there.
  await page.hover("#tokens span.tok:nth-child(6)");
  await until(page, () => /top guesses:\n.*%/.test(document.getElementById("hovercard").textContent));
  loaded.hoverCard = await page.textContent("#hovercard");
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.mouse.move(0, 0);

  // A long evaluation (#581's 20 epochs per chunk over 100 copies of the sample) stopped once it
  // reports progress: the worker is replaced, the model loaded again, the text not rescored.
  const evalBefore = await page.evaluate(() => [window.pgolf.loads.length, window.pgolf.scores.length]);
  await page.fill("#text", sample.repeat(100));
  await page.evaluate(() => window.pgolf.evaluateWith({ seq_len: 128, recipe: "pr581", ttt_chunk: 64 }));
  await until(page, () => window.pgolf.evalEvents >= 1);
  await page.click("#ev-stop");
  await until(page, (n) => window.pgolf.loads.length > n && window.pgolf.busy === null, evalBefore[0]);
  loaded.evalStop = await page.evaluate((before) => ({
    stop: window.pgolf.stops.at(-1),
    evaluations: window.pgolf.evaluations.length,
    progress: window.pgolf.evalEvents,
    reload: window.pgolf.loads.at(-1),
    rescored: window.pgolf.scores.length > before[1],
    status: document.getElementById("ev-status").textContent,
  }), evalBefore);
  await page.fill("#text", sample);

  // Text the vocabulary has no pieces for: scored, with a note on its byte-fallback tokens.
  await page.fill("#text", "Tokyo is 東京 in Japanese.");
  const scoresBefore = await page.evaluate(() => window.pgolf.scores.length);
  await page.click("#score-btn");
  await until(page, (n) => window.pgolf.scores.length > n, scoresBefore);
  loaded.byteFallbackNote = await page.textContent("#score-note");

  // A long generation, stopped once it streams.
  await page.evaluate(() => (window.pgolf.lastGeneration = null));
  await page.fill("#gen-n", "1000");
  await page.fill("#gen-temp", "0.8");
  await page.click("#gen-btn");
  await until(page, () => window.pgolf.genEvents >= 30);
  await page.click("#gen-stop");
  await until(page, () => window.pgolf.lastGeneration);
  const longGen = await page.evaluate(() => ({
    ...window.pgolf.lastGeneration,
    text: undefined,
    stop: window.pgolf.stops.at(-1),
  }));

  // A ~100 KB score with a 50 ms timer on the main thread: progress, an estimate, Stop.
  await page.evaluate((t) => {
    document.getElementById("text").value = t;
    window.pgolf.ticks = [];
    window.pgolf.ticker = setInterval(() => window.pgolf.ticks.push(performance.now()), 50);
  }, sample.repeat(100));
  await page.click("#score-btn");
  // Stop once some windows have landed (a partial score to show) and three progress messages came.
  await until(page, () => {
    const progress = window.pgolf.scoreEvents.filter((e) => e.type === "score-progress");
    return progress.length >= 3 && progress.at(-1).targets_done > 0;
  });
  const stopsBefore = await page.evaluate(() => window.pgolf.stops.length);
  await page.click("#score-stop");
  await until(page, (n) => window.pgolf.stops.length > n, stopsBefore);
  const longScore = await page.evaluate(() => {
    clearInterval(window.pgolf.ticker);
    const t = window.pgolf.ticks;
    const gaps = t.slice(1).map((v, i) => v - t[i]);
    const ev = window.pgolf.scoreEvents;
    const start = ev.find((e) => e.type === "score-start");
    const progress = ev.filter((e) => e.type === "score-progress");
    const last = progress.at(-1);
    return {
      chars: document.getElementById("text").value.length,
      targets_total: start.targets_total,
      windows_total: start.windows_total,
      eta_before_s: start.eta_s,
      progress_messages: progress.length,
      targets_done: last.targets_done,
      eta_last_s: last.eta_s,
      partial_bpb: last.bits_per_byte,
      shown: document.getElementById("score-eta").textContent,
      ticks: t.length,
      max_gap_ms: Math.max(...gaps),
      stop: window.pgolf.stops.at(-1),
    };
  });
  // Models: by URL (downloaded with progress, then again from the Cache API), from a file, dropped
  // on the page, a file that is no artifact refused (the page keeps its model), and the default
  // again; each new model scores the sample text again.
  await page.fill("#text", sample);
  const models = {};
  const loadThen = async (act) => {
    const before = await page.evaluate(() => [window.pgolf.loads.length, window.pgolf.scores.length]);
    await act();
    await until(
      page,
      ([l, n]) => window.pgolf.loads.length > l && window.pgolf.scores.length > n && window.pgolf.busy === null,
      before,
    );
    return page.evaluate(() => ({
      ...window.pgolf.loads.at(-1),
      bpb: window.pgolf.scores.at(-1).bits_per_byte,
      shown: `${document.getElementById("model-name").textContent} ${document.getElementById("model-source").textContent}`,
      note: document.getElementById("model-note").textContent,
    }));
  };
  await page.evaluate(() => caches.delete("pgolf-rt-models"));
  await page.fill("#model-url", new URL("model.ptz?as=url", url).href);
  models.url = await loadThen(() => page.click("#model-url-btn"));
  models.cached = await loadThen(() => page.click("#model-url-btn"));
  models.file = await loadThen(() => page.setInputFiles("#model-file", "examples/web/model.ptz"));
  const drop = await page.evaluateHandle(async () => {
    const blob = await (await fetch("model.ptz")).blob();
    const dt = new DataTransfer();
    dt.items.add(new File([blob], "dropped.ptz"));
    return dt;
  });
  models.dropped = await loadThen(() => page.dispatchEvent("body", "drop", { dataTransfer: drop }));
  const loadsBefore = await page.evaluate(() => window.pgolf.loads.length);
  await page.setInputFiles("#model-file", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("not a model") });
  await until(page, () => window.pgolf.busy === null && window.pgolf.loadNote !== "");
  models.refused = await page.evaluate((n) => ({
    note: document.getElementById("model-note").textContent,
    loadsAdded: window.pgolf.loads.length - n,
    shown: document.getElementById("model-name").textContent,
  }), loadsBefore);
  models.defaultAgain = await loadThen(() => page.click("#model-default-btn"));
  loaded.models = models;

  // Last (a software adapter keeps computing a dropped pass on the CPU for a while): a long
  // score on WebGPU stopped while a window's pass is on the GPU.
  if (loaded.webgpu) {
    await page.fill("#text", sample.repeat(20));
    await page.evaluate(() => (window.pgolf.scoreEvents = []));
    await page.evaluate(() => window.pgolf.scoreOn("webgpu"));
    await until(page, () => window.pgolf.scoreEvents.some((e) => e.type === "score-start"));
    await page.waitForTimeout(200);
    const n = await page.evaluate(() => window.pgolf.stops.length);
    await page.click("#score-stop");
    await until(page, (k) => window.pgolf.stops.length > k, n);
    loaded.gpuStop = await page.evaluate(() => ({
      stop: window.pgolf.stops.at(-1),
      on: window.pgolf.scoreEvents.find((e) => e.type === "score-start").on,
      windows_total: window.pgolf.scoreEvents.find((e) => e.type === "score-start").windows_total,
      shown: document.getElementById("score-eta").textContent,
    }));
  }

  console.log(
    JSON.stringify({ ok: true, ...loaded, generation: gen, longGeneration: longGen, longScore, console: consoleLines }),
  );
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), console: consoleLines }));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
