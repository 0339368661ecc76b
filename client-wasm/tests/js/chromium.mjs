// Headless Chromium as the browser tests start it: Debian's build at /usr/bin/chromium
// (or $CHROMIUM), with the flags a machine on a closed network needs. Without the
// background-networking ones, Chromium keeps trying to reach Google's services and its
// connections are refused, many at a time.

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
