/**
 * Herald's browser and Node.js client: one `HeraldClient` per page, `subscribe()` per
 * channel. See README.md for the protocol behaviour it implements.
 */
export { HeraldClient, CLIENT_TIMEOUT } from "./client.js";
export type { ClientOptions, ClientEvents, ClientState, WebSocketLike, WebSocketConstructor } from "./client.js";
export { Subscription } from "./subscription.js";
export type { Publication, SubscribeOptions, SubscriptionEvents, SubscriptionState, AckMode, TagCondition } from "./subscription.js";
export { HeraldError } from "./errors.js";
export { compareOffsets, isOffset } from "./offset.js";
export { closeAction, delayFor, backoffDefaults } from "./policy.js";
export type { BackoffOptions, CloseAction } from "./policy.js";
