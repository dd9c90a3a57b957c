// canopy.js: a browser client for Canopy's topics (docs/PROTOCOL.md).
//
// One WebSocket carries every subscription. After a drop it reconnects with
// jittered backoff and resubscribes each exact topic from the last offset it
// delivered, so the app sees every message once and in order, or is told through
// onRecovered(false) that some were lost and it must reload its state.
// No dependencies; an ES module for browsers and bundlers.

/** Close codes the server sends (docs/PROTOCOL.md, "Close codes"). */
export const CLOSE = Object.freeze({
  GOING_AWAY: 1001,
  POLICY: 1008,
  TOO_BIG: 1009,
  SERVER_ERROR: 1011,
  RESTART: 1012,
  SLOW_CONSUMER: 4000,
});

// The same frames would be refused again: a reconnect cannot help.
const FATAL = new Set([CLOSE.POLICY, CLOSE.TOO_BIG]);

/** A refusal (an error frame's code) or a close the app must hear about. */
export class CanopyError extends Error {
  /** @param {string} code @param {string} message @param {number} [closeCode] */
  constructor(code, message, closeCode) {
    super(`${code}: ${message}`);
    this.name = "CanopyError";
    this.code = code;
    this.closeCode = closeCode;
  }
}

/**
 * Milliseconds to wait before reconnect attempt `attempt` (1, 2, ...): an
 * exponential ceiling with "equal jitter", so that the clients of a restarted
 * server spread out but none retries at once in a loop.
 * @param {number} attempt
 * @param {{initial?: number, max?: number}} [limits]
 * @param {() => number} [random]
 */
export function backoff(attempt, { initial = 500, max = 15000 } = {}, random = Math.random) {
  const ceiling = Math.min(max, initial * 2 ** Math.min(Math.max(attempt, 1) - 1, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Whether subscription `pattern` (a topic, `prefix.*` or `*`) covers `topic`. */
export function matches(pattern, topic) {
  if (pattern === "*" || pattern === topic) return true;
  return pattern.endsWith(".*") && topic.startsWith(pattern.slice(0, -1));
}

/** Seconds since the epoch at which a JWT expires, or Infinity. */
export function expiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part)).exp;
    return typeof exp === "number" ? exp : Infinity;
  } catch {
    return Infinity;
  }
}

/**
 * Where one exact topic's reader stands: the epoch and the last offset delivered.
 * Pure bookkeeping, so that the rule "once, in order, or say so" lives in one place.
 */
export class Position {
  /** @param {number|null} [since] @param {string|null} [epoch] */
  constructor(since = null, epoch = null) {
    this.offset = since;
    this.epoch = epoch;
  }

  /** The `since` and `epoch` fields of a subscribe that resumes here. */
  resume() {
    if (this.offset === null) return {};
    return this.epoch === null ? { since: this.offset } : { since: this.offset, epoch: this.epoch };
  }

  /**
   * A `subscribed` reply. False when messages were lost (`recovered: false`):
   * delivery goes on from the topic's current offset.
   */
  subscribed(frame) {
    if (frame.offset === undefined) return frame.recovered !== false; // a pattern
    const lost = frame.recovered === false;
    if (lost || this.offset === null) this.offset = frame.offset;
    this.epoch = frame.epoch;
    return !lost;
  }

  /** A `message`: true to deliver it, false for one delivered already. */
  accept(frame) {
    if (frame.epoch === this.epoch && this.offset !== null && frame.offset <= this.offset) {
      return false;
    }
    this.epoch = frame.epoch;
    this.offset = frame.offset;
    return true;
  }
}

/**
 * One subscription, kept across reconnects until `unsubscribe()`.
 * A pattern's messages are counted per topic; a pattern cannot resume, so after
 * a reconnect its `onRecovered(false)` is called.
 */
export class Subscription {
  constructor(client, topic, options) {
    this.client = client;
    this.topic = topic;
    this.options = options;
    this.exact = !topic.endsWith("*");
    /** @type {Map<string, Position>} */
    this.positions = new Map();
    if (this.exact) this.positions.set(topic, new Position(options.since ?? null, options.epoch ?? null));
    this.active = true;
    this.seen = false; // subscribed once already: a pattern's resubscribe lost messages
  }

  /** The last offset delivered (exact topics). */
  get offset() {
    return this.positions.get(this.topic)?.offset ?? null;
  }

  get epoch() {
    return this.positions.get(this.topic)?.epoch ?? null;
  }

  frame(id, token) {
    const frame = { op: "subscribe", topic: this.topic, id };
    if (this.exact) Object.assign(frame, this.positions.get(this.topic).resume());
    if (this.options.presence) frame.presence = true;
    if (token) frame.token = token;
    return frame;
  }

