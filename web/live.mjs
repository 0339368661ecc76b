// The page's live view: every tunnel the page opened (state, PHT version, bytes each way,
// age) and a plot of their combined throughput over the last minute. Four times a second
// it reads each open tunnel's `progress` (pht-wasm); plain DOM and a canvas, no framework.

const TICK_MS = 250;
const WINDOW_MS = 60_000;
/** Rows kept in the table; older ones leave it, their bytes stay in the plot's totals. */
const KEEP_ROWS = 30;
export const COLORS = { down: '#1565c0', up: '#e65100' };

const fmtBytes = (n) => Math.round(n).toLocaleString('en-US');

/** One tunnel (or attempt at one) and its row in the table. */
class Record {
  constructor(live, id, label) {
    this.live = live;
    this.id = id;
    this.label = label;
    this.tunnel = null;
    this.state = 'connecting';
    this.error = null;
    this.version = null;
    this.down = 0;
    this.up = 0;
    this.halfClosed = '';
    this.opened = performance.now();
    this.ended = null;
    this.row = this.makeRow();
  }

  makeRow() {
    const tr = document.createElement('tr');
    tr.dataset.id = String(this.id);
    const cell = (cls) => {
      const td = document.createElement('td');
      if (cls) td.className = cls;
      tr.append(td);
      return td;
    };
    cell().textContent = String(this.id);
    cell().textContent = this.label;
    this.cells = {
      version: cell(),
      state: cell('state'),
      down: cell('num'),
      up: cell('num'),
      age: cell('num'),
    };
    // Kept across refreshes: a row rebuilt four times a second would swallow clicks.
    this.closeButton = document.createElement('button');
    this.closeButton.textContent = 'close';
    this.closeButton.className = 'close';
    this.closeButton.title = 'tunnel.close(): ends the tunnel now';
    this.closeButton.addEventListener('click', () => {
      this.live.log(`tunnel #${this.id}: closed from the table`);
      this.close();
    });
    cell().append(this.closeButton);
    return tr;
  }

  /** The tunnel is open: from now on its progress is read and its end recorded. */
  attach(tunnel) {
    this.tunnel = tunnel;
    this.state = 'open';
    this.version = tunnel.version;
    tunnel.closed.then(
      () => this.end(null),
      (e) => this.end(e?.message ?? String(e)),
    );
    this.render();
  }

  /** connect() rejected: the attempt stays in the table with the reason. */
  failedToOpen(message) {
    this.state = 'failed';
    this.error = message;
    this.ended = performance.now();
    this.render();
  }

  refresh() {
    if (!this.tunnel || this.ended !== null) return;
    // null once pht-wasm has let the tunnel go; the last reading stands.
    const p = this.tunnel.progress;
    if (!p) return;
    this.down = Math.max(this.down, p.received);
    this.up = Math.max(this.up, p.sent);
    this.version = p.version;
    this.halfClosed = p.writeClosed ? 'upload ended' : p.readEnded === true ? 'download ended' : '';
  }

  /**
   * The server has taken `n` bytes (a resolved `writable.close()` says so), which the last
   * reading of `progress` may not show yet: on PHT/1 that close also ends the tunnel, and
   * `progress` reads `null` from then on.
   */
  taken(n) {
    this.up = Math.max(this.up, n);
    if (this.ended !== null) this.render();
  }

  /** The page has read `n` bytes from the tunnel: a short tunnel may end between readings. */
  received(n) {
    this.down = Math.max(this.down, n);
    if (this.ended !== null) this.render();
  }

  /** Ends the tunnel from this page, after a last reading of its byte counts. */
  close() {
    this.refresh();
    return this.tunnel ? this.tunnel.close() : Promise.resolve();
  }

  end(error) {
    this.refresh();
    this.ended = performance.now();
    this.state = error ? 'failed' : 'closed';
    this.error = error;
    if (error) this.live.log(`tunnel #${this.id} failed: ${error}`, true);
    else this.live.log(`tunnel #${this.id} closed`);
    this.render();
  }

  render() {
    const c = this.cells;
    c.version.textContent = this.version ? `PHT/${this.version}` : '–';
    let state = this.state;
    if (state === 'open' && this.halfClosed) state = `open (${this.halfClosed})`;
    if (state === 'failed') state = `failed: ${this.error}`;
    c.state.textContent = state;
    c.down.textContent = fmtBytes(this.down);
    c.up.textContent = fmtBytes(this.up);
    const ms = (this.ended ?? performance.now()) - this.opened;
    c.age.textContent = `${(ms / 1000).toFixed(1)} s`;
    this.row.className = this.state;
    this.row.dataset.state = this.state;
    this.closeButton.hidden = !(this.state === 'open' && this.tunnel);
  }
}

