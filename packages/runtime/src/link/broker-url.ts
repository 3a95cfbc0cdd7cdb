/**
 * Broker URLs as the `mqtt` option gives them: which schemes reach an MQTT
 * broker (those MQTT.js connects with), and how a URL or a client's
 * address is shown in messages, never with its password.
 */

/**
 * The protocols MQTT.js connects with (its `protocol` option, and URL
 * schemes), each also as `<protocol>+unix` for a Unix socket:
 * TCP (`mqtt`, `tcp`), TLS (`mqtts`, `tls`, `ssl`), WebSocket (`ws`,
 * `wss`), and the mini-program WebSockets (`wx`, `wxs`, `ali`, `alis`).
 */
const PROTOCOLS = new Set([
  "mqtt",
  "tcp",
  "mqtts",
  "tls",
  "ssl",
  "ws",
  "wss",
  "wx",
  "wxs",
  "ali",
  "alis",
]);

const SCHEMES_HINT = "use mqtt://host:1883, mqtts://host:8883, ws://host/mqtt or wss://host/mqtt";

/** Whether MQTT.js connects with `protocol` (`mqtts`, `ws+unix`; a trailing colon allowed). */
function isMqttProtocol(protocol: string): boolean {
  return PROTOCOLS.has(
    protocol
      .replace(/:$/, "")
      .replace(/\+unix$/, "")
      .toLowerCase(),
  );
}

/** `url` without its password (`mqtt://ops:***@host`), for messages; as given when it does not parse. */
export function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") {
      parsed.password = "***";
      return parsed.href;
    }
  } catch {
    // Not a URL: see below.
  }
  // What a URL parser does not see as a password ("user:secret@host", read
  // as scheme "user:") may still be one: drop what precedes an "@".
  const at = url.lastIndexOf("@");
  return at < 0 ? url : `***${url.slice(at)}`;
}

/**
 * Why the `mqtt` option's `url` or `protocol` cannot reach an MQTT broker,
 * or undefined: a URL that does not parse, or whose scheme MQTT.js would
 * not connect with (`https://…` would otherwise connect in plain MQTT,
 * unencrypted, to the port given). A relative URL (`/mqtt`, a browser
 * page's own origin) is MQTT.js's to resolve.
 */
export function brokerUrlProblem(url: unknown, protocol: unknown): string | undefined {
  if (url !== undefined) {
    if (typeof url !== "string") return `the broker URL must be a string; ${SCHEMES_HINT}`;
    if (!url.startsWith("/")) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        return `"${redactedUrl(url)}" is not a broker URL; ${SCHEMES_HINT}`;
      }
      if (!isMqttProtocol(parsed.protocol)) {
        return `"${redactedUrl(url)}" has scheme ${parsed.protocol}, not an MQTT one; ${SCHEMES_HINT}`;
      }
    }
  }
  if (protocol !== undefined && (typeof protocol !== "string" || !isMqttProtocol(protocol))) {
    return `protocol ${JSON.stringify(protocol)} is not one MQTT.js connects with (mqtt, mqtts, ws, wss, …)`;
  }
  return undefined;
}

/** The parts of MQTT.js's resolved client options that say where it connects. */
interface ClientAddressOptions {
  readonly protocol?: string;
  readonly hostname?: string;
  readonly host?: string;
  readonly port?: number;
  readonly path?: string;
  readonly unixSocket?: boolean;
  readonly servers?: readonly unknown[];
}

/**
 * Where a client connects, for messages: `mqtt://host:port`, with a
 * WebSocket's path, `unix:/path` for a Unix socket, and how many other
 * servers it tries in turn; no credentials.
 */
export function brokerAddress(options: ClientAddressOptions): string {
  const protocol = (options.protocol ?? "mqtt").replace(/:$/, "");
  let address: string;
  if (options.unixSocket === true && options.path !== undefined) {
    address = `${protocol}+unix:${options.path}`;
  } else {
    const host = options.hostname ?? options.host ?? "localhost";
    const port = options.port === undefined ? "" : `:${options.port}`;
    const path = /^wss?$|^wxs?$|^alis?$/.test(protocol) ? (options.path ?? "") : "";
    address = `${protocol}://${host}${port}${path}`;
  }
  const others = (options.servers?.length ?? 0) - 1;
  return others > 0
    ? `${address} (or ${others} other server${others === 1 ? "" : "s"} in turn)`
    : address;
}

/**
 * Why the `mqtt` option (a URL, MQTT.js options, or an `MqttClient`) cannot
 * reach an MQTT broker, or undefined: an empty URL, options with neither
 * `url` nor `host`, a scheme or `protocol` (also of a `servers` entry) that
 * MQTT.js does not connect with.
 */
export function mqttInputProblem(input: unknown): string | undefined {
  if (typeof input === "string") {
    if (input.trim() === "") return "the broker URL is empty";
    return brokerUrlProblem(input, undefined);
  }
  if (typeof input !== "object" || input === null) {
    return "give a URL string, options with url or host, or an MqttClient";
  }
  // An MqttClient connects as it was made.
  if (typeof (input as { publish?: unknown }).publish === "function") return undefined;
  const options = input as {
    url?: unknown;
    host?: unknown;
    protocol?: unknown;
    servers?: unknown;
  };
  if (options.url === undefined && options.host === undefined) {
    return "give a URL string, options with url or host, or an MqttClient";
  }
  const problem = brokerUrlProblem(options.url, options.protocol);
  if (problem !== undefined) return problem;
  if (Array.isArray(options.servers)) {
    for (const [i, server] of options.servers.entries()) {
      const protocol = (server as { protocol?: unknown } | null)?.protocol;
      const serverProblem = brokerUrlProblem(undefined, protocol);
      if (serverProblem !== undefined) return `servers[${i}]: ${serverProblem}`;
    }
  }
  return undefined;
}