  subscribed(frame) {
    const recovered = this.exact ? this.positions.get(this.topic).subscribed(frame) : !this.seen;
    if (!this.exact) this.positions.clear();
    this.seen = true;
    this.options.onSubscribed?.(frame);
    if (!recovered || frame.recovered === false) this.options.onRecovered?.(false, frame);
  }

  deliver(frame) {
    let position = this.positions.get(frame.topic);
    if (!position) this.positions.set(frame.topic, (position = new Position()));
    if (position.accept(frame)) this.options.onMessage?.(frame.data, frame);
  }

  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this.client._unsubscribe(this);
  }
}

/**
 * One connection to a Canopy server's `/ws`, reconnecting until `close()`.
 * `state` is "connecting", "open" or "closed".
 */
export class Client {
  /**
   * @param {string} url the `/ws` URL (ws: or wss:)
   * @param {object} [options]
   * @param {string} [options.token] a token (JWT) for the connection and its frames
   * @param {() => string|Promise<string>} [options.getToken] a fresh token, asked for
   *   before the first connect, when the token expires within `refreshBefore`
   *   milliseconds, and when the server answers `invalid_token`
   * @param {number} [options.refreshBefore] default 30000
   * @param {number} [options.heartbeat] ping every this many ms; a connection silent
   *   for two of them is given up and replaced (default 10000)
   * @param {{initial?: number, max?: number}} [options.backoff] reconnect delays, ms
   * @param {(state: string) => void} [options.onState]
   * @param {(error: CanopyError) => void} [options.onError]
   * @param {typeof WebSocket} [options.WebSocket]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.token = options.token ?? null;
    this.state = "connecting";
    this.attempt = 0;
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    this.pending = new Map(); // request id -> {frame, resolve, reject, sub}
    this.outbox = []; // requests made while disconnected
    this.nextId = 1;
    this.ws = null;
    this.timers = new Set();
    this._open();
  }

  /**
   * Subscribe to a topic or pattern. Options: `since` and `epoch` to start from
   * (exact topics), `presence`, and the callbacks `onMessage(data, frame)`,
   * `onRecovered(false, frame)`, `onPresence(frame)`, `onSubscribed(frame)`,
   * `onError(error)` (the subscription was refused and is dropped).
   */
  subscribe(topic, options = {}) {
    if (this.state === "closed") throw new CanopyError("closed", "the client was closed");
    if (this.subscriptions.has(topic)) throw new CanopyError("already_subscribed", topic);
    const sub = new Subscription(this, topic, options);
    this.subscriptions.set(topic, sub);
    if (this.state === "open") this._subscribe(sub);
    return sub;
  }

  /** Resolves with `{offset, epoch}` once the server has published it. */
  publish(topic, data, { key } = {}) {
    const frame = { op: "publish", topic, data };
    if (key !== undefined) frame.key = key;
    return this._request(frame, true).then((reply) => ({ offset: reply.offset, epoch: reply.epoch }));
  }

  /** Resolves with the clients present on `topic`. */
  presence(topic) {
    return this._request({ op: "presence", topic }, false).then((reply) => reply.clients);
  }

  /** Close for good; pending requests are rejected. */
  close() {
    this._setState("closed");
    this._drop(1000, "closed by the client");
    this._fail(new CanopyError("closed", "the client was closed"));
  }

  _unsubscribe(sub) {
    this.subscriptions.delete(sub.topic);
    this._send({ op: "unsubscribe", topic: sub.topic });
  }

  _request(frame, withToken) {
    if (this.state === "closed") return Promise.reject(new CanopyError("closed", "the client was closed"));
    return new Promise((resolve, reject) => {
      const request = { frame, withToken, resolve, reject };
      if (this.state === "open") this._sendRequest(request);
      else this.outbox.push(request);
    });
  }

  async _sendRequest(request) {
    const id = this.nextId++;
    this.pending.set(id, request);
    const token = request.withToken ? await this._frameToken() : null;
    this._send({ ...request.frame, id, ...(token ? { token } : {}) });
  }

  async _subscribe(sub, retried = false) {
    const id = this.nextId++;
    this.pending.set(id, { sub, retried });
    this._send(sub.frame(id, await this._frameToken()));
  }

  async _frameToken() {
    try {
      return await this._token();
    } catch (error) {
      // The server will judge the token we have; its answer decides what happens.
      this.options.onError?.(new CanopyError("token", `getToken failed: ${error}`));
      return this.token;
    }
  }

  async _token(stale = false) {
    const { getToken, refreshBefore = 30000 } = this.options;
    const soon = this.token && expiry(this.token) * 1000 - Date.now() < refreshBefore;
    if (getToken && (stale || !this.token || soon)) this.token = await getToken();
    return this.token;
  }

