/**
 * What the connection options (connection-options.ts) turn into: MQTT.js
 * options for the runtime, or a connected `MqttClient` of the CLI's own.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import { clientIdProblem, encodeTopicSegment, TopicScheme } from "@mqrpc/runtime";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { type ConnectionFlags, DEFAULT_MQTT_URL } from "./connection-options.js";
import { CliError, EXIT_USAGE } from "./exit-codes.js";
import { usageError } from "./option-errors.js";
import { hostPort, tlsFailure } from "./tls-failure.js";
import { checkCaFile, checkCertificateAndKey } from "./tls-files.js";

/** What the connection flags resolve to. */
export interface BrokerConnection {
  readonly url: string;
  readonly topicPrefix: string;
  readonly protocolVersion: 4 | 5;
  readonly connectTimeoutMs: number;
  /**
   * MQTT.js options with the URL, for the runtime to open a connection of
   * its own (servers: it installs their last will). No client id unless
   * `--client-id` or `--username` gave one.
   */
  readonly options: IClientOptions & { readonly url: string };
}

const TLS_SCHEMES = new Set(["mqtts:", "ssl:", "tls:", "wss:"]);
const SCHEMES = new Set(["mqtt:", "tcp:", "ws:", ...TLS_SCHEMES]);

/**
 * Checks the flags and reads the files they name; touches no broker, so a
 * command calls it before any broker contact.
 *
 * @throws CliError (usage exit code) naming the option for a bad URL, a
 *   topic prefix the runtime refuses, TLS files without a TLS URL, `--cert`
 *   without `--key`, `--password-file` without `--username`, a client id
 *   the runtime refuses (`--client-id`, or `--username` when it is the
 *   client id), a `--cacert`, `--cert` or `--key` file that is not what
 *   the flag asks for (not PEM, an encrypted key, a key that is not the
 *   certificate's: tls-files.ts); (exit code 1) for a file that cannot be
 *   read.
 */
export function resolveConnection(flags: ConnectionFlags): BrokerConnection {
  let parsed: URL;
  try {
    parsed = new URL(flags.mqtt);
  } catch {
    throw new CliError(
      `--mqtt: "${flags.mqtt}" is not a URL (e.g. ${DEFAULT_MQTT_URL})`,
      EXIT_USAGE,
    );
  }
  if (!SCHEMES.has(parsed.protocol)) {
    throw new CliError(
      `--mqtt: unsupported scheme "${parsed.protocol}"; use mqtt://, mqtts://, ws:// or wss://`,
      EXIT_USAGE,
    );
  }
  let scheme: TopicScheme;
  try {
    scheme = new TopicScheme(flags.topicPrefix);
  } catch (e) {
    // `topicPrefix "a+b" is invalid: use one or more levels of …`
    throw usageError(e, "topicPrefix", "--topic-prefix");
  }
  const tls = TLS_SCHEMES.has(parsed.protocol);
  for (const [flag, value] of [
    ["--cacert", flags.cacert],
    ["--cert", flags.cert],
    ["--key", flags.key],
    ["--insecure", flags.insecure],
  ] as const) {
    if (value !== undefined && value !== false && !tls) {
      throw new CliError(
        `${flag} needs a TLS broker URL (mqtts:// or wss://), not ${flags.mqtt}`,
        EXIT_USAGE,
      );
    }
  }
  if ((flags.cert === undefined) !== (flags.key === undefined)) {
    throw new CliError("--cert and --key go together: give both or neither", EXIT_USAGE);
  }
  if (flags.passwordFile !== undefined && flags.username === undefined) {
    throw new CliError("--password-file needs --username", EXIT_USAGE);
  }
  // The runtime refuses these ids only once connected (clientIdProblem):
  // the client id, else the username, which is the client id then (as the
  // runtime and openMqtt make it, and brokers binding ids to accounts do).
  if (flags.clientId !== undefined) {
    const problem = clientIdProblem(flags.clientId);
    if (problem !== undefined) throw new CliError(`--client-id: ${problem}`, EXIT_USAGE);
  } else if (flags.username !== undefined) {
    const problem = clientIdProblem(flags.username);
    if (problem !== undefined) {
      throw new CliError(
        `--username: ${problem} (without --client-id the username is the client id, as brokers ` +
          "with use_username_as_clientid make it; give --client-id if the broker does not bind " +
          "client ids to usernames)",
        EXIT_USAGE,
      );
    }
  }
  const options: IClientOptions & { url: string } = {
    url: flags.mqtt,
    protocolVersion: flags.mqttVersion,
    connectTimeout: flags.connectTimeout,
  };
  if (flags.cacert !== undefined) {
    const ca = readOptionFile("--cacert", flags.cacert);
    checkCaFile({ flag: "--cacert", path: flags.cacert, data: ca });
    options.ca = ca;
  }
  if (flags.cert !== undefined && flags.key !== undefined) {
    const cert = readOptionFile("--cert", flags.cert);
    const key = readOptionFile("--key", flags.key);
    checkCertificateAndKey(
      { flag: "--cert", path: flags.cert, data: cert },
      { flag: "--key", path: flags.key, data: key },
    );
    options.cert = cert;
    options.key = key;
  }
  if (flags.insecure === true) options.rejectUnauthorized = false;
  if (flags.username !== undefined) options.username = flags.username;
  if (flags.passwordFile !== undefined) {
    const text = readOptionFile("--password-file", flags.passwordFile).toString("utf8");
    options.password = text.replace(/\r?\n$/, "");
  }
  if (flags.clientId !== undefined) options.clientId = flags.clientId;
  return {
    url: flags.mqtt,
    topicPrefix: scheme.prefix,
    protocolVersion: flags.mqttVersion,
    connectTimeoutMs: flags.connectTimeout,
    options,
  };
}

