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
export type Change = {
    kind: "reset";
    sub: string;
} | {
    kind: "put";
    sub: string;
    id: string;
    row: Row;
} | {
    kind: "update";
    sub: string;
    id: string;
    row: Row;
    fields: Row;
} | {
    kind: "remove";
    sub: string;
    id: string;
};
export interface SubscribeOptions {
    /** Follow an area: `{field, entity | point, radius}`. */
    near?: {
        field: string;
        entity?: number | string;
        point?: number[];
        radius: number;
    };
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
/** One subscription and its cache. */
export declare class Subscription {
    readonly id: string;
    readonly query: unknown;
    readonly options: SubscribeOptions;
    /** Rows by entity id (as a string). */
    readonly rows: Map<string, Row>;
    /** Sequence of the last message applied (0 before the first). */
    seq: number;
    /** Rows the server holds back (budget or slow reading). */
    pending: number;
    /** The server run `seq` belongs to (resumes need it). */
    epoch: string | undefined;
    private callbacks;
    constructor(id: string, query: unknown, options: SubscribeOptions);
    /** Call `cb` for every change to this cache; returns an unsubscriber. */
    onChange(cb: (c: Change) => void): () => void;
    /** @internal */
    emit(c: Change): void;
    /** @internal The subscribe message (resuming from `fromSeq`). */
    message(fromSeq?: number): Record<string, unknown>;
}
type Listener = (v: any) => void;
/** A stream connection with its subscriptions' caches. */
export declare class EcsdbClient {
    private readonly opts;
    private ws;
    private readonly subs;
    private readonly listeners;
    private waiting;
    private pongs;
    private closed;
    /** Set when the server refused for good (bad credentials and the like). */
    private fatal;
    private backoff;
    /** Incoming messages are applied one at a time, in order. */
    private queue;
    private constructor();
    /** Connect and authenticate. */
    static connect(opts: ClientOptions): Promise<EcsdbClient>;
    /** Listen to `change` (every {@link Change}), `behind`, `error`, `reconnect` or `close`. */
    on(event: "change" | "behind" | "error" | "reconnect" | "close", cb: Listener): void;
    private fire;
    /** A subscription by id. */
    subscription(id: string): Subscription | undefined;
    /** Subscribe to `query` (the JSON of `/v1/query`); resolves with the first rows. */
    subscribe(id: string, query: unknown, options?: SubscribeOptions): Promise<Subscription>;
    /** End a subscription (its cache is dropped at once). */
    unsubscribe(id: string): void;
    /** Resolves with the server's sequence once every earlier message is applied. */
    ping(): Promise<number>;
    /** Tell the server the sequence applied (for its lag figures). */
    ack(): void;
    /** Drop the connection as a network failure would (it resumes). */
    disconnect(): void;
    /** Close for good: pending and later calls reject. */
    close(): void;
    /** Refuse everything pending and to come with `e`. */
    private fail;
    private send;
    private streamUrl;
    private open;
    private reconnect;
    private receive;
    private apply;
    private put;
    private settle;
}
export {};
