// The live page as a newcomer meets it, against a service with one worker: open `/`, start a
// 3 s blocking sleep from elsewhere, and check the page names it while it runs and keeps
// changing through it; then click the sleep lesson's button and read the verdicts.
//
//   node live-page.mjs BASE_URL SCREENSHOT_DIR
//
// Fails (exit 1) naming what went wrong: no stall named 1.5 s into it (with its request id and
// a link to its trace through --trace-url), a page that stood still
// between 1.5 s and 2.5 s, a verdict other than "blocking serialised, the rest parallel", an
// error in the browser console, or any request leaving loopback.
import { chromium } from "playwright-core";
import { launchOptions, watchedPage } from "./browser.mjs";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node live-page.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const failures = [];
const browser = await chromium.launch(launchOptions);
try {
  const { page, outside, consoleErrors } = await watchedPage(browser, { width: 1280, height: 1100 });

  await page.goto(`${base}/`);
  await page.waitForFunction(() => document.getElementById("connection").textContent === "live", null, { timeout: 10000 });
  await sleep(1500); // a little history in the charts

  // The stall, sent from outside the browser as another client would.
  const started = Date.now();
  const stall = fetch(`${base}/sleep/blocking?ms=3000`, { headers: { "x-request-id": "browser-stall" } });
  const at = async (ms) => sleep(Math.max(0, started + ms - Date.now()));
  const watched = () => page.evaluate(() => ({
    stalls: document.getElementById("stalls-now").innerText,
    lag: document.getElementById("lag").innerText,
    named: [...document.querySelectorAll(".stall-now")].map((n) => `${n.dataset.route} ${n.dataset.variant}`),
    traces: [...document.querySelectorAll(".stall-now a")].map((a) => a.href),
  }));

  await at(1500);
  const early = await watched();
  console.log(`  1.5 s into the stall: named [${early.named}], lag ${early.lag}`);
  if (!early.named.includes("/sleep/{variant} blocking")) {
    failures.push(`1.5 s into a 3 s /sleep/blocking the page names [${early.named}], not "/sleep/{variant} blocking"`);
  }
  if (!early.stalls.includes("browser-stall")) failures.push(`the stall in progress does not name its request id: ${early.stalls}`);
  if (!early.traces.some((href) => /^http:\/\/127\.0\.0\.1:9\/trace\/[0-9a-f]{32}$/.test(href))) {
    failures.push(`the stall does not link its trace through --trace-url: [${early.traces}]`);
  }
  await at(2000);
  await page.screenshot({ path: `${shots}/live-page.png` });
  await at(2500);
  const late = await watched();
  console.log(`  2.5 s into the stall: lag ${late.lag}`);
  if (late.stalls === early.stalls && late.lag === early.lag) {
    failures.push(`the page stood still between 1.5 s and 2.5 s into the stall: ${late.stalls}`);
  }
  const answered = await stall;
  if (answered.status !== 200) failures.push(`the stalling request answered ${answered.status}`);
  await page.waitForSelector('#stalls-recent tr[data-variant="blocking"]', { timeout: 5000 })
    .catch(() => failures.push("the ended stall never reached the recent stalls"));

  // The lesson, from its button.
  const lesson = page.locator('.lesson[data-lesson="sleep"]');
  await lesson.locator("button").click();
  await page.waitForFunction(
    () => document.querySelectorAll('.lesson[data-lesson="sleep"] .verdict').length === 4,
    null, { timeout: 60000 },
  ).catch(() => failures.push("the sleep experiment did not draw four verdicts within 60 s"));
  const verdicts = await lesson.locator(".variant").evaluateAll((variants) => Object.fromEntries(
    variants.map((v) => [v.dataset.variant, v.querySelector(".verdict")?.dataset.verdict ?? "none"])));
  console.log(`  sleep lesson verdicts: ${JSON.stringify(verdicts)}`);
  const expected = { async: "parallel", blocking: "serialised", "spawn-blocking": "parallel", "block-in-place": "parallel" };
  for (const [variant, verdict] of Object.entries(expected)) {
    if (verdicts[variant] !== verdict) failures.push(`sleep/${variant}: the page says ${verdicts[variant]}, the lesson ${verdict}`);
  }
  const stallsDrawn = await lesson.locator('.variant[data-variant="blocking"] .timeline .stalled').count();
  if (stallsDrawn < 1) failures.push("the blocking variant's timeline marks no stall");
  await lesson.scrollIntoViewIfNeeded();
  await lesson.screenshot({ path: `${shots}/live-page-sleep-lesson.png` });

  if (consoleErrors.length) failures.push(`browser console errors: ${consoleErrors.join(" | ")}`);
  if (outside.length) failures.push(`requests left loopback: ${outside.join(", ")}`);
} finally {
  await browser.close();
}

if (failures.length) {
  console.error("live page check failed:\n" + failures.map((f) => `  - ${f}`).join("\n"));
  process.exit(1);
}
console.log("live page: the stall named while it ran, the page live through it, the sleep lesson's verdicts right");