/**
 * Whether `value` is a topic level as it is: one the runtime's topic
 * encoding (`encodeTopicSegment`) leaves unchanged, so of A-Z a-z 0-9 _ -
 * only. The runtime refuses any other share group and exports no check of
 * its own for it (client ids: `clientIdProblem`).
 */
export function isPlainTopicLevel(value: string): boolean {
  return value !== "" && encodeTopicSegment(value) === value;
}

function readOptionFile(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new CliError(`${flag}: cannot read ${path}: ${(e as Error).message}`);
  }
}

/**
 * Opens a client of the CLI's own (clean session; client id from the flags,
 * else the username, else `mqrpc-cli-<random>`) without waiting for the
 * broker: MQTT.js connects it when it can and reconnects it afterwards. Its
 * `error` events are the caller's to listen to.
 */
export function openMqtt(connection: BrokerConnection): MqttClient {
  const { url, ...rest } = connection.options;
  const clientId = rest.clientId ?? rest.username ?? `mqrpc-cli-${randomBytes(6).toString("hex")}`;
  return mqtt.connect(url, {
    ...rest,
    clientId,
    clean: true,
    reconnectPeriod: 1000,
    keepalive: 15,
  });
}

/**
 * Connects a client of the CLI's own ({@link openMqtt}) and resolves once
 * the broker accepted it; MQTT.js reconnects it afterwards.
 *
 * @throws ConnectError UNAUTHENTICATED or PERMISSION_DENIED when the broker
 *   refuses the credentials (UNAUTHENTICATED also when it refuses the TLS
 *   client certificate); UNAVAILABLE when it cannot be reached (at the
 *   first network error), its TLS certificate does not verify, or it sends
 *   no CONNACK within `--connect-timeout`; CANCELED when `signal` aborts
 *   first.
 */
