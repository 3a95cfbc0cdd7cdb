/** What `mqrpc ingress` does (its options: ingress.ts). */
import { readFileSync } from "node:fs";
import type { TLSSocket } from "node:tls";
import { createGrpcIngress } from "@mqrpc/gateway";
import type { InvalidArgumentError } from "commander";
import type { MqttClient } from "mqtt";
import { logBrokerChanges } from "../broker-changes.js";
import { probeBroker } from "../broker-probe.js";
import { endMqtt, openMqtt, resolveConnection } from "../connection.js";
import { CliError, EXIT_OK, EXIT_USAGE } from "../exit-codes.js";
import { parseHostPort } from "../option-parsers.js";
import { logEvent } from "../output.js";
import { loadSchemaInputs } from "../schema/schema-files.js";
import { needsReflection } from "../schema/schema-options.js";
import { listenForStop, unlessStopped, untilAborted } from "../stop-signal.js";
import { checkCertificateAndKey } from "../tls-files.js";
import type { IngressFlags } from "./ingress.js";

/**
 * Runs an ingress until SIGINT or SIGTERM, logging where it listens, the
 * broker connection's changes and its stop. Its device transports share
 * one MQTT client of the CLI's own (an ingress serves nothing, so it needs
 * no last will), whose events give the broker lines.
 */
export async function ingress(flags: IngressFlags): Promise<number> {
  const connection = resolveConnection(flags);
  let listen: { host: string; port: number };
  try {
    listen = parseHostPort(flags.listen, "127.0.0.1");
  } catch (e) {
    throw new CliError(
      `--listen "${flags.listen}": ${(e as InvalidArgumentError).message}`,
      EXIT_USAGE,
    );
  }
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    throw new CliError("--tls-cert and --tls-key go together: give both or neither", EXIT_USAGE);
  }
  const read = (flag: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw new CliError(`${flag}: cannot read ${path}: ${(e as Error).message}`);
    }
  };
  let tls: { cert: Buffer; key: Buffer } | undefined;
  if (flags.tlsCert !== undefined && flags.tlsKey !== undefined) {
    tls = { cert: read("--tls-cert", flags.tlsCert), key: read("--tls-key", flags.tlsKey) };
    checkCertificateAndKey(
      { flag: "--tls-cert", path: flags.tlsCert, data: tls.cert },
      { flag: "--tls-key", path: flags.tlsKey, data: tls.key },
    );
  }
  const schema = needsReflection(flags) ? undefined : await loadSchemaInputs(flags.schema ?? []);
  const stop = listenForStop();
  let client: MqttClient | undefined;
  try {
    const unreachable = await probeBroker(connection, stop.signal);
    if (unreachable !== undefined) logEvent("warn", `${unreachable}; waiting for it`);
    client = openMqtt(connection);
    logBrokerChanges(client, connection.url);
    const running = await unlessStopped(
      createGrpcIngress({
        mqtt: client,
        topicPrefix: connection.topicPrefix,
        listen,
        reflection: flags.reflection,
        reflectionTimeoutMs: flags.reflectionTimeout,
        keepaliveTimeMs: flags.keepaliveTime,
        keepaliveTimeoutMs: flags.keepaliveTimeout,
        ...(tls !== undefined ? { tls, onTlsClientError: tlsFailureLog() } : {}),
        ...(schema !== undefined ? { descriptorSet: schema.registry } : {}),
        ...(flags.maxMessageSize !== undefined ? { maxMessageBytes: flags.maxMessageSize } : {}),
      }),
      stop.signal,
      (i) => i.close(),
    );
    logEvent("listening", `${running.url} (devices on ${connection.url})`);
    await untilAborted(stop.signal);
    logEvent("stopping", `on ${stop.received() ?? "signal"}`);
    await running.close();
    logEvent("stopped", running.url);
    return EXIT_OK;
  } catch (e) {
    if (stop.received() !== undefined) return EXIT_OK;
    throw e;
  } finally {
    if (client !== undefined) await endMqtt(client);
    stop.dispose();
  }
}

/** At most one `warn` line per this many ms about failed TLS handshakes. */
const TLS_FAILURE_LOG_MS = 60_000;

/**
 * Logs the TLS handshakes with clients that failed on the ingress's side
 * (cleartext to the TLS port, no protocol version or cipher in common):
 * the first at once, then at most one line a minute, counting those left
 * out, so that a client retrying in a loop or a scanner cannot flood the
 * log. A connection the client closed during the handshake (`ECONNRESET`)
 * is not logged: a TCP health check or port scan does that, as does a
 * client that refused the certificate, and that client says why itself.
 */
function tlsFailureLog(): (error: Error, socket: TLSSocket) => void {
  let loggedAt: number | undefined;
  let unlogged = 0;
  return (error, socket) => {
    const { code, reason } = error as { code?: unknown; reason?: unknown };
    if (code === "ECONNRESET") return;
    const now = performance.now();
    if (loggedAt !== undefined && now - loggedAt < TLS_FAILURE_LOG_MS) {
      unlogged++;
      return;
    }
    const more =
      loggedAt === undefined
        ? "; further failures are logged at most once a minute"
        : unlogged > 0
          ? `; ${unlogged} more since the last such line`
          : "";
    loggedAt = now;
    unlogged = 0;
    const address = socket.remoteAddress;
    const peer =
      address === undefined
        ? "a client"
        : `${address.includes(":") ? `[${address}]` : address}:${socket.remotePort}`;
    // OpenSSL's reason ("http request") rather than its whole error string.
    const what = typeof reason === "string" ? reason : error.message;
    const codeText = typeof code === "string" ? ` (${code})` : "";
    logEvent("warn", `TLS handshake with ${peer} failed: ${what}${codeText}${more}`);
  };
}
