// The demo page in Debian's headless Chromium (playwright-core, never a downloaded
// browser): web/ is loaded from one origin (pht-server's file handler), the tunnel goes to
// pht-server on another origin. Checks that the target's answer appears on the page, runs
// the throughput check, and counts the CORS preflights the browser sent (must be none).
//
// node page.mjs --page URL --server URL --target host:port --echo host:port
//               [--mib N] [--screenshot FILE]
import { chromium } from 'playwright-core';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    page: { type: 'string' },
    server: { type: 'string' },
    connector: { type: 'string', default: 'http' },
    target: { type: 'string' },
    echo: { type: 'string' },
    mib: { type: 'string', default: '16' },
    screenshot: { type: 'string' },
  },
});
for (const k of ['page', 'server', 'target', 'echo']) {
  if (!args[k]) throw new Error(`--${k} is required`);
}
if (new URL(args.page).origin === new URL(args.server).origin) {
  throw new Error('the page and the PHT server must be on different origins');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
  timeout: 60_000,
});
let failed = false;
try {
  const page = await browser.newPage();
  const methods = {};
  page.on('request', (r) => {
    methods[r.method()] = (methods[r.method()] ?? 0) + 1;
  });
  page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => {
    failed = true;
    console.error(`[page error] ${e.message}`);
  });

  const url = new URL(args.page);
  for (const k of ['server', 'connector', 'target', 'echo', 'mib']) url.searchParams.set(k, args[k]);
  await page.goto(url.href, { timeout: 30_000 });
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });

  // Open tunnel: GET / to the target through the tunnel; the answer shows on the page.
  await page.click('#open');
  await page.waitForFunction(
    () => /hello from the pht target: GET \//.test(document.getElementById('response').textContent) ||
      document.getElementById('response').classList.contains('error'),
    null,
    { timeout: 30_000 },
  );
  const response = await page.textContent('#response');
  console.error(`[page-test] response on the page:\n${response.trim()}`);
  if (!response.includes('HTTP/1.1 200 OK') || !response.includes('hello from the pht target: GET /')) {
    throw new Error(`the target's answer did not appear on the page: ${response}`);
  }

  // Throughput through the echo target.
  await page.click('#measure');
  await page.waitForFunction(
    () => /MB\/s|error/.test(document.getElementById('throughput').textContent) ||
      document.getElementById('throughput').classList.contains('error'),
    null,
    { timeout: 120_000 },
  );
  const throughput = (await page.textContent('#throughput')).trim();
  if (!throughput.includes('MB/s')) throw new Error(`throughput check failed: ${throughput}`);
  console.log(`[page-test] throughput in Chromium: ${throughput}`);

  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  console.error(`[page-test] requests by method: ${JSON.stringify(methods)}`);
  if (methods.OPTIONS) throw new Error(`the browser sent ${methods.OPTIONS} OPTIONS requests`);
  if (failed) throw new Error('the page threw errors');
  console.log('[page-test] ok');
} finally {
  await browser.close();
}
