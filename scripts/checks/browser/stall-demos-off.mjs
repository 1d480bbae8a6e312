// The live page of a service started with --no-stall-demos: every stalling variant, and only
// those, shows the "switched off" badge, and a click on a lesson's button reports the 403s
// instead of running them.
//
//   node stall-demos-off.mjs BASE_URL SCREENSHOT_DIR
import { chromium } from "playwright-core";
import { launchOptions, watchedPage } from "./browser.mjs";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node stall-demos-off.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}

const failures = [];
const browser = await chromium.launch(launchOptions);
try {
  const { page, outside, consoleErrors } = await watchedPage(browser, { width: 1280, height: 1100 });
  await page.goto(`${base}/`);
  await page.waitForSelector(".variant");
  const variants = await page.$$eval(".variant", (nodes) =>
    nodes.map((node) => ({
      name: node.closest(".lesson").dataset.lesson + "/" + node.dataset.variant,
      stalls: !!node.querySelector(".badge.stall"),
      off: node.querySelector(".badge.off")?.textContent ?? null,
    })));
  const stalling = variants.filter((v) => v.stalls);
  if (stalling.length === 0) failures.push("no stalling variant on the page");
  for (const v of variants) {
    if (v.stalls && v.off !== "switched off (--no-stall-demos)") failures.push(`${v.name} stalls but is not shown switched off`);
    if (!v.stalls && v.off !== null) failures.push(`${v.name} does not stall but is shown switched off`);
  }
  // What a click shows: the blocking variant's requests come back 403.
  await page.click("#run-sleep");
  await page.waitForSelector('.lesson[data-lesson="sleep"] .variant[data-variant="blocking"] .error', { timeout: 30000 });
  const error = await page.textContent('.lesson[data-lesson="sleep"] .variant[data-variant="blocking"] .error');
  if (!error.includes("403")) failures.push(`the blocking variant's result does not show its 403: ${error}`);
  await page.locator('.lesson[data-lesson="sleep"] .variant[data-variant="blocking"]').scrollIntoViewIfNeeded();
  await page.screenshot({ path: `${shots}/stall-demos-off.png`, fullPage: false });
  if (consoleErrors.length) failures.push(`console errors: ${consoleErrors.join(" | ")}`);
  if (outside.length) failures.push(`requests outside loopback: ${outside.join(", ")}`);
  console.log(`stall demos off: ${stalling.length} of ${variants.length} variants shown switched off`);
} finally {
  await browser.close();
}
if (failures.length) {
  for (const failure of failures) console.error(`FAIL: ${failure}`);
  process.exit(1);
}
