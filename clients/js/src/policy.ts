/**
 * What the SDK does after a connection ends, and how long it waits: the close-code
 * table and the backoff. Kept pure (randomness is passed in) so both are tested
 * directly and documented in one place.
 */

/** What to do after a close. */
export type CloseAction =
  /** Reconnect at once, with a little jitter (node draining, or going away). */
  | "immediate"
  /** Reconnect after exponential backoff with full jitter. */
  | "backoff"
  /** Reconnect after a long wait (the user holds too many connections). */
  | "long"
  /** The token was refused: fetch a fresh one with `getToken()` and retry, or stop. */
  | "token"
  /** A refusal that retrying cannot fix: stop and report it. */
  | "stop";

/** The SDK's reaction to each close code (anything not listed backs off). */
export function closeAction(code: number): CloseAction {
  switch (code) {
    case 1001: // going away: the node saw no traffic, or the server is going down
    case 1012: // service restart: the node is draining
      return "immediate";
    case 1008: // policy violation: sustained flooding
    case 1009: // a frame too big: resending it would fail the same way
    case 4003: // bad_auth: the client broke the auth protocol
      return "stop";
    case 4001: // token refused
      return "token";
    case 4029: // too_many_connections
      return "long";
    default: // 1000, 1006, 1011, 1013 (slow consumer), 4002 (auth_timeout), ...
      return "backoff";
  }
}

/** Reconnect timing, in milliseconds. */
export interface BackoffOptions {
  /** Cap of the first backoff (default 1000). */
  initialMs?: number;
  /** Largest cap (default 30000). */
  maxMs?: number;
  /** Growth of the cap per failed attempt (default 2). */
  factor?: number;
  /** Smallest delay of any backoff, so that no retry loop is tight (default 250). */
  minMs?: number;
  /** Upper bound of the jitter of an "immediate" reconnect (default 1000). */
  immediateMs?: number;
  /** "long" waits between half of this and this (default 60000). */
  longMs?: number;
}

/** `options` with every default filled in. */
export function backoffDefaults(options: BackoffOptions = {}): Required<BackoffOptions> {
  return {
    initialMs: 1000,
    maxMs: 30000,
    factor: 2,
    minMs: 250,
    immediateMs: 1000,
    longMs: 60000,
    ...options,
  };
}

/**
 * The delay before reconnect attempt number `attempt` (0 for the first reconnect after
 * a working connection). Full jitter: uniform between `minMs` and the cap
 * `min(maxMs, initialMs * factor^attempt)`.
 */
export function delayFor(action: CloseAction, attempt: number, options: Required<BackoffOptions>, random: () => number): number {
  const { initialMs, maxMs, factor, minMs, immediateMs, longMs } = options;
  if (action === "immediate") return random() * immediateMs;
  if (action === "long") return longMs / 2 + (random() * longMs) / 2;
  const cap = Math.max(minMs, Math.min(maxMs, initialMs * Math.pow(factor, attempt)));
  return minMs + random() * (cap - minMs);
}
