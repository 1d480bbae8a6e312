// Renders a terminal's text as a PNG, in Debian's Chromium, for the README's picture of
// `stallscope experiment`: the text is the command's real output, not retyped.
//
//   node text-picture.mjs TEXT_FILE OUT.png "$ the command that printed it"
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import { launchOptions, onlyLoopback } from "./browser.mjs";

const [textFile, out, command] = process.argv.slice(2);
if (!textFile || !out) {
  console.error('usage: node text-picture.mjs TEXT_FILE OUT.png ["$ command"]');
  process.exit(2);
}
const escape = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
// Rows whose verdict says the executor was blocked are the lesson: mark them red, and the
// parallel ones green (with the words still there for anyone who cannot tell the colours).
const body = readFileSync(textFile, "utf8")
  .trimEnd()
  .split("\n")
  .map((line) => {
    const html = escape(line);
    if (/serialised/.test(line)) return `<span class="bad">${html}</span>`;
    if (/ parallel$/.test(line)) return `<span class="good">${html}</span>`;
    if (/^\S.* — /.test(line)) return `<span class="head">${html}</span>`;
    return html;
  })
  .join("\n");
const page = `<!doctype html><meta charset="utf-8"><style>
  body { margin: 0; background: #1e1e1e; }
  pre { margin: 0; padding: 18px 22px; width: 960px; white-space: pre-wrap; color: #d4d4d4; font: 14px/1.35 "DejaVu Sans Mono", monospace; }
  .cmd { color: #9cdcfe; } .bad { color: #f48771; } .good { color: #89d185; } .head { color: #ffffff; font-weight: bold; }
</style><pre>${command ? `<span class="cmd">${escape(command)}</span>\n\n` : ""}${body}</pre>`;

const browser = await chromium.launch(launchOptions);
try {
  const tab = await browser.newPage({ viewport: { width: 1000, height: 200 }, deviceScaleFactor: 1 });
  const outside = onlyLoopback(tab);
  await tab.setContent(page);
  await tab.locator("pre").screenshot({ path: out });
  if (outside.length) throw new Error(`requests left loopback: ${outside.join(", ")}`);
} finally {
  await browser.close();
}
console.log(`wrote ${out}`);