export class Live {
  constructor({ canvas, tbody, rateDown, rateUp, peak, openCount, log }) {
    this.canvas = canvas;
    this.tbody = tbody;
    this.out = { rateDown, rateUp, peak, openCount };
    this.log = log;
    this.records = [];
    this.nextId = 1;
    this.retired = { down: 0, up: 0 };
    this.samples = []; // { t, down, up } in MB/s
    this.last = null; // { t, down, up } byte totals at the previous tick
    this.peak = { down: 0, up: 0 };
    setInterval(() => this.tick(), TICK_MS);
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** A row for a tunnel about to be opened. */
  add(label) {
    const rec = new Record(this, this.nextId++, label);
    this.records.push(rec);
    this.tbody.prepend(rec.row);
    while (this.records.length > KEEP_ROWS) {
      const i = this.records.findIndex((r) => r.ended !== null);
      if (i < 0) break;
      const [old] = this.records.splice(i, 1);
      this.retired.down += old.down;
      this.retired.up += old.up;
      old.row.remove();
    }
    rec.render();
    return rec;
  }

  tick() {
    const now = performance.now();
    let down = this.retired.down;
    let up = this.retired.up;
    const versions = new Set();
    let open = 0;
    for (const r of this.records) {
      r.refresh();
      if (r.ended === null) r.render();
      down += r.down;
      up += r.up;
      if (r.state === 'open') {
        open++;
        if (r.version) versions.add(`PHT/${r.version}`);
      }
    }
    // Timers held back by a busy page fire in a burst: a rate over a few milliseconds
    // would be noise, so such ticks leave the rate to the next.
    const early = this.last && now - this.last.t < TICK_MS * 0.8;
    if (this.last && !early) {
      const secs = (now - this.last.t) / 1000;
      const s = { t: now, down: (down - this.last.down) / 1e6 / secs, up: (up - this.last.up) / 1e6 / secs };
      this.samples.push(s);
      while (this.samples.length && this.samples[0].t < now - WINDOW_MS) this.samples.shift();
      this.peak.down = Math.max(this.peak.down, s.down);
      this.peak.up = Math.max(this.peak.up, s.up);
      this.out.rateDown.textContent = s.down.toFixed(1);
      this.out.rateUp.textContent = s.up.toFixed(1);
      if (this.peak.down || this.peak.up) {
        this.out.peak.textContent = `↓ ${this.peak.down.toFixed(1)} / ↑ ${this.peak.up.toFixed(1)} MB/s`;
      }
    }
    if (!early) this.last = { t: now, down, up };
    this.out.openCount.textContent = open
      ? `${open} tunnel${open > 1 ? 's' : ''} open, speaking ${[...versions].join(' and ') || '…'}`
      : 'no tunnel open';
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(c.clientWidth * dpr);
    const h = Math.round(c.clientHeight * dpr);
    if (!w || !h) return;
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const g = c.getContext('2d');
    g.clearRect(0, 0, w, h);
    const pad = { l: 58 * dpr, r: 8 * dpr, t: 8 * dpr, b: 20 * dpr };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    // Four round steps (1, 2 or 5 times a power of ten) up to the highest rate shown.
    const step = niceCeiling(Math.max(1, ...this.samples.map((s) => Math.max(s.down, s.up))) / 4);
    const max = 4 * step;

    g.font = `${11 * dpr}px system-ui, sans-serif`;
    g.fillStyle = '#666';
    g.strokeStyle = '#e4e4e4';
    g.lineWidth = 1;
    g.textBaseline = 'middle';
    g.textAlign = 'right';
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ph - (ph * i) / 4;
      g.beginPath();
      g.moveTo(pad.l, y);
      g.lineTo(pad.l + pw, y);
      g.stroke();
      g.fillText(`${Number((step * i).toPrecision(3))} MB/s`, pad.l - 4 * dpr, y);
    }
    g.textAlign = 'center';
    g.textBaseline = 'top';
    for (const [secs, text] of [[60, '−60 s'], [30, '−30 s'], [0, 'now']]) {
      const x = pad.l + pw - (pw * secs * 1000) / WINDOW_MS;
      g.textAlign = secs === 60 ? 'left' : secs === 0 ? 'right' : 'center';
      g.fillText(text, x, pad.t + ph + 4 * dpr);
    }

    const now = performance.now();
    const xOf = (t) => pad.l + pw - (pw * (now - t)) / WINDOW_MS;
    const yOf = (v) => pad.t + ph - (ph * Math.min(v, max)) / max;
    g.lineJoin = 'round';
    // Through an echo both lines coincide: the narrower one on top keeps both visible.
    for (const [key, width] of [['down', 3.5], ['up', 1.5]]) {
      g.strokeStyle = COLORS[key];
      g.lineWidth = width * dpr;
      g.beginPath();
      this.samples.forEach((s, i) => {
        const x = xOf(s.t);
        const y = yOf(s[key]);
        if (i === 0) g.moveTo(x, y);
        else g.lineTo(x, y);
      });
      g.stroke();
    }
  }
}

/** The smallest 1, 2 or 5 times a power of ten at or above `v`. */
function niceCeiling(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
