// Drives the page of a running `chromacpp serve` in a real chromium (through playwright-core): fills the
// form, submits, follows the progress bar to 100 %, and requires the gallery image to decode to the
// same pixels as the CLI's PNG made with the same settings. Run by run_browser_test.sh, which starts
// the server and makes the reference; exits 0 on success, 1 with a reason otherwise.
//
//   node page_test.mjs URL REFERENCE_PNG OUTDIR
//   settings from the environment: WEB_PROMPT WEB_NEGATIVE WEB_SIZE WEB_STEPS WEB_CFG WEB_SEED
//   WEB_SAMPLER WEB_SCHEDULER; CHROMIUM (default /usr/bin/chromium)
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, referencePath, outDir] = process.argv.slice(2);
if (!url || !referencePath || !outDir) {
  console.error("usage: node page_test.mjs URL REFERENCE_PNG OUTDIR");
  process.exit(2);
}
const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const settings = {
  prompt: env("WEB_PROMPT"), negative_prompt: env("WEB_NEGATIVE"), width: env("WEB_SIZE"), height: env("WEB_SIZE"),
  steps: env("WEB_STEPS"), cfg: env("WEB_CFG"), seed: env("WEB_SEED"),
};
const sampler = env("WEB_SAMPLER"), scheduler = env("WEB_SCHEDULER");
const size = Number(settings.width), steps = Number(settings.steps);

// Every wait below has its own bound; this one catches anything that still hangs (a stuck browser).
const watchdog = setTimeout(() => { console.error("web test: overall timeout (180 s)"); process.exit(1); }, 180_000);
watchdog.unref();

const log = (...a) => console.log("web test:", ...a);
let browser, page;
let failed = false;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // --no-sandbox: the tests may run as root (containers, CI), where chromium's sandbox refuses to start.
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    timeout: 30_000,
  });
  log("browser", browser.version());
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(30_000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  // Failed requests by URL (the console's "Failed to load resource" does not say which); the page has
  // no icon, so the browser's own /favicon.ico request may 404.
  page.on("response", (r) => {
    if (r.status() >= 400 && new URL(r.url()).pathname !== "/favicon.ico") pageErrors.push(`HTTP ${r.status()} ${r.url()}`);
  });

  await page.goto(url, { waitUntil: "load", timeout: 15_000 });
  // The sampler and scheduler lists come from the server; wait until both are filled.
  await page.waitForFunction(() => document.querySelector("#sampler").options.length > 0 &&
                                   document.querySelector("#scheduler").options.length > 0, null, { timeout: 15_000 });
  for (const [id, value] of Object.entries(settings)) await page.fill("#" + id, value);
  await page.selectOption("#sampler", sampler);
  await page.selectOption("#scheduler", scheduler);

  // Record every width the bar takes and every status line, as they happen: a 2-step job at 64x64 is
  // over in well under a second, too fast to sample by polling. Several events may arrive in one chunk
  // and change the page in one task, so read each value from its mutation record, not from the page.
  await page.evaluate(() => {
    window.__bar = []; window.__status = [];
    const bar = document.querySelector("#bar");
    new MutationObserver((records) => {
      // Each record holds the value before its change; the value after the last one is the page's.
      for (const r of records.slice(1)) window.__bar.push(/width:\s*([^;]*)/.exec(r.oldValue || "")?.[1] ?? "");
      window.__bar.push(bar.style.width);
    }).observe(bar, { attributes: true, attributeFilter: ["style"], attributeOldValue: true });
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) window.__status.push(n.textContent);
    }).observe(document.querySelector("#status"), { childList: true });
  });
  await page.click("#go");
  await page.waitForSelector("#gallery .card img", { timeout: 120_000 });
  await page.waitForFunction(() => document.querySelector("#bar").style.width === "100%", null, { timeout: 10_000 });
  const bar = await page.evaluate(() => window.__bar);
  const statuses = await page.evaluate(() => window.__status);
  log("bar widths", JSON.stringify(bar));
  log("status lines", JSON.stringify(statuses));

  const check = (ok, what) => { if (!ok) { console.error("web test: FAIL:", what); failed = true; } };
  // The submit handler resets the bar to "0" first; after that it must only grow, step by step, to 100 %.
  const widths = bar.map((w) => parseFloat(w)).filter((w, i) => i > 0 || w !== 0);
  check(widths.length > 0 && widths.every((w, i) => i === 0 || w >= widths[i - 1]), "the bar never shrinks: " + bar);
  check(widths.at(-1) === 100, "the bar ends at 100 %: " + bar);
  check(widths.some((w) => w > 0 && w < 100), "the bar shows an intermediate step: " + bar);
  check(statuses.some((s) => s.startsWith(`denoising ${steps}/${steps}`)), `the status showed denoising ${steps}/${steps}`);
  check(statuses.at(-1).startsWith("done"), "the status ends with done: " + statuses.at(-1));

  const src = await page.getAttribute("#gallery .card img", "src");
  check(src.startsWith("data:image/png;base64,"), "the gallery image is a PNG data URL: " + src.slice(0, 40));
  writeFileSync(join(outDir, "web-result.png"), Buffer.from(src.split(",")[1], "base64"));

  // Decode both images in the page, the same way, and compare their RGBA pixels.
  const referenceUrl = "data:image/png;base64," + readFileSync(referencePath).toString("base64");
  const cmp = await page.evaluate(async (refSrc) => {
    const pixels = async (img) => {
      await img.decode();
      const c = document.createElement("canvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      return { w: c.width, h: c.height, data: g.getImageData(0, 0, c.width, c.height).data };
    };
    const ref = new Image();
    ref.src = refSrc;
    const a = await pixels(document.querySelector("#gallery .card img"));
    const b = await pixels(ref);
    const out = { got: [a.w, a.h], want: [b.w, b.h], differing: 0, maxDiff: 0, first: -1 };
    if (a.w !== b.w || a.h !== b.h) return out;
    for (let i = 0; i < a.data.length; i += 4) {
      let d = 0;
      for (let k = 0; k < 4; ++k) d = Math.max(d, Math.abs(a.data[i + k] - b.data[i + k]));
      if (d) { out.differing++; out.maxDiff = Math.max(out.maxDiff, d); if (out.first < 0) out.first = i / 4; }
    }
    out.total = a.data.length / 4;
    return out;
  }, referenceUrl);
  log("pixels", JSON.stringify(cmp));
  check(cmp.got[0] === size && cmp.got[1] === size, `the page's image is ${size}x${size}: ${cmp.got}`);
  check(cmp.got.join() === cmp.want.join(), `same size as the CLI's: ${cmp.got} vs ${cmp.want}`);
  check(cmp.differing === 0, `every pixel equals the CLI's: ${cmp.differing} differ (max ${cmp.maxDiff}, first at ${cmp.first})`);
  check(pageErrors.length === 0, "no page errors: " + JSON.stringify(pageErrors));

  await page.screenshot({ path: join(outDir, "web-page.png"), fullPage: true, timeout: 15_000 });
  log("screenshot", join(outDir, "web-page.png"));
} catch (e) {
  console.error("web test: FAIL:", e.message);
  failed = true;
  // What the page showed when it went wrong.
  if (page) await page.screenshot({ path: join(outDir, "web-page-failure.png"), timeout: 5_000 }).catch(() => {});
} finally {
  if (browser) await browser.close().catch(() => {});
}
log(failed ? "FAILED" : "passed");
process.exit(failed ? 1 : 0);
