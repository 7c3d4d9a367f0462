/** The one error type the SDK emits: server `error` frames, refusals and local failures. */
export class HeraldError extends Error {
  /** Machine-readable code: the server's (`forbidden`, `token_expired`, ...) or the SDK's. */
  readonly code: string;
  /** The WebSocket close code, when the error ended a connection. */
  readonly closeCode?: number;
  /** Channels the error names (a server refusal lists every refused channel). */
  readonly channels: string[];
  /** The failure that caused this one (a handler's rejection, a `getToken` failure). */
  readonly cause?: unknown;

  constructor(code: string, message: string, extra: { closeCode?: number; channels?: string[]; cause?: unknown } = {}) {
    super(message);
    this.name = "HeraldError";
    this.code = code;
    this.closeCode = extra.closeCode;
    this.channels = extra.channels || [];
    this.cause = extra.cause;
  }
}
