// Swagger UI as a newcomer uses it: follow the live page's "API docs" link, and on every lesson
// operation click "Try it out" then "Execute" without typing anything. Each must answer 200.
//
//   node swagger.mjs BASE_URL SCREENSHOT_DIR
//
// Fails (exit 1) naming the operation on: no docs link on `/`, a variant that is not a
// dropdown of the lesson's variants, an Execute that never answers or answers another status,
// an error in the browser console, or any request leaving loopback.
import { chromium } from "playwright-core";
import { launchOptions, watchedPage } from "./browser.mjs";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node swagger.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}

// operationId → the variants its dropdown must offer (the service's own names, in order).
const LESSONS = {
  sleep: ["async", "blocking", "spawn-blocking", "block-in-place"],
  cpu: ["inline", "spawn-blocking", "rayon"],
  upstream: ["async", "blocking", "spawn-blocking"],
  db_sleep: ["async", "raw", "blocking", "spawn-blocking"],
  db_user: ["async", "raw", "blocking", "spawn-blocking"],
};

const failures = [];
const browser = await chromium.launch(launchOptions);
try {
  const { page, outside, consoleErrors } = await watchedPage(browser, { width: 1280, height: 1000 });

  await page.goto(`${base}/`);
  await page.getByRole("link", { name: "API docs" }).click();
  if (!new URL(page.url()).pathname.startsWith("/docs")) {
    failures.push(`the live page's "API docs" link did not lead to the docs: the browser is at ${page.url()}`);
  }
  await page.waitForSelector(".opblock", { timeout: 15000 });
  await page.screenshot({ path: `${shots}/docs.png` });

  for (const [operation, variants] of Object.entries(LESSONS)) {
    const started = Date.now();
    const block = page.locator(`.opblock[id$="-${operation}"]`);
    if ((await block.count()) !== 1) {
      failures.push(`${operation}: ${await block.count()} operation blocks with this id`);
      continue;
    }
    await block.locator(".opblock-summary-control").click();
    await block.locator("button.try-out__btn").click();
    const offered = await block
      .locator('tr[data-param-name="variant"] select option')
      .evaluateAll((options) => options.map((o) => o.value).filter((v) => v !== ""));
    if (JSON.stringify(offered) !== JSON.stringify(variants)) {
      failures.push(`${operation}: variant dropdown offers [${offered}], want [${variants}]`);
    }
    await block.locator("button.execute").click();
    const status = block.locator(".live-responses-table tbody .response-col_status").first();
    try {
      await status.waitFor({ timeout: 30000 });
    } catch {
      failures.push(`${operation}: Execute never answered (30 s)`);
      await block.screenshot({ path: `${shots}/${operation}-no-answer.png` });
      continue;
    }
    const code = (await status.innerText()).trim();
    const url = await block.locator(".request-url pre").first().innerText().catch(() => "?");
    console.log(`  ${operation}: ${code} in ${Date.now() - started} ms  ${url.trim()}`);
    if (code !== "200") failures.push(`${operation}: Execute answered ${code} (${url.trim()})`);
    await block.screenshot({ path: `${shots}/${operation}.png` });
  }

  if (consoleErrors.length) failures.push(`browser console errors: ${consoleErrors.join(" | ")}`);
  if (outside.length) failures.push(`requests left loopback: ${outside.join(", ")}`);
} finally {
  await browser.close();
}

if (failures.length) {
  console.error("Swagger UI check failed:\n" + failures.map((f) => `  - ${f}`).join("\n"));
  process.exit(1);
}
console.log(`Swagger UI: Try it out → Execute answered 200 on all ${Object.keys(LESSONS).length} lesson operations`);
