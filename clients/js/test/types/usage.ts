// Compiled (never run) by `npm run typecheck`: the published declarations type an
// application's ordinary use, and reject what the API does not accept.
import { HeraldClient, HeraldError, type Publication, type Subscription } from "../../dist/index.js";

const client = new HeraldClient({
  url: "wss://push.example.com/ws/notifications/",
  getToken: async () => "token",
  WebSocket, // the DOM constructor fits the option
  backoff: { initialMs: 500 },
});
const orders: Subscription = client.subscribe("orders", { ack: "auto" });
orders.on("publication", async (p: Publication) => {
  const offset: string | undefined = p.offset;
  void offset;
});
orders.on("subscribed", ({ recovered }) => {
  const lost: boolean = recovered === false;
  void lost;
});
const off = client.on("error", (e: HeraldError) => console.log(e.code, e.closeCode, e.channels));
off();
client.on("disconnected", ({ code, delayMs }) => console.log(code, delayMs));

interface Order {
  id: number;
  status: string;
}
client.subscribe<Order>("orders").on("publication", (p) => {
  const status: string = p.data.status;
  // @ts-expect-error: data is typed by the subscription
  const missing: string = p.data.missing;
  void status, missing;
});

// @ts-expect-error: ack modes are a closed set
client.subscribe("tasks", { ack: "sometimes" });
// @ts-expect-error: no such event
client.on("message", () => {});
// @ts-expect-error: url is required
new HeraldClient({ token: "t" });

// Tag filters: a value or a list of values per key; tags arrive as strings.
const eu = client.subscribe("stock", { types: ["stock_level"], tags: { region: "eu", sku: ["A-1", "B-2"] } });
eu.on("publication", (p) => {
  const region: string | undefined = p.tags?.region;
  void region;
});
// @ts-expect-error: tag values are strings
client.subscribe("stock", { tags: { level: 5 } });
