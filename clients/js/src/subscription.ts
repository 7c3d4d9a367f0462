/** A channel the application subscribed to, as an object with its own events. */

import { Emitter } from "./emitter.js";
import type { HeraldError } from "./errors.js";

/** One message pushed by the server. */
export interface Publication<T = unknown> {
  /** The channel; absent on legacy-style pushes that carry none. */
  channel?: string;
  /** The message type (`notification`, `order_update`, ...). */
  type: string;
  /** The message body, as the backend published it. */
  data: T;
  /** The message id the publish API answered. */
  id?: string;
  /** The history offset, on channels with history. */
  offset?: string;
  /** The publisher's tags, when the message has any. */
  tags?: Record<string, string>;
  /** The whole frame as received. */
  frame: Record<string, unknown>;
  /**
   * Acknowledges this message and every earlier one of its channel (on `ack_required`
   * channels the server then stops redelivering them). Does nothing without an offset.
   */
  ack(): void;
}

/** How a subscription acknowledges messages on an `ack_required` channel. */
export type AckMode = "none" | "auto" | "manual";

/** Options of `client.subscribe()`. */
export interface SubscribeOptions {
  /**
   * `"auto"`: ack each message once every `publication` listener has returned and the
   * promises they returned have resolved, in offset order. `"manual"`: call
   * `publication.ack()`. `"none"` (default): never ack.
   */
  ack?: AckMode;
  /** Resume after this offset on the first subscribe (e.g. one kept in sessionStorage). */
  since?: string;
  /**
   * Only these message types, live and in every replay (the node filters; 1-16 types).
   * Calling `subscribe()` again with other types (or none) replaces the filter.
   */
  types?: string[];
  /**
   * Only messages with these tags: a string asks for that value, an array for one of
   * its values; a message must match every key (the node filters; 1-8 keys of 1-64
   * `A-Z a-z 0-9 _ . : -`, arrays of 1-32 strings). Combines with `types`; calling
   * `subscribe()` again with other tags (or none) replaces the filter.
   */
  tags?: Record<string, string | string[]>;
}

/** A tag condition as the protocol sends it. */
export type TagCondition = { eq: string } | { in: string[] };

/** Events of a `Subscription` whose messages carry data of type `T`. */
export interface SubscriptionEvents<T = unknown> {
  /** A message of this channel, delivered at most once per offset. */
  publication: Publication<T>;
  /**
   * The server confirmed the subscription. `recovered` is present when the SDK asked
   * to resume after an offset: `false` means messages were lost (older than the
   * history kept): refetch the channel's state.
   */
  subscribed: { recovered?: boolean };
  /** The subscription ended (`unsubscribe()`). */
  unsubscribed: Record<string, never>;
  /** The server refused or reported something about this channel, or a handler failed. */
  error: HeraldError;
}

/** State of a subscription. */
export type SubscriptionState = "pending" | "subscribed" | "refused" | "unsubscribed";

/** What the subscription needs from its client. */
export interface SubscriptionHost {
  unsubscribe(sub: Subscription<any>): void;
  lastOffset(channel: string): string | undefined;
}

/** A subscription; `T` is the application's type for the channel's `data` (not checked at run time). */
export class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  /** The channel name. */
  readonly channel: string;
  /** How messages are acknowledged. */
  readonly ack: AckMode;
  /** The message types the node sends for this subscription; `undefined`: all. */
  types: string[] | undefined;
  /** The tag conditions the node applies, keys sorted; `undefined`: none. */
  tags: Record<string, TagCondition> | undefined;
  /** `pending` until the server confirms; `refused` after a refusal (not retried until `subscribe()` is called again). */
  state: SubscriptionState = "pending";
  private host: SubscriptionHost;

  /** @internal created by `HeraldClient.subscribe`. */
  constructor(host: SubscriptionHost, channel: string, ack: AckMode, types?: string[], tags?: Record<string, TagCondition>) {
    super();
    this.host = host;
    this.channel = channel;
    this.ack = ack;
    this.types = types;
    this.tags = tags;
  }

  /** The offset of the newest message delivered on this channel, if any. */
  get offset(): string | undefined {
    return this.host.lastOffset(this.channel);
  }

  /** Leaves the channel. */
  unsubscribe(): void {
    this.host.unsubscribe(this);
  }

  /** @internal */
  fire<K extends keyof SubscriptionEvents<T>>(event: K, value: SubscriptionEvents<T>[K], quiet?: boolean): unknown[] {
    return this.emit(event, value, quiet);
  }
}
