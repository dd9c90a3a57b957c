// Types for canopy.js (docs/PROTOCOL.md, "From a browser").

export declare const CLOSE: Readonly<{
  GOING_AWAY: 1001;
  POLICY: 1008;
  TOO_BIG: 1009;
  SERVER_ERROR: 1011;
  RESTART: 1012;
  SLOW_CONSUMER: 4000;
}>;

export declare class CanopyError extends Error {
  /** An error frame's code, "slow_consumer", "close_1008", "close_1009", "disconnected", "closed" or "token". */
  code: string;
  closeCode?: number;
}

export interface MessageFrame {
  type: "message";
  topic: string;
  offset: number;
  epoch: string;
  data: unknown;
  key?: string;
}

export interface SubscribedFrame {
  type: "subscribed";
  topic: string;
  offset?: number;
  epoch?: string;
  recovered: boolean;
}

export interface PresenceFrame {
  type: "presence";
  topic: string;
  event: "join" | "leave";
  client: string;
  info?: unknown;
}

export interface SubscribeOptions {
  since?: number;
  epoch?: string;
  presence?: boolean;
  onMessage?: (data: unknown, frame: MessageFrame) => void;
  onRecovered?: (recovered: false, frame: SubscribedFrame) => void;
  onPresence?: (frame: PresenceFrame) => void;
  onSubscribed?: (frame: SubscribedFrame) => void;
  onError?: (error: CanopyError) => void;
}

export interface ClientOptions {
  token?: string;
  getToken?: () => string | Promise<string>;
  refreshBefore?: number;
  heartbeat?: number;
  backoff?: { initial?: number; max?: number };
  onState?: (state: "connecting" | "open" | "closed") => void;
  onError?: (error: CanopyError) => void;
  WebSocket?: typeof WebSocket;
}

export declare class Subscription {
  readonly topic: string;
  readonly offset: number | null;
  readonly epoch: string | null;
  active: boolean;
  unsubscribe(): void;
}

export declare class Client {
  state: "connecting" | "open" | "closed";
  subscribe(topic: string, options?: SubscribeOptions): Subscription;
  publish(topic: string, data: unknown, options?: { key?: string }): Promise<{ offset: number; epoch: string }>;
  presence(topic: string): Promise<Array<{ client: string; info?: unknown }>>;
  close(): void;
}

export declare class Position {
  constructor(since?: number | null, epoch?: string | null);
  offset: number | null;
  epoch: string | null;
  resume(): { since?: number; epoch?: string };
  subscribed(frame: SubscribedFrame): boolean;
  accept(frame: MessageFrame): boolean;
}

export declare function connect(url: string, options?: ClientOptions): Client;
export declare function backoff(attempt: number, limits?: { initial?: number; max?: number }, random?: () => number): number;
export declare function matches(pattern: string, topic: string): boolean;
export declare function expiry(token: string): number;
