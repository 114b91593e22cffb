// Drives the official, unmodified @vercel/connect package against a Valetkey broker.
//
// The package always talks to https://api.vercel.com (or a region's host); this runner's only
// intervention is a fetch wrapper that sends those requests to the broker instead, and records
// each request's method, path and body so the test can see exactly what the package sent.
//
// Input (stdin, JSON): {"baseUrl": "...", "token": "...", "calls": [{"op", "connector", "params",
// "options"}]}, with op one of getTokenResponse, startAuthorization, getConnectorMetadata,
// revokeToken. Output (stdout, JSON): {"results": [...], "requests": [...]}; a result is
// {"ok": true, "value": ...} or {"ok": false, "name", "code", "status", "message"}.
import {
  getConnectorMetadata,
  getTokenResponse,
  revokeToken,
  startAuthorization,
} from '@vercel/connect';

const input = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => { text += chunk; });
  process.stdin.on('end', () => resolve(text));
}));

const requests = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (url, init = {}) => {
  const target = new URL(String(url));
  if (target.hostname !== 'api.vercel.com') {
    throw new Error(`the package called an unexpected host: ${target.hostname}`);
  }
  requests.push({
    method: init.method ?? 'GET',
    path: target.pathname,
    body: init.body === undefined ? null : JSON.parse(init.body),
  });
  return realFetch(`${input.baseUrl}${target.pathname}${target.search}`, init);
};

const operations = { getConnectorMetadata, getTokenResponse, revokeToken, startAuthorization };
const results = [];
for (const call of input.calls) {
  const operation = operations[call.op];
  const options = { vercelToken: input.token, ...(call.options ?? {}) };
  try {
    const value = call.op === 'getConnectorMetadata'
      ? await operation(call.connector, options)
      : await operation(call.connector, call.params ?? {}, options);
    results.push({ ok: true, value: value ?? null });
  } catch (error) {
    results.push({
      ok: false,
      name: error.name,
      code: error.code ?? null,
      status: error.status ?? null,
      message: String(error.message),
    });
  }
}
process.stdout.write(JSON.stringify({ results, requests }));
