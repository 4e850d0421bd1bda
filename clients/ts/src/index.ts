/**
 * ecsdb live subscriptions client (`GET /v1/stream`, see docs/API.md).
 *
 * Keeps a local cache of each subscription's rows, applies the server's
 * deltas to it, calls change callbacks, and — when the connection drops —
 * reconnects and resumes every subscription from the last sequence it
 * applied. No dependencies: it uses the platform's `WebSocket` (browsers,
 * Deno, Node 22+; Node 20 with `--experimental-websocket`, or pass one).
 *
 * ```ts
 * const db = await EcsdbClient.connect({ url: "http://localhost:8080", token });
 * const near = await db.subscribe("near", { with: ["player"] },
 *   { near: { field: "transform.position", entity: me, radius: 50 } });
 * near.onChange((c) => render(near.rows));
 * ```
 *
 * Cache rules (the protocol's): `initial` replaces a subscription's rows;
 * in a `delta`, `entered` rows are put whole, `changed` rows carry only the
 * fields that changed and are merged into the cached row, `left` ids are
 * removed. A subscription's `seq` is the sequence of the last message
 * applied to it.
 */

/** A result row: `{"id", "<table>": {"<field>": value}}`. */
export interface Row {
  id: number | string;
  [table: string]: unknown;
}

/** What changed in a subscription's cache. */
export type Change =
  | { kind: "reset"; sub: string }
  | { kind: "put"; sub: string; id: string; row: Row }
  | { kind: "update"; sub: string; id: string; row: Row; fields: Row }
  | { kind: "remove"; sub: string; id: string };

export interface SubscribeOptions {
  /** Follow an area: `{field, entity | point, radius}`. */
  near?: { field: string; entity?: number | string; point?: number[]; radius: number };
  /** Bytes per second for this subscription (nearest rows first). */
  bytesPerSecond?: number;
  /** Fraction of the `near` radius an entity may stray past before it leaves. */
  hysteresis?: number;
}

type WebSocketCtor = new (url: string) => WebSocket;

export interface ClientOptions {
  /** `http(s)://host:port` or `ws(s)://host:port`. */
  url: string;
  /** A session token or an API key. */
  token: string;
  /** A WebSocket implementation (default: the global one). */
  WebSocket?: WebSocketCtor;
  /**
   * A zstd decoder; when given, the server sends compressed binary frames
   * (`?compression=zstd`), else plain JSON text (`?compression=none`).
   */
  decompress?: (data: Uint8Array) => Uint8Array | Promise<Uint8Array>;
  /** Reconnect and resume when the connection drops (default true). */
  autoResume?: boolean;
  /** Longest wait between reconnect attempts, ms (default 5000). */
  maxBackoffMs?: number;
}

/** Close codes after which reconnecting cannot help. */
const FATAL = new Set([4401, 4403, 1008, 1009]);

/** One subscription and its cache. */
export class Subscription {
  /** Rows by entity id (as a string). */
  readonly rows = new Map<string, Row>();
  /** Sequence of the last message applied (0 before the first). */
  seq = 0;
  /** Rows the server holds back (budget or slow reading). */
  pending = 0;
  /** The server run `seq` belongs to (resumes need it). */
  epoch: string | undefined = undefined;
  private callbacks: ((c: Change) => void)[] = [];

  constructor(
    readonly id: string,
    readonly query: unknown,
    readonly options: SubscribeOptions,
  ) {}

  /** Call `cb` for every change to this cache; returns an unsubscriber. */
  onChange(cb: (c: Change) => void): () => void {
    this.callbacks.push(cb);
    return () => {
      this.callbacks = this.callbacks.filter((x) => x !== cb);
    };
  }

  /** @internal */
  emit(c: Change): void {
    for (const cb of this.callbacks) cb(c);
  }

  /** @internal The subscribe message (resuming from `fromSeq`). */
  message(fromSeq?: number): Record<string, unknown> {
    const m: Record<string, unknown> = { type: "subscribe", id: this.id, query: this.query };
    if (this.options.near) m.near = this.options.near;
    if (this.options.bytesPerSecond !== undefined) m.budget = { bytes_per_second: this.options.bytesPerSecond };
    if (this.options.hysteresis !== undefined) m.hysteresis = this.options.hysteresis;
    if (fromSeq !== undefined && fromSeq > 0 && this.epoch !== undefined) {
      m.from_seq = fromSeq;
      m.epoch = this.epoch;
    }
    return m;
  }
}

