// Prints what Herald pushes to one user, resuming across reconnects.
//   herald-node --dev            # prints a user token
//   npm run build
//   HERALD_TOKEN=<token> node examples/watch.mjs [ws://127.0.0.1:8080/ws/notifications/]
// Node 22+ (global WebSocket). On Node 20: `npm i ws` and pass `WebSocket` from it.
import { HeraldClient } from "../dist/index.js";

const token = process.env.HERALD_TOKEN;
if (!token) {
  console.error("set HERALD_TOKEN to a user token (herald-node --dev prints one)");
  process.exit(2);
}
const client = new HeraldClient({
  url: process.argv[2] || "ws://127.0.0.1:8080/ws/notifications/",
  getToken: () => token, // a real page would fetch a fresh one here
});
client.on("connected", ({ userId }) => console.log(`connected as ${userId}`));
client.on("disconnected", ({ code, reason, delayMs }) => console.log(`disconnected (${code} ${reason}); retry in ${Math.round(delayMs ?? 0)} ms`));
client.on("error", (error) => console.log(`error ${error.code}: ${error.message}`));
client.on("closed", ({ error }) => {
  console.log(error ? `stopped: ${error.message}` : "stopped");
  process.exit(error ? 1 : 0);
});
client.on("publication", (p) => {
  if (p.channel !== "orders") console.log(`[${p.channel ?? "legacy"}] ${p.type} ${JSON.stringify(p.data)}`);
});

const orders = client.subscribe("orders");
orders.on("subscribed", ({ recovered }) => {
  if (recovered === false) console.log("orders: messages were lost while away; refetch the order list");
});
orders.on("publication", (p) => console.log(`[orders ${p.offset}] ${JSON.stringify(p.data)}`));
client.connect();
process.on("SIGINT", () => client.disconnect());