export async function connectMqtt(
  connection: BrokerConnection,
  signal: AbortSignal,
): Promise<MqttClient> {
  const { url, ...rest } = connection.options;
  const client = openMqtt(connection);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          fail(
            new ConnectError(
              `no answer from the MQTT broker at ${url} within ${connection.connectTimeoutMs} ms (--connect-timeout)`,
              Code.Unavailable,
            ),
          ),
        connection.connectTimeoutMs,
      );
      const onAbort = () => fail(ConnectError.from(signal.reason, Code.Canceled));
      const onError = (e: Error & { code?: unknown }) =>
        fail(brokerError(url, e, rest.ca !== undefined));
      const onConnect = () => {
        cleanup();
        resolve();
      };
      function fail(error: ConnectError) {
        cleanup();
        reject(error);
      }
      function cleanup() {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        client.off("error", onError);
        client.off("connect", onConnect);
      }
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      client.on("error", onError);
      client.on("connect", onConnect);
    });
  } catch (e) {
    client.end(true);
    throw e;
  }
  // Later errors (a dropped link) are MQTT.js's to recover from by reconnecting.
  client.on("error", () => {});
  return client;
}

/**
 * The ConnectError for an MQTT.js error before the first CONNACK (`hasCa`:
 * `--cacert` was given).
 */
function brokerError(url: string, e: Error & { code?: unknown }, hasCa: boolean): ConnectError {
  const tls = tlsFailure(url, e, hasCa);
  if (tls !== undefined) return tls;
  const reason = typeof e.code === "number" ? e.code : undefined;
  if (reason === 4 || reason === 134) {
    return new ConnectError(
      `the MQTT broker at ${url} refused the username or password: ${e.message}`,
      Code.Unauthenticated,
    );
  }
  if (reason === 5 || reason === 135) {
    return new ConnectError(
      `the MQTT broker at ${url} refused the client: ${e.message}`,
      Code.PermissionDenied,
    );
  }
  if (reason === 2 || reason === 133) {
    return new ConnectError(
      `the MQTT broker at ${url} refused the client id: ${e.message}`,
      Code.InvalidArgument,
    );
  }
  return new ConnectError(
    `cannot reach the MQTT broker at ${url}: ${e.message}${resetHint(url, e)}`,
    Code.Unavailable,
  );
}

/**
 * For a connection the broker closed before answering: the usual cause is a
 * URL scheme that does not match the listener (TLS to a plain port, or the
 * other way round), so say so.
 */
export function resetHint(url: string, e: { code?: unknown }): string {
  if (e.code !== "ECONNRESET") return "";
  return isTlsUrl(url)
    ? ` (is ${hostPort(url)} a TLS listener? mqtts:// and wss:// need one)`
    : ` (is ${hostPort(url)} a TLS listener? then use mqtts:// or wss://)`;
}

/** Whether `url` is a TLS URL (`mqtts:`, `ssl:`, `tls:`, `wss:`). */
export function isTlsUrl(url: string): boolean {
  return TLS_SCHEMES.has(new URL(url).protocol);
}

/** `MQTT 3.1.1` or `MQTT 5`. */
export function protocolName(version: 4 | 5): string {
  return version === 5 ? "MQTT 5" : "MQTT 3.1.1";
}

/** How long a graceful end of the CLI's connection may take, in ms. */
const END_GRACE_MS = 2000;

/**
 * Ends a client from {@link connectMqtt}: gracefully while connected (its
 * last publishes acknowledged; at most 2 s), at once while it is not. A
 * graceful end of a client that is reconnecting never settles; awaited in
 * a command's cleanup, it left Node with nothing to do, and the process
 * exited 0 whatever the command's outcome.
 */
export async function endMqtt(client: MqttClient): Promise<void> {
  if (!client.connected) {
    await client.endAsync(true).catch(() => {});
    return;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const graceful = client.endAsync(false).then(
    () => true,
    () => true,
  );
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), END_GRACE_MS);
  });
  const ended = await Promise.race([graceful, late]);
  clearTimeout(timer);
  if (!ended) await client.endAsync(true).catch(() => {});
}
