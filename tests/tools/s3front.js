#!/usr/bin/env node
// An S3 store for the tests: s3rver (from npm) on an internal port, behind a front that checks
// every request's SigV4 signature with AWS's own signer (@smithy/signature-v4), as AWS does.
// s3rver checks access key ids but not V4 signatures; without this front, a signing bug in
// sluice (a key with spaces, a query string, a Range header) would pass the tests silently.
//
// The front also checks x-amz-content-sha256 against the body, as S3 does: a body damaged on
// the way, or a payload hash signed wrongly, is refused (XAmzContentSHA256Mismatch).
//
// Usage: node --openssl-legacy-provider s3front.js --dir DIR [--port N] [--bucket NAME]...
// (s3rver's listing continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider.)
// Prints "PORT n" on stdout once it listens on 127.0.0.1 (port 0: any free port).
// GET /__front__/stats answers the count of each S3 operation seen, as JSON;
// GET /__front__/gets the keys of the GetObject requests, in the order they came (the last
// 100,000), as a JSON list of "bucket/key"; GET /__front__/ranges the same requests as
// "bucket/key range" (the Range header, "-" for none), to tell which bytes were asked twice.
// --refuse-part N answers UploadPart number N with a final 400 (to test aborted uploads).
// Credentials it knows: S3RVER / S3RVER (s3rver's own) and the pairs of KEYS below.
'use strict';
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
const FilesystemStore = require('s3rver/lib/stores/filesystem');
const { SignatureV4 } = require('@smithy/signature-v4');
const { Hash } = require('@smithy/hash-node');

// s3rver 3.7.1 lists a common prefix only if an object sits directly in its folder: with the
// keys a/b/c.jpg and delimiter "/", "a/" is missing (its walk stops at folders below a common
// prefix, and a/ holds only the folder b/). S3 lists "a/". Put back each missing one: a
// folder just below the prefix with an object anywhere under it.
function hasObject(dirPath) {
  for (const e of fs.readdirSync(dirPath, { withFileTypes: true })) {
    if (e.isDirectory() ? hasObject(path.join(dirPath, e.name)) : e.name.endsWith('._S3rver_object'))
      return true;
  }
  return false;
}
const listObjects = FilesystemStore.prototype.listObjects;
FilesystemStore.prototype.listObjects = async function (bucket, options) {
  const r = await listObjects.call(this, bucket, options);
  const { delimiter = '', prefix = '', startAfter = '' } = options;
  if (delimiter !== '/') return r;
  const cut = prefix.lastIndexOf('/') + 1;
  const parent = path.join(this.getBucketPath(bucket), prefix.slice(0, cut));
  const have = new Set(r.commonPrefixes);
  const last = r.objects.length ? r.objects[r.objects.length - 1].key : null;
  let entries = [];
  try { entries = fs.readdirSync(parent, { withFileTypes: true }); } catch (e) { return r; }
  for (const e of entries) {
    const p = prefix.slice(0, cut) + e.name + '/';
    if (!e.isDirectory() || !p.startsWith(prefix) || have.has(p) || p <= startAfter) continue;
    if (r.isTruncated && last !== null && p > last) continue; /* the next page's */
    if (hasObject(path.join(parent, e.name))) have.add(p);
  }
  r.commonPrefixes = [...have].sort();
  return r;
};

const KEYS = {
  S3RVER: 'S3RVER',
  // A secret with the characters that break hand-made signers.
  'sluice-test-key': 'secret with spaces/+=%&?~',
};

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
function args(name) {
  const out = [];
  process.argv.forEach((a, i) => { if (a === name) out.push(process.argv[i + 1]); });
  return out;
}

const dir = arg('--dir');
if (!dir) { console.error('s3front: --dir DIR is required'); process.exit(2); }
for (const [id, secret] of Object.entries(KEYS))
  if (id !== 'S3RVER') AWSAccount.DUMMY_ACCOUNT.createKeyPair(id, secret);

