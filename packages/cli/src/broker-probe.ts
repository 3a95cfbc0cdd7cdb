/**
 * A first look at the broker for the long-running commands (gateway,
 * ingress, forward, expose), whose MQTT connection the runtime opens and
 * retries for as long as they run (a broker that starts later is found):
 * one TCP connection, with the TLS handshake on a TLS URL, and no MQTT
 * packet, so no client id, session or login is touched. A TLS failure that
 * no retry can heal (an untrusted or mismatched certificate, a refused
 * client certificate) ends the command at once instead of a silent wait;
 * an unreachable broker is only reported.
 */
import { isIP, type Socket, connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";
import { type BrokerConnection, isTlsUrl, resetHint } from "./connection.js";
import { tlsFailure } from "./tls-failure.js";

/** The port of a broker URL without one, as MQTT.js picks it. */
const DEFAULT_PORTS: Readonly<Record<string, number>> = {
  "mqtt:": 1883,
  "tcp:": 1883,
  "mqtts:": 8883,
  "ssl:": 8883,
  "tls:": 8883,
  "ws:": 80,
  "wss:": 443,
};

/**
 * Connects to the broker of `connection` once (TCP, and TLS with the
 * connection's `--cacert`, `--cert`, `--key` and `--insecure` on a TLS
 * URL), then closes. After the handshake it half-closes and waits for the
 * broker to close too, so that a TLS 1.3 broker's refusal of the client
 * certificate, which comes after the client's side of the handshake, is
 * seen. Bounded by `--connect-timeout`.
 *
 * @returns undefined when the broker answered (and the TLS handshake
 *   passed); else why it could not be reached, a line for the log.
 * @throws ConnectError from the TLS failure (UNAVAILABLE for a broker
 *   certificate that does not verify, UNAUTHENTICATED for a refused client
 *   certificate); CANCELED when `signal` aborts first.
 */
export function probeBroker(
  connection: BrokerConnection,
  signal: AbortSignal,
): Promise<string | undefined> {
  const { url, options } = connection;
  const parsed = new URL(url);
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1") || "localhost";
  const port = parsed.port === "" ? (DEFAULT_PORTS[parsed.protocol] ?? 1883) : Number(parsed.port);
  const tls = isTlsUrl(url);
  return new Promise((resolve, reject) => {
    let handshaken = false;
    let failure: (Error & { code?: unknown }) | undefined;
    const socket: Socket = tls
      ? tlsConnect({
          host,
          port,
          ...(isIP(host) === 0 ? { servername: host } : {}),
          ...(options.ca !== undefined ? { ca: options.ca } : {}),
          ...(options.cert !== undefined ? { cert: options.cert } : {}),
          ...(options.key !== undefined ? { key: options.key } : {}),
          rejectUnauthorized: options.rejectUnauthorized !== false,
        })
      : tcpConnect({ host, port });
    const timer = setTimeout(() => {
      finish(
        handshaken
          ? undefined
          : `no answer from the MQTT broker at ${url} within ${connection.connectTimeoutMs} ms (--connect-timeout)`,
      );
    }, connection.connectTimeoutMs);
    const onAbort = () => {
      cleanup();
      reject(ConnectError.from(signal.reason, Code.Canceled));
    };
    const cleanup = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      socket.destroy();
    };
    const finish = (unreachable: string | undefined) => {
      cleanup();
      resolve(unreachable);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    socket.once(tls ? "secureConnect" : "connect", () => {
      handshaken = true;
      if (tls) socket.end();
      else finish(undefined);
    });
    socket.on("error", (e: Error & { code?: unknown }) => {
      failure ??= e;
    });
    socket.once("close", () => {
      if (failure === undefined) return finish(undefined);
      const refused = tls ? tlsFailure(url, failure, options.ca !== undefined) : undefined;
      if (refused !== undefined) {
        cleanup();
        return reject(refused);
      }
      finish(
        `cannot reach the MQTT broker at ${url}: ${failure.message}${resetHint(url, failure)}`,
      );
    });
  });
}