type Listener = (v: any) => void;

/** A stream connection with its subscriptions' caches. */
export class EcsdbClient {
  private ws: WebSocket | null = null;
  private readonly subs = new Map<string, Subscription>();
  private readonly listeners = new Map<string, Listener[]>();
  private waiting = new Map<string, { resolve: (s: Subscription) => void; reject: (e: Error) => void }>();
  private pongs: { resolve: (seq: number) => void; reject: (e: Error) => void }[] = [];
  private closed = false;
  /** Set when the server refused for good (bad credentials and the like). */
  private fatal: Error | null = null;
  private backoff = 50;
  /** Incoming messages are applied one at a time, in order. */
  private queue: Promise<void> = Promise.resolve();

  private constructor(private readonly opts: ClientOptions) {}

  /** Connect and authenticate. */
  static async connect(opts: ClientOptions): Promise<EcsdbClient> {
    const c = new EcsdbClient(opts);
    await c.open();
    return c;
  }

  /** Listen to `change` (every {@link Change}), `behind`, `error`, `reconnect` or `close`. */
  on(event: "change" | "behind" | "error" | "reconnect" | "close", cb: Listener): void {
    const l = this.listeners.get(event) ?? [];
    l.push(cb);
    this.listeners.set(event, l);
  }

  private fire(event: string, v: unknown): void {
    for (const cb of this.listeners.get(event) ?? []) cb(v);
  }

  /** A subscription by id. */
  subscription(id: string): Subscription | undefined {
    return this.subs.get(id);
  }

