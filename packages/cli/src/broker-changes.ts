/**
 * What the long-running commands log about their broker connection: one
 * line when it is lost (once per outage, not per reconnect attempt) and one
 * when it is back, from the MQTT.js events of the client the command uses.
 */
import type { IDisconnectPacket, MqttClient } from "mqtt";
import { logEvent } from "./output.js";

/** MQTT 5 reason codes a broker disconnects a client with (MQTT 5 section 3.14.2.1). */
const DISCONNECT_REASONS: ReadonlyMap<number, string> = new Map([
  [0x80, "unspecified error"],
  [0x81, "malformed packet"],
  [0x82, "protocol error"],
  [0x87, "not authorized"],
  [0x89, "server busy"],
  [0x8b, "server shutting down"],
  [0x8d, "keep alive timeout"],
  [0x8e, "session taken over"],
  [0x95, "packet too large"],
  [0x97, "quota exceeded"],
  [0x98, "administrative action"],
  [0x9c, "use another server"],
  [0x9d, "server moved"],
]);

/**
 * Reports the changes of `client`'s connection to `url`, one line each
 * through `report` (default: a `broker` event line on stdout):
 * `connection to <url> lost: <reason>; reconnecting` when MQTT.js goes
 * offline after having been connected, `reconnected to <url> after <s> s`
 * at the next CONNACK, and `connected to <url>` when the first connection
 * comes only after failed attempts (the start-up probe has already said
 * the broker could not be reached). The first connection made at once
 * and the end of the client are not reported. Also takes the client's
 * `error` events, so that a dropped link never crashes the process.
 */
export function logBrokerChanges(
  client: MqttClient,
  url: string,
  report: (details: string) => void = (details) => logEvent("broker", details),
): void {
  let everConnected = client.connected;
  let waiting = false;
  let lostAt: number | undefined;
  let reason: string | undefined;
  client.on("connect", () => {
    if (lostAt !== undefined) {
      report(`reconnected to ${url} after ${((Date.now() - lostAt) / 1000).toFixed(1)} s`);
    } else if (!everConnected && waiting) {
      report(`connected to ${url}`);
    }
    everConnected = true;
    lostAt = undefined;
    reason = undefined;
  });
  client.on("error", (e: Error) => {
    reason ??= e.message;
  });
  client.on("disconnect", (packet: IDisconnectPacket) => {
    reason ??= disconnectReason(packet);
  });
  // MQTT.js emits `offline` once when a connection it will retry closed
  // (not at each failed attempt, nor when the client is ended); on a
  // keepalive timeout before the error that says so, hence the wait for
  // the end of this turn.
  client.on("offline", () => {
    if (!everConnected) {
      waiting = true;
      return;
    }
    if (lostAt !== undefined) return;
    lostAt = Date.now();
    setImmediate(() =>
      report(`connection to ${url} lost: ${reason ?? "the connection closed"}; reconnecting`),
    );
  });
}

/** Why the broker's DISCONNECT (MQTT 5) says it closes the connection. */
function disconnectReason(packet: IDisconnectPacket): string {
  const code = packet.reasonCode ?? 0;
  const name =
    DISCONNECT_REASONS.get(code) ?? `reason code 0x${code.toString(16).padStart(2, "0")}`;
  const text = packet.properties?.reasonString;
  return `the broker disconnected it (${name}${text !== undefined ? `: ${text}` : ""})`;
}
