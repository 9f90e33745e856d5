// Generation tokens/s of the WASM build in headless Chromium (issue 18's benchmark): loads the
// page's package and model (examples/web after prepare.sh) on the main thread of a blank page of
// the same origin, builds prompts of about 64 and 512 tokens, and times greedy generation with
// the KV cache and with the full recompute per token. Decode rate = N tokens / (time of N+1
// tokens - time of 1 token), so the prompt's prefill is not counted. Prints one JSON line.
// Usage: node bench-generate.mjs URL_OF_INDEX_HTML [N]   (env CHROMIUM: browser executable)
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, nArg = "32"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node bench-generate.mjs URL [N]");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "pgolf-bench-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    timeout: 600_000,
  });
  const page = context.pages()[0] || (await context.newPage());
  await page.goto(url, { timeout: 600_000 });
  const base = url.replace(/[^/]*$/, "");
  const result = await page.evaluate(
    async ({ base, n }) => {
      const { default: init, WasmModel } = await import(`${base}pkg/pgolf_rt_wasm.js`);
      await init();
      const bytes = async (f) => new Uint8Array(await (await fetch(`${base}${f}`)).arrayBuffer());
      const model = new WasmModel(await bytes("model.ptz"), await bytes("tokenizer.model"));
      const sample = await (await fetch(`${base}fixed_text.txt`)).text();
      const words = sample.repeat(4).split(" ");
      // The shortest prefix of the sample with at least `want` tokens (BOS included).
      const prompt = (want) => {
        let lo = 1, hi = words.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (model.score(words.slice(0, mid).join(" ")).num_tokens + 1 >= want) hi = mid;
          else lo = mid + 1;
        }
        const p = words.slice(0, lo).join(" ");
        return { p, tokens: model.score(p).num_tokens + 1 };
      };
      const time = (p, k, recompute) => {
        const t0 = performance.now();
        model.generate_decoding(p, k, 0, 0, 1n, recompute);
        return performance.now() - t0;
      };
      const out = { info: model.info(), n, runs: [] };
      for (const ctx of [64, 512]) {
        const { p, tokens } = prompt(ctx);
        for (const recompute of [false, true]) {
          time(p, 2, recompute); // warm
          const one = time(p, 1, recompute);
          const many = time(p, n + 1, recompute);
          out.runs.push({ context: tokens, decoding: recompute ? "recompute" : "kv-cache",
            tokens_per_s: (n * 1000) / Math.max(many - one, 1e-3), prefill_ms: one, prompt: p });
        }
        const a = model.generate_decoding(p, n, 0, 0, 1n, false);
        const b = model.generate_decoding(p, n, 0, 0, 1n, true);
        out.runs.push({ context: tokens, same_text: a === b });
      }
      return out;
    },
    { base, n: Number(nArg) },
  );
  console.log(JSON.stringify({ ok: true, ...result }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
