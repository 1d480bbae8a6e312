// What every browser check shares: how Debian's Chromium is started, and the loopback guard.

// Debian's Chromium, never a downloaded one. Without the background-networking flags Chromium
// keeps trying to reach Google's services, which this machine's closed network refuses.
export const launchOptions = {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
};

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

// Collects every http(s) request of `page` that leaves loopback (a CDN, a font, a tracker):
// the pages must work offline, from the binary alone.
export function onlyLoopback(page) {
  const outside = [];
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.protocol.startsWith("http") && !LOOPBACK.has(url.hostname)) outside.push(url.href);
  });
  return outside;
}

// A new page that collects its console errors and the requests it sends outside loopback:
// every check fails on either.
export async function watchedPage(browser, viewport) {
  const page = await browser.newPage({ viewport });
  const outside = onlyLoopback(page);
  const consoleErrors = [];
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  return { page, outside, consoleErrors };
}
