// The TypeScript client against a real server (started by the Rust test
// `crates/cli/tests/stream_ts.rs`, which passes ECSDB_URL and ECSDB_TOKEN):
// caches equal query results after commits, after a dropped connection
// (resumed), for an area following an entity; refused queries and
// credentials are reported. Exits non-zero on the first failure.
import { EcsdbClient } from "../dist/index.js";

// A hang (a promise that never settles) is a failure, not a stuck test.
setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 30_000).unref();

const url = process.env.ECSDB_URL;
const token = process.env.ECSDB_TOKEN;
if (!url || !token) throw new Error("ECSDB_URL and ECSDB_TOKEN are required");

async function call(method, path, body) {
  const r = await fetch(url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

function assert(cond, msg) {
  if (!cond) throw new Error("assertion failed: " + msg);
}

function same(cache, rows, what) {
  const want = new Map(rows.map((r) => [String(r.id), r]));
  assert(cache.size === want.size, `${what}: ${cache.size} cached rows, query has ${want.size}`);
  for (const [id, r] of want) {
    assert(JSON.stringify(sortKeys(cache.get(id))) === JSON.stringify(sortKeys(r)), `${what}: row ${id} differs`);
  }
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

const create = async (x, y, hp) => (await call("POST", "/v1/entities", { components: { unit: { pos: [x, y], hp } } })).id;
const patch = (id, unit) => call("PATCH", `/v1/entities/${id}`, { components: { unit } });
const query = async (q) => (await call("POST", "/v1/query", q)).rows;

const ids = [];
for (let i = 0; i < 20; i++) ids.push(await create(i * 5, 0, i * 5));
const hpQuery = { with: ["unit"], filters: [{ field: "unit.hp", op: "ge", value: 50 }] };

const db = await EcsdbClient.connect({ url, token });
let changes = 0;
db.on("change", () => changes++);
const hp = await db.subscribe("hp", hpQuery);
same(hp.rows, await query(hpQuery), "initial");

await patch(ids[0], { hp: 99 });
await patch(ids[19], { hp: 1 });
await db.ping();
same(hp.rows, await query(hpQuery), "after commits");
assert(changes > 0, "change callbacks ran");

// Dropped: commits meanwhile arrive after the resume.
const reconnected = new Promise((r) => db.on("reconnect", r));
db.disconnect();
await patch(ids[1], { hp: 77 });
await call("DELETE", `/v1/entities/${ids[0]}`);
await reconnected;
await db.ping();
same(hp.rows, await query(hpQuery), "after a resume");

// An area following an entity (no hysteresis: exact).
const near = { field: "unit.pos", entity: ids[10], radius: 12 };
const area = await db.subscribe("area", { with: ["unit"] }, { near, hysteresis: 0 });
same(area.rows, await query({ with: ["unit"], near }), "area initial");
await patch(ids[10], { pos: [80, 0] });
await db.ping();
same(area.rows, await query({ with: ["unit"], near }), "area after moving");

// A refused query rejects; the connection stays usable.
let refused = null;
await db.subscribe("bad", { with: ["nope"] }).catch((e) => (refused = e));
assert(refused && /nope/.test(refused.message), "a bad query is refused with the reason");
await db.ping();

// A bad credential: closed with 4401, reported, not retried; later calls reject.
const bad = await EcsdbClient.connect({ url, token: "garbage" });
const pending = bad.ping().then(() => "resolved", (e) => e.message);
const closed = await new Promise((r) => bad.on("close", r));
assert(closed.code === 4401, `bad token closed with ${closed.code}`);
assert(/4401/.test(await pending), "a ping pending at the refusal is rejected");
let later = null;
await bad.subscribe("x", {}).catch((e) => (later = e));
assert(later && /4401/.test(later.message), "subscribing after a refusal rejects");

// Reconnecting survives failed attempts (a server down for a while): the
// first two reconnects go to a closed port.
let failures = 0;
class Flaky extends WebSocket {
  constructor(u) {
    super(failures > 0 && failures-- > 0 ? "ws://127.0.0.1:1/v1/stream" : u);
  }
}
const flaky = await EcsdbClient.connect({ url, token, WebSocket: Flaky, maxBackoffMs: 100 });
const f = await flaky.subscribe("hp", hpQuery);
failures = 2;
const back = new Promise((r) => flaky.on("reconnect", r));
flaky.disconnect();
await patch(ids[2], { hp: 66 });
await back;
await flaky.ping();
same(f.rows, await query(hpQuery), "after failed reconnects");
// Closing rejects what is pending and what comes after.
const flying = flaky.ping().then(() => "resolved", (e) => e.message);
flaky.close();
assert(/closed/.test(await flying), "close() rejects a pending ping");
let afterClose = null;
await flaky.ping().catch((e) => (afterClose = e));
assert(afterClose, "ping() after close() rejects");

db.close();
console.log("ok: ts client");
