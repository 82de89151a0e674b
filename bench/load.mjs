// A small HTTP load generator, run as its own process (the load and the service share the
// machine, as the benchmark asks). Keeps `concurrency` requests in flight over keep-alive
// connections for `seconds` (after `warmup` seconds not counted), each worker taking the next
// body from the list, and prints one JSON line: count, errors, status counts, rps, p50/p90/p99 ms.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';

const [url, method, bodiesFile, authorization, concurrencyArg, secondsArg, warmupArg] = process.argv.slice(2);
const concurrency = Number(concurrencyArg);
const seconds = Number(secondsArg);
const warmup = Number(warmupArg ?? 1);
const bodies = bodiesFile === '-' ? [] : JSON.parse(readFileSync(bodiesFile, 'utf8'));
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const target = new URL(url);

let next = 0;
const latencies = [];
const statuses = {};
let errors = 0;
let exhausted = false;

function once(body) {
  return new Promise((resolve) => {
    const headers = { ...(authorization !== '-' ? { Authorization: authorization } : {}) };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const req = http.request({ host: target.hostname, port: target.port, path: target.pathname, method, agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    req.end(body);
  });
}

async function worker(measureFrom, until) {
  while (performance.now() < until) {
    let body;
    if (bodies.length) {
      if (next >= bodies.length) {
        exhausted = true;
        return;
      }
      body = bodies[next++];
    }
    const t0 = performance.now();
    const status = await once(body);
    const t1 = performance.now();
    if (t0 >= measureFrom) {
      latencies.push(t1 - t0);
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status < 200 || status >= 300) errors++;
    }
  }
}

const start = performance.now();
const measureFrom = start + warmup * 1000;
const until = measureFrom + seconds * 1000;
await Promise.all(Array.from({ length: concurrency }, () => worker(measureFrom, until)));
const elapsed = (Math.min(performance.now(), until) - measureFrom) / 1000;
latencies.sort((a, b) => a - b);
const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
console.log(JSON.stringify({ count: latencies.length, errors, statuses, rps: latencies.length / elapsed, p50: q(0.5), p90: q(0.9), p99: q(0.99), exhausted }));
agent.destroy();