function xmlError(res, status, code, message) {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code>` +
    `<Message>${message}</Message><RequestId>front</RequestId></Error>`;
  res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function parseAuth(h) {
  const m = /^AWS4-HMAC-SHA256 (.*)$/.exec(h || '');
  if (!m) return null;
  const parts = {};
  for (const p of m[1].split(',')) {
    const eq = p.indexOf('=');
    if (eq > 0) parts[p.slice(0, eq).trim()] = p.slice(eq + 1).trim();
  }
  if (!parts.Credential || !parts.SignedHeaders || !parts.Signature) return null;
  const [accessKeyId, date, region, service] = parts.Credential.split('/');
  return { accessKeyId, date, region, service, signed: parts.SignedHeaders.split(';'), signature: parts.Signature };
}

// The query as the signer wants it: decoded names and values; repeated names as arrays.
function parseQuery(raw) {
  const q = {};
  if (!raw) return q;
  for (const pair of raw.split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const k = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
    const v = eq < 0 ? '' : decodeURIComponent(pair.slice(eq + 1));
    if (k in q) q[k] = [].concat(q[k], v); else q[k] = v;
  }
  return q;
}

function amzDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s || '');
  return m ? new Date(Date.UTC(+m[1], m[2] - 1, +m[3], +m[4], +m[5], +m[6])) : null;
}

async function check(req, body) {
  const auth = parseAuth(req.headers.authorization);
  if (!req.headers.authorization) return null; // anonymous: s3rver decides
  if (!auth) return [400, 'AuthorizationHeaderMalformed', 'The authorization header is malformed'];
  const secret = KEYS[auth.accessKeyId];
  if (secret === undefined)
    return [403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.'];
  const payload = req.headers['x-amz-content-sha256'];
  if (!payload) return [400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256'];
  if (payload !== 'UNSIGNED-PAYLOAD' && !payload.startsWith('STREAMING-')) {
    const actual = crypto.createHash('sha256').update(body).digest('hex');
    if (actual !== payload)
      return [400, 'XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed."];
  }
  const date = amzDate(req.headers['x-amz-date']);
  if (!date) return [403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header'];
  const q = req.url.indexOf('?');
  const headers = {};
  for (const name of auth.signed) {
    const v = req.headers[name];
    if (v === undefined) return [403, 'SignatureDoesNotMatch', `Signed header ${name} is missing`];
    headers[name] = Array.isArray(v) ? v.join(',') : v;
  }
  const signer = new SignatureV4({
    credentials: { accessKeyId: auth.accessKeyId, secretAccessKey: secret },
    region: auth.region, service: 's3', sha256: Hash.bind(null, 'sha256'),
    uriEscapePath: false, applyChecksum: false,
  });
  const signed = await signer.sign({
    method: req.method, protocol: 'http:', hostname: '127.0.0.1',
    path: q < 0 ? req.url : req.url.slice(0, q), query: parseQuery(q < 0 ? '' : req.url.slice(q + 1)),
    headers, body,
  }, { signingDate: date, signingRegion: auth.region, signingService: 's3',
       signableHeaders: new Set(auth.signed) });
  const expected = /Signature=([0-9a-f]+)/.exec(signed.headers.authorization)[1];
  const expectedHeaders = /SignedHeaders=([^,]+)/.exec(signed.headers.authorization)[1];
  if (expected !== auth.signature || expectedHeaders !== auth.signed.join(';'))
    return [403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.'];
  return null;
}

// The S3 operation a request is, for the counters.
function operation(req) {
  const q = req.url.indexOf('?') < 0 ? '' : req.url.slice(req.url.indexOf('?') + 1);
  const has = (k) => new RegExp(`(^|&)${k}(=|&|$)`).test(q);
  switch (req.method) {
    case 'POST': return has('uploads') ? 'CreateMultipartUpload' : has('uploadId') ? 'CompleteMultipartUpload' : 'Post';
    case 'PUT': return has('partNumber') ? 'UploadPart' : req.headers['x-amz-copy-source'] ? 'CopyObject' : 'PutObject';
    case 'DELETE': return has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
    case 'HEAD': return 'HeadObject';
    default: return has('list-type') ? 'ListObjectsV2' : /^\/[^/]+\/?(\?|$)/.test(req.url) ? 'ListObjects' : 'GetObject';
  }
}

async function main() {
  const backend = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: dir,
                               configureBuckets: args('--bucket').map((name) => ({ name })) });
  const { port: backendPort } = await backend.run();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const counts = { requests: 0, refused: 0 };
  const gets = [];
  const ranges = [];
  const refusePart = Number(arg('--refuse-part', 0));

  const front = http.createServer((req, res) => {
    if (req.url === '/__front__/stats') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify(counts));
    }
    if (req.url === '/__front__/gets') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify(gets));
    }
    if (req.url === '/__front__/ranges') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify(ranges));
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      counts.requests++;
      let refusal;
      try { refusal = await check(req, body); } catch (e) { refusal = [500, 'InternalError', String(e)]; }
      if (refusal) { counts.refused++; return xmlError(res, ...refusal); }
      const op = operation(req);
      counts[op] = (counts[op] || 0) + 1;
      if (op === 'GetObject') {
        if (gets.length >= 100000) gets.shift();
        const key = decodeURIComponent(new URL(req.url, 'http://x').pathname.slice(1));
        gets.push(key);
        if (ranges.length >= 100000) ranges.shift();
        ranges.push(`${key} ${req.headers.range || '-'}`);
      }
      if (op === 'UploadPart' && refusePart && new RegExp(`partNumber=${refusePart}(&|$)`).test(req.url))
        return xmlError(res, 400, 'InvalidArgument', `Part ${refusePart} refused by the test front`);
      const up = http.request({ host: '127.0.0.1', port: backendPort, method: req.method, path: req.url,
                                headers: { ...req.headers, 'content-length': body.length }, agent }, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
      });
      up.on('error', (e) => { if (!res.headersSent) xmlError(res, 502, 'InternalError', String(e)); else res.destroy(); });
      up.end(body);
    });
  });
  front.keepAliveTimeout = 60000;
  front.listen(Number(arg('--port', 0)), '127.0.0.1', () => {
    process.stdout.write(`PORT ${front.address().port}\n`);
  });
  const stop = () => { front.close(); backend.close().finally(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGUSR1', () => process.stderr.write(JSON.stringify(counts) + '\n'));
}

main().catch((e) => { console.error('s3front:', e); process.exit(1); });
