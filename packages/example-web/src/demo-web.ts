/**
 * `npm run demo:web`: the web dashboard against two simulated devices on
 * the embedded broker (MQTT over WebSockets for the page). Prints the URL
 * to open and runs until Ctrl-C.
 *
 * Environment: `PORT` fixes the web server's port (default: a free one);
 * `MQTT_URL` (devices) and `MQTT_WS_URL` (page) use another broker instead
 * of the embedded one, e.g. a Mosquitto with a websockets listener.
 */
import { startWebDemo } from "./demo-server.js";

const port = process.env.PORT === undefined ? undefined : Number(process.env.PORT);
if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
  console.error(`PORT must be a port number, got ${process.env.PORT}`);
  process.exit(2);
}
const wsUrl = process.env.MQTT_WS_URL;
if (process.env.MQTT_URL !== undefined && wsUrl === undefined) {
  console.error("MQTT_URL needs MQTT_WS_URL too: the page reaches the broker over WebSockets");
  process.exit(2);
}

const demo = await startWebDemo({
  ...(port === undefined ? {} : { port }),
  ...(wsUrl === undefined ? {} : { broker: { url: process.env.MQTT_URL ?? wsUrl, wsUrl } }),
});
console.log(`broker     ${demo.brokerUrl}${demo.embeddedBroker ? " (embedded Aedes)" : ""}`);
console.log(`websocket  ${demo.wsUrl}`);
console.log(`devices    ${demo.deviceIds.join(", ")}`);
console.log(`\ndashboard  ${demo.url}\n\nopen it in a browser; Ctrl-C stops`);

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  demo.close().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error("stopping failed:", error);
      process.exit(1);
    },
  );
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
