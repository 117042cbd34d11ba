#!/usr/bin/env node
// A store in another region, on loopback: an HTTP proxy that adds latency to every request,
// caps bandwidth (each direction, shared by all connections) and requests in flight, and can
// inject the faults of a bad network or a busy store. The kernel here has no netem; this is
// the tests' and benchmarks' stand-in for it.
//
// Usage: node throttle.js --upstream http://127.0.0.1:PORT [--port 0]
//          [--latency-ms 20] [--bandwidth 200MB] [--concurrency 64]
//          [--fail-every N]   every Nth request gets 503 SlowDown (the store never sees it)
//          [--drop-every N]   every Nth request's connection is cut mid-reply
//          [--ignore-range]   drop Range headers, as a server without range support would
// Prints "PORT n" once it listens on 127.0.0.1. GET /__throttle__/stats answers its counters
// as JSON (and is not forwarded).
'use strict';
const http = require('http');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
function bytes(s) {
  if (!s) return 0;
  const m = /^([\d.]+)\s*([KMG]i?B?|B)?$/i.exec(s);
  if (!m) throw new Error(`not a size: ${s}`);
  const unit = (m[2] || 'B').toUpperCase();
  const mult = { B: 1, K: 1e3, KB: 1e3, KIB: 1024, M: 1e6, MB: 1e6, MIB: 1 << 20, G: 1e9, GB: 1e9, GIB: 1 << 30 }[unit];
  return Number(m[1]) * mult;
}

const upstream = new URL(arg('--upstream') || '');
const latency = Number(arg('--latency-ms', 0));
const rate = bytes(arg('--bandwidth', '0')); // bytes per second; 0: unlimited
const concurrency = Number(arg('--concurrency', 0)) || Infinity;
const failEvery = Number(arg('--fail-every', 0));
const dropEvery = Number(arg('--drop-every', 0));
const ignoreRange = process.argv.includes('--ignore-range');

// A token bucket per direction. take() says how long to wait before sending more.
class Bucket {
  constructor(rate) { this.rate = rate; this.burst = rate / 50; this.tokens = this.burst; this.last = Date.now(); }
  take(n) {
    if (!this.rate) return 0;
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.last) / 1000 * this.rate);
    this.last = now;
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }
}
const down = new Bucket(rate), up = new Bucket(rate);

const stats = { requests: 0, forwarded: 0, failed_503: 0, dropped: 0, bytes_down: 0, bytes_up: 0,
                in_flight: 0, max_in_flight: 0 };
const queue = [];
let inFlight = 0;
const agent = new http.Agent({ keepAlive: true, maxSockets: Number.isFinite(concurrency) ? concurrency : 1024 });

// Copies src to dst at the bucket's pace, respecting dst's backpressure.
function pump(src, dst, bucket, onBytes, onChunk) {
  src.on('data', (chunk) => {
    onBytes(chunk.length);
    if (onChunk && onChunk(chunk)) return;
    const more = dst.write(chunk);
    const wait = bucket.take(chunk.length);
    if (!more || wait > 0) {
      src.pause();
      let pending = (more ? 0 : 1) + (wait > 0 ? 1 : 0);
      const go = () => { if (--pending === 0) src.resume(); };
      if (!more) dst.once('drain', go);
      if (wait > 0) setTimeout(go, wait);
    }
  });
  src.on('end', () => dst.end());
}

function release() {
  inFlight--;
  stats.in_flight = inFlight;
  if (queue.length && inFlight < concurrency) admit(queue.shift());
}

function admit(job) {
  inFlight++;
  stats.in_flight = inFlight;
  stats.max_in_flight = Math.max(stats.max_in_flight, inFlight);
  setTimeout(() => forward(job), latency);
}

function slowDown(res) {
  const body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>' +
               '<Message>Please reduce your request rate.</Message></Error>';
  res.writeHead(503, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function forward({ req, res, n }) {
  let done = false;
  const finish = () => { if (!done) { done = true; release(); } };
  res.on('close', finish);
  if (failEvery && n % failEvery === 0) {
    stats.failed_503++;
    req.resume();
    return slowDown(res);
  }
  const drop = dropEvery && n % dropEvery === Math.floor(dropEvery / 2);
  stats.forwarded++;
  const headers = { ...req.headers }; // the Host it was signed for, unchanged
  if (ignoreRange) delete headers.range;
  const ureq = http.request({ host: upstream.hostname, port: upstream.port, method: req.method,
                              path: req.url, headers, agent }, (ures) => {
    res.writeHead(ures.statusCode, ures.headers);
    let sent = 0;
    const total = Number(ures.headers['content-length'] || 0);
    if (drop && (req.method === 'HEAD' || total < 2)) {
      stats.dropped++;
      ures.resume();
      return res.socket.destroy();
    }
    pump(ures, res, down, (n) => { stats.bytes_down += n; }, (chunk) => {
      if (!drop) return false;
      // Cut the connection halfway through the body.
      if (sent + chunk.length >= total / 2) {
        stats.dropped++;
        res.write(chunk.subarray(0, Math.max(1, Math.floor(total / 2) - sent)));
        ures.destroy();
        res.socket.destroy();
        return true;
      }
      sent += chunk.length;
      return false;
    });
  });
  ureq.on('error', () => { if (!res.headersSent) { res.writeHead(502); res.end(); } else res.socket.destroy(); });
  pump(req, ureq, up, (n) => { stats.bytes_up += n; });
}

const server = http.createServer((req, res) => {
  if (req.url === '/__throttle__/stats') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end(JSON.stringify(stats));
  }
  const job = { req, res, n: ++stats.requests };
  if (inFlight < concurrency) admit(job); else queue.push(job);
});
server.keepAliveTimeout = 60000;
server.listen(Number(arg('--port', 0)), '127.0.0.1', () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
const stop = () => { server.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