  async _open() {
    let token;
    try {
      token = await this._token();
    } catch (error) {
      return this._retry(new CanopyError("token", `getToken failed: ${error}`));
    }
    if (this.state === "closed") return;
    const url = new URL(this.url, globalThis.location?.href);
    url.protocol = url.protocol.replace(/^http/, "ws");
    if (token) url.searchParams.set("token", token);
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    const ws = (this.ws = new WS(url.href));
    ws.onopen = () => this._opened(ws);
    ws.onmessage = (event) => ws === this.ws && this._receive(JSON.parse(event.data));
    ws.onclose = (event) => ws === this.ws && this._closed(event.code, event.reason);
  }

  _opened(ws) {
    if (ws !== this.ws) return;
    this._setState("open");
    this.silent = 0;
    this._every(this.options.heartbeat ?? 10000, ws, () => {
      // Nothing since the last ping's tick: the network dropped the connection
      // without a close; a browser would wait minutes to notice.
      if (this.silent++ >= 1) this._closed(1006, "no reply to ping");
      else this._send({ op: "ping" });
    });
    this._every(this.options.backoff?.max ?? 15000, ws, () => (this.attempt = 0), true);
    for (const sub of this.subscriptions.values()) this._subscribe(sub);
    for (const request of this.outbox.splice(0)) this._sendRequest(request);
  }

  _receive(frame) {
    this.silent = 0;
    const waiting = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    if (waiting) this.pending.delete(frame.id);
    if (frame.type === "error") return this._refused(frame, waiting);
    if (frame.type === "subscribed") {
      const sub = this.subscriptions.get(frame.topic);
      if (sub) sub.subscribed(frame);
    } else if (frame.type === "message") {
      for (const sub of this.subscriptions.values()) {
        if (matches(sub.topic, frame.topic)) sub.deliver(frame);
      }
    } else if (frame.type === "presence" && frame.event) {
      for (const sub of this.subscriptions.values()) {
        if (matches(sub.topic, frame.topic)) sub.options.onPresence?.(frame);
      }
    } else if (waiting?.resolve) {
      waiting.resolve(frame);
    }
  }

  async _refused(frame, waiting) {
    const error = new CanopyError(frame.code, frame.message);
    if (frame.code === "invalid_token" && this.options.getToken) {
      // Expired or revoked: ask for a new one and send the refused frame again, once.
      try {
        await this._token(true);
      } catch {
        /* reported below */
      }
      if (waiting && !waiting.retried) {
        waiting.retried = true;
        if (waiting.sub) return this._subscribe(waiting.sub, true);
        return this._sendRequest(waiting);
      }
      if (!waiting) return; // the connect's token: the next frames carry the new one
    }
    if (waiting?.sub && frame.code === "unavailable") {
      // The broker is down: nothing was subscribed; try again, as the protocol says.
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        if (waiting.sub.active) this._subscribe(waiting.sub);
      }, backoff(1, this.options.backoff));
      this.timers.add(timer);
    } else if (waiting?.sub) {
      this.subscriptions.delete(waiting.sub.topic);
      waiting.sub.active = false;
      waiting.sub.options.onError?.(error);
    } else if (waiting?.reject) {
      waiting.reject(error);
    }
    this.options.onError?.(error);
  }

  _closed(code, reason) {
    this._drop(1000, "");
    this._fail(new CanopyError("disconnected", "the connection closed before the reply", code));
    if (this.state === "closed") return;
    if (FATAL.has(code)) {
      this._setState("closed");
      this.options.onError?.(new CanopyError(`close_${code}`, reason || "refused", code));
      return;
    }
    if (code === CLOSE.SLOW_CONSUMER) {
      this.options.onError?.(new CanopyError("slow_consumer", reason, code));
    }
    this._retry();
  }

  _retry(error) {
    if (error) this.options.onError?.(error);
    if (this.state === "closed") return;
    this._setState("connecting");
    this.attempt += 1;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this._open();
    }, backoff(this.attempt, this.options.backoff));
    this.timers.add(timer);
  }

  _drop(code, reason) {
    for (const timer of this.timers) {
      clearTimeout(timer);
      clearInterval(timer);
    }
    this.timers.clear();
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= 1) ws.close(code, reason);
  }

  _fail(error) {
    // Sent and not answered: whether a publish took effect is unknown to us.
    for (const request of this.pending.values()) request.reject?.(error);
    this.pending.clear();
    if (this.state === "closed") for (const request of this.outbox.splice(0)) request.reject(error);
  }

  _every(ms, ws, tick, once = false) {
    const timer = (once ? setTimeout : setInterval)(() => ws === this.ws && tick(), ms);
    this.timers.add(timer);
  }

  _send(frame) {
    if (this.ws?.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.options.onState?.(state);
  }
}

/** Connect to `url` (a `/ws` URL); see {@link Client}. */
export function connect(url, options) {
  return new Client(url, options);
}