  /** Subscribe to `query` (the JSON of `/v1/query`); resolves with the first rows. */
  subscribe(id: string, query: unknown, options: SubscribeOptions = {}): Promise<Subscription> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.subs.has(id)) return Promise.reject(new Error(`subscription ${id} exists`));
    const sub = new Subscription(id, query, options);
    this.subs.set(id, sub);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.send(sub.message());
    });
  }

  /** End a subscription (its cache is dropped at once). */
  unsubscribe(id: string): void {
    this.subs.delete(id);
    this.send({ type: "unsubscribe", id });
  }

  /** Resolves with the server's sequence once every earlier message is applied. */
  ping(): Promise<number> {
    if (this.fatal) return Promise.reject(this.fatal);
    return new Promise((resolve, reject) => {
      this.pongs.push({ resolve, reject });
      this.send({ type: "ping" });
    });
  }

  /** Tell the server the sequence applied (for its lag figures). */
  ack(): void {
    let seq = Infinity;
    for (const s of this.subs.values()) seq = Math.min(seq, s.seq);
    if (seq !== Infinity) this.send({ type: "ack", seq });
  }

  /** Drop the connection as a network failure would (it resumes). */
  disconnect(): void {
    this.ws?.close();
  }

  /** Close for good: pending and later calls reject. */
  close(): void {
    this.closed = true;
    this.fail(new Error("the client was closed"));
    this.ws?.close(1000);
  }

  /** Refuse everything pending and to come with `e`. */
  private fail(e: Error): void {
    this.fatal = e;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
    for (const p of this.pongs) p.reject(e);
    this.pongs = [];
  }

  private send(m: unknown): void {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(m));
  }

  private streamUrl(): string {
    const base = this.opts.url.replace(/\/$/, "").replace(/^http(s?):\/\//, "ws$1://");
    return `${base}/v1/stream?compression=${this.opts.decompress ? "zstd" : "none"}`;
  }

  private open(): Promise<void> {
    const Ctor: WebSocketCtor | undefined = this.opts.WebSocket ?? (globalThis as any).WebSocket;
    if (!Ctor) return Promise.reject(new Error("no WebSocket implementation: pass options.WebSocket"));
    return new Promise((resolve, reject) => {
      let ws: WebSocket;
      try {
        ws = new Ctor(this.streamUrl());
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      ws.binaryType = "arraybuffer";
      let opened = false;
      let failed = false;
      // Some implementations (Node 20) report a failed connection with
      // `error` alone, others with `error` then `close`: settle once.
      const fail = (why: string) => {
        if (opened || failed) return;
        failed = true;
        reject(new Error(why));
      };
      ws.onopen = () => {
        opened = true;
        this.ws = ws;
        this.backoff = 50;
        // Browsers cannot set headers on a WebSocket: the first message authenticates.
        ws.send(JSON.stringify({ type: "auth", token: this.opts.token }));
        for (const s of this.subs.values()) ws.send(JSON.stringify(s.message(s.seq)));
        resolve();
      };
      ws.onmessage = (ev: MessageEvent) => {
        this.queue = this.queue.then(() => this.receive(ev.data)).catch((e) => this.fire("error", e));
      };
      ws.onclose = (ev: CloseEvent) => {
        if (this.ws === ws) this.ws = null;
        if (!opened) {
          fail(`connection failed (${ev.code}) ${ev.reason}`);
          return;
        }
        this.fire("close", { code: ev.code, reason: ev.reason });
        if (FATAL.has(ev.code)) {
          const e = new Error(`closed by the server (${ev.code}): ${ev.reason}`);
          this.fail(e);
          this.fire("error", e);
          return;
        }
        if (!this.closed && this.opts.autoResume !== false) this.reconnect();
      };
      ws.onerror = () => fail("connection failed");
    });
  }

  private reconnect(): void {
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.opts.maxBackoffMs ?? 5000);
    setTimeout(() => {
      if (this.closed) return;
      this.open().then(
        () => this.fire("reconnect", null),
        () => this.reconnect(),
      );
    }, wait);
  }

  private async receive(data: unknown): Promise<void> {
    let text: string;
    if (typeof data === "string") {
      text = data;
    } else {
      const bytes = new Uint8Array(data as ArrayBuffer);
      const raw = this.opts.decompress ? await this.opts.decompress(bytes) : bytes;
      text = new TextDecoder().decode(raw);
    }
    this.apply(JSON.parse(text));
  }

  private apply(m: any): void {
    const sub = typeof m.id === "string" ? this.subs.get(m.id) : undefined;
    switch (m.type) {
      case "initial": {
        if (!sub) return;
        sub.rows.clear();
        sub.emit({ kind: "reset", sub: sub.id });
        this.fire("change", { kind: "reset", sub: sub.id });
        for (const r of m.rows as Row[]) this.put(sub, r);
        sub.seq = m.seq;
        sub.pending = 0;
        sub.epoch = m.epoch;
        this.settle(sub);
        return;
      }
      case "delta": {
        if (!sub) return;
        for (const r of m.entered as Row[]) this.put(sub, r);
        for (const c of m.changed as Row[]) {
          const id = String(c.id);
          const row = sub.rows.get(id);
          // A change to a row the cache lacks is not guessed at.
          if (!row) continue;
          for (const [table, fields] of Object.entries(c)) {
            if (table === "id") continue;
            row[table] = { ...((row[table] as object) ?? {}), ...(fields as object) };
          }
          const change: Change = { kind: "update", sub: sub.id, id, row, fields: c };
          sub.emit(change);
          this.fire("change", change);
        }
        for (const l of m.left as (number | string)[]) {
          const id = String(l);
          if (sub.rows.delete(id)) {
            const change: Change = { kind: "remove", sub: sub.id, id };
            sub.emit(change);
            this.fire("change", change);
          }
        }
        sub.seq = m.seq;
        sub.pending = m.pending ?? 0;
        if (typeof m.epoch === "string") sub.epoch = m.epoch;
        this.settle(sub);
        return;
      }
      case "pong": {
        const p = this.pongs.shift();
        if (p) p.resolve(m.seq);
        return;
      }
      case "behind":
        this.fire("behind", m);
        return;
      case "error": {
        const e = new Error(m.message);
        const w = typeof m.id === "string" ? this.waiting.get(m.id) : undefined;
        if (w) {
          this.waiting.delete(m.id);
          this.subs.delete(m.id);
          w.reject(e);
        } else if (sub && !String(m.message).includes("exists; unsubscribe first")) {
          // The server ended this subscription.
          this.subs.delete(sub.id);
        }
        this.fire("error", e);
        return;
      }
      default:
        return;
    }
  }

  private put(sub: Subscription, r: Row): void {
    const id = String(r.id);
    sub.rows.set(id, r);
    const change: Change = { kind: "put", sub: sub.id, id, row: r };
    sub.emit(change);
    this.fire("change", change);
  }

  private settle(sub: Subscription): void {
    const w = this.waiting.get(sub.id);
    if (w) {
      this.waiting.delete(sub.id);
      w.resolve(sub);
    }
  }
}
