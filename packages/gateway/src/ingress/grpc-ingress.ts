/**
 * `createGrpcIngress`: the cloud side of the gateway. A local HTTP/2 server
 * that takes standard gRPC, gRPC-Web and Connect calls and forwards each
 * over MQTT to the device its `mqrpc-server-id` header names, so grpcurl,
 * `buf curl`, grpc-js, grpc-go or a browser reach devices with no mqrpc code.
 *
 * ```
 *  gRPC / gRPC-Web client ──HTTP/2──▶ ingress ──MQTT (rawStream)──▶ device (mqrpc server or gateway)
 * ```
 *
 * - Binary gRPC and gRPC-Web are forwarded as bytes (grpc-forwarder.ts): no
 *   schema needed, unknown fields survive. On HTTP/2 they are served on the
 *   stream API, every other request through the compatibility API
 *   (`'request'`), which Connect's adapter takes.
 * - JSON codecs and the Connect protocol need the method's schema: from the
 *   device by gRPC server reflection (cached per device), or from the
 *   `descriptorSet` option; Connect's Node adapter serves them
 *   (connect-forwarder.ts).
 */

import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { setMaxListeners } from "node:events";
import type { IncomingHttpHeaders } from "node:http";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as tls from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";
import { parseTimeout } from "@connectrpc/connect/protocol-grpc";
import {
  checkMqttTransportOptions,
  MAX_TIMER_MS,
  type MqttConnectionInput,
  settingsFromDescriptor,
} from "@mqrpc/runtime";
import { MAX_HEADER_LIST_PAIRS } from "../http2-header-limits.js";
import { connectHandler } from "./connect-forwarder.js";
import {
  type DescriptorSetInput,
  type DeviceSchema,
  reflectSchema,
  schemaFromDescriptorSet,
} from "./device-schema.js";
import {
  type DeviceEntry,
  type DeviceSchemaEntry,
  type DeviceTransportOptions,
  DeviceTransports,
} from "./device-transports.js";
import { forwardRawCall, methodFromPath, rejectRawCall } from "./grpc-forwarder.js";
import { SERVER_ID_HEADER } from "./grpc-metadata.js";
import {
  type HttpRequest,
  type HttpResponse,
  type RequestKind,
  requestKind,
  writeErrorResponse,
} from "./ingress-protocol.js";
import { http2Exchange, httpExchange, type RawExchange } from "./raw-exchange.js";
import { keepSessionAlive, type SessionKeepaliveTiming } from "./session-keepalive.js";

/** Options of {@link createGrpcIngress}. */
export interface GrpcIngressOptions {
  /**
   * The broker: a URL, MQTT.js options or an `MqttClient`, as
   * `createMqttTransport` takes it. Every device's transport gets this same
   * input, so they share one connection.
   */
  readonly mqtt: MqttConnectionInput;
  /** Where to listen; default host `127.0.0.1`, port 0 (a free port: read it from `url`). */
  readonly listen?: { readonly host?: string; readonly port?: number };
  /**
   * Serve TLS (HTTP/2 negotiated by ALPN `h2`, HTTP/1.1 for gRPC-Web and
   * Connect clients that ask for it) with this key and certificate (PEM),
   * and any other `node:http2` secure server option. The key must be the
   * certificate's: checked at start (an error naming `tls.key`), also for
   * keys of another type (an EC key with an RSA certificate), which OpenSSL
   * would take and then fail every handshake with. Without it the ingress
   * speaks cleartext: HTTP/2 with prior knowledge (h2c, what gRPC clients
   * send to `http://` addresses) and HTTP/1.1 on the same port.
   */
  readonly tls?: http2.SecureServerOptions & {
    readonly key: string | Buffer;
    readonly cert: string | Buffer;
  };
  /**
   * Called for each TLS connection whose handshake failed, with the error
   * and the client's socket, as Node's `tlsClientError` event: cleartext
   * to the TLS port (`ERR_SSL_HTTP_REQUEST`, `ERR_SSL_WRONG_VERSION_NUMBER`),
   * no protocol version or cipher in common, or a client that closed the
   * connection during the handshake (`ECONNRESET`: a TCP health check, a
   * port scan, or a client that does not trust the certificate). The
   * ingress itself logs nothing; without it such connections are closed
   * silently.
   */
  readonly onTlsClientError?: (error: Error, socket: tls.TLSSocket) => void;
  /** First topic levels of every mqrpc topic; default `mqrpc`. Must match the devices'. */
  readonly topicPrefix?: string;
  /**
   * Options for each device's transport (`heartbeatMs`, `waitForServer`,
   * …); runtime defaults when left out, but `maxMessageBytes` (the largest
   * message a device's transport carries) defaults to the ingress's
   * {@link maxMessageBytes}.
   */
  readonly transport?: DeviceTransportOptions;
  /**
   * The schema of the devices' services, for JSON and Connect calls (a
   * `buf build -o x.binpb` image's bytes, a decoded `FileDescriptorSet`, or
   * a protobuf-es `FileRegistry`). Without it, each device is asked by gRPC
   * server reflection (see {@link reflection}).
   */
  readonly descriptorSet?: DescriptorSetInput;
  /**
   * Learn a device's schema by gRPC server reflection over MQTT when a JSON
   * or Connect call needs it and no `descriptorSet` is given; default true.
   * Binary gRPC and gRPC-Web never need a schema.
   */
  readonly reflection?: boolean;
  /** How long a device's schema learned by reflection is used before it is asked again, in ms; default 60000. */
  readonly schemaTtlMs?: number;
  /** Deadline of a reflection call, in ms; default 10000. */
  readonly reflectionTimeoutMs?: number;
  /** How long a device's transport stays open without calls, in ms; default 60000. */
  readonly deviceIdleMs?: number;
  /**
   * Most devices with an open transport (default 10000). At the limit the
   * least recently used device without calls is closed; when every one has
   * calls in flight, a call to another device fails with RESOURCE_EXHAUSTED.
   */
  readonly maxDevices?: number;
  /**
   * Largest message, in bytes, the ingress forwards (default 4 MiB, gRPC's
   * default): a larger request message from a client fails the call with
   * RESOURCE_EXHAUSTED. It is also each device transport's
   * `maxMessageBytes` (responses) unless `transport.maxMessageBytes` is
   * given. The device's own limit (its server's `maxMessageBytes`) still
   * applies to requests.
   */
  readonly maxMessageBytes?: number;
  /**
   * HTTP/2 keepalive to clients, gRPC servers' "keepalive time" (gRFC A8),
   * in ms; default 7200000 (2 hours, as gRPC C-core servers). Each HTTP/2
   * client connection is sent a PING this often; one not acknowledged
   * within {@link keepaliveTimeoutMs} closes the connection, which cancels
   * its calls at the devices. Without it, the calls of a client whose host
   * or network went silent without closing the connection would run on
   * (streams without a deadline, for ever). gRPC clients answer PINGs from
   * servers at any rate. HTTP/1.1 connections (gRPC-Web, Connect) have no
   * PING: their calls end with the TCP connection.
   */
  readonly keepaliveTimeMs?: number;
  /** How long a client has to acknowledge a keepalive PING, in ms; default 20000 (gRPC's). */
  readonly keepaliveTimeoutMs?: number;
}

/** A running ingress. */
export interface GrpcIngress {
  /** `http://host:port` (`https://` with TLS): the address gRPC clients dial. */
  readonly url: string;
  /**
   * Stops listening, ends the calls in flight with UNAVAILABLE ("the
   * ingress is closing", in trailers once a response began), closes the
   * clients' connections once their calls' last bytes are out (up to 2 s;
   * then they are cut) and every device transport. Calling it again
   * returns the same promise.
   */
  close(): Promise<void>;
}

/**
 * Starts an ingress and resolves once it listens.
 *
 * @throws Error naming the option when an option is invalid, or `listen`
 *   when the address cannot be bound.
 */
export async function createGrpcIngress(options: GrpcIngressOptions): Promise<GrpcIngress> {
  const settings = ingressSettings(options);
  const devices = new DeviceTransports({
    mqtt: options.mqtt,
    topicPrefix: options.topicPrefix,
    // The ingress's limit bounds the device's responses too, unless the
    // transport option sets its own.
    transport: {
      ...options.transport,
      maxMessageBytes: options.transport?.maxMessageBytes ?? settings.maxMessageBytes,
    },
    idleMs: settings.deviceIdleMs,
    maxDevices: settings.maxDevices,
  });
  const shutdown = new AbortController();
  // Every call in flight listens to it.
  setMaxListeners(0, shutdown.signal);
  const inFlight = new Set<Promise<void>>();
  const rawCalls = new Set<AbortController>();

  const schemaFor = (entry: DeviceEntry): Promise<DeviceSchemaEntry> => {
    const now = Date.now();
    const cached = entry.schema;
    if (cached !== undefined && cached.expires > now) return cached.entry;
    const learn = async (): Promise<DeviceSchemaEntry> => {
      if (settings.schema === undefined && !settings.reflection) {
        throw new ConnectError(
          "reflection is off and no descriptorSet was given",
          Code.Unimplemented,
        );
      }
      const schema: DeviceSchema =
        settings.schema ??
        (await reflectSchema(entry.transport, settings.reflectionTimeoutMs, shutdown.signal));
      return {
        schema,
        handler: connectHandler(schema, entry.transport, {
          maxMessageBytes: settings.maxMessageBytes,
          shutdownSignal: shutdown.signal,
        }),
      };
    };
    const lookup: NonNullable<DeviceEntry["schema"]> = {
      expires:
        settings.schema !== undefined ? Number.POSITIVE_INFINITY : now + settings.schemaTtlMs,
      entry: learn(),
    };
    entry.schema = lookup;
    lookup.entry.then(
      (ready) => {
        lookup.ready = ready;
      },
      () => {
        // Failures are not cached: the next call asks again.
        if (entry.schema === lookup) entry.schema = undefined;
      },
    );
    return lookup.entry;
  };

  const track = (work: Promise<void>): void => {
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  };

  /**
   * The device a call names (`mqrpc-server-id`), held for the call until
   * `devices.release`; undefined once the call was answered with `fail`.
   */
  const holdDevice = (
    headers: IncomingHttpHeaders,
    rawHeaders: readonly string[] | undefined,
    path: string | undefined,
    fail: (error: ConnectError) => void,
  ): { serverId: string; entry: DeviceEntry } | undefined => {
    // Node joins repeated headers with ", ": count them in the raw headers.
    if (rawHeaders !== undefined && headerCount(rawHeaders, SERVER_ID_HEADER) > 1) {
      fail(
        new ConnectError(
          `request header ${SERVER_ID_HEADER} must appear once (it names the one device to call), not ${headerCount(rawHeaders, SERVER_ID_HEADER)} times`,
          Code.InvalidArgument,
        ),
      );
      return undefined;
    }
    const serverId = headerValue(headers[SERVER_ID_HEADER]);
    if (serverId === undefined || serverId === "") {
      // buf curl sends -H headers with the call but not with the
      // reflection requests it makes first, unless told to.
      const reflecting = path?.startsWith("/grpc.reflection.") === true;
      fail(
        new ConnectError(
          `missing request header ${SERVER_ID_HEADER}: set it to the server id of the device to call (e.g. -H "${SERVER_ID_HEADER}: dev-42")` +
            (reflecting
              ? `; buf curl sends it with reflection requests only with --reflect-header '*' (or --reflect-header "${SERVER_ID_HEADER}: dev-42")`
              : ""),
          Code.InvalidArgument,
        ),
      );
      return undefined;
    }
    let entry: DeviceEntry;
    try {
      entry = devices.hold(serverId);
    } catch (e) {
      fail(ConnectError.from(e));
      return undefined;
    }
    return { serverId, entry };
  };

  /** Binary gRPC and gRPC-Web: forwarded as bytes (grpc-forwarder.ts). */
  const serveRaw = (
    exchange: RawExchange,
    rawHeaders: readonly string[] | undefined,
    kind: RequestKind,
    path: string | undefined,
  ): void => {
    const fail = (error: ConnectError) => rejectRawCall(exchange, kind, error);
    const held = holdDevice(exchange.headers, rawHeaders, path, fail);
    if (held === undefined) return;
    const { entry } = held;
    const target = methodFromPath(path);
    if (target === undefined) {
      devices.release(entry);
      fail(new ConnectError(`${path ?? ""} is not a gRPC method path`, Code.Unimplemented));
      return;
    }
    // With a schema at hand (never waited for), the call travels as its
    // kind and with the method's MQTT settings.
    const schema = settings.schema ?? entry.schema?.ready?.schema;
    const method = schema?.method(target.service, target.method);
    // One reaction for the end of the call (forwardRawCall never throws; a
    // bug that makes it throw still answers the call): tracked until then.
    const work: Promise<void> = forwardRawCall({
      exchange,
      kind,
      service: target.service,
      method: target.method,
      transport: entry.transport,
      methodKind: method?.methodKind,
      settings: method !== undefined ? settingsFromDescriptor(method) : undefined,
      maxMessageBytes: settings.maxMessageBytes,
      ingressLimitsResponses: options.transport?.maxMessageBytes === undefined,
      shutdownSignal: shutdown.signal,
      inFlight: rawCalls,
    }).then(
      () => {
        devices.release(entry);
        inFlight.delete(work);
      },
      (e: unknown) => {
        if (!exchange.headersSent) fail(ConnectError.from(e));
        else exchange.destroy();
        devices.release(entry);
        inFlight.delete(work);
      },
    );
    inFlight.add(work);
  };

  const onStream = (
    stream: http2.ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    rawHeaders: readonly string[] | undefined,
  ): boolean => {
    const kind = requestKind(headerValue(headers[":method"]), headers);
    if (!isRaw(kind)) return false;
    serveRaw(http2Exchange(stream, headers), rawHeaders, kind, headerValue(headers[":path"]));
    return true;
  };

  const onRequest = (req: HttpRequest, res: HttpResponse): void => {
    const kind = requestKind(req.method, req.headers);
    if (isRaw(kind)) {
      serveRaw(httpExchange(req, res), req.rawHeaders, kind, req.url);
      return;
    }
    const fail = (error: ConnectError) => writeErrorResponse(req, res, kind, error);
    if (kind.protocol === "unknown") {
      fail(new ConnectError("not an RPC request", Code.Unimplemented));
      return;
    }
    const held = holdDevice(req.headers, req.rawHeaders, req.url, fail);
    if (held === undefined) return;
    const { serverId, entry } = held;
    const call = new Promise<void>((resolve) => {
      res.once("close", resolve);
    }).finally(() => devices.release(entry));
    track(call);
    schemaFor(entry).then(
      ({ schema, handler }) => {
        const missing = missingMethod(schema, req.url);
        if (missing !== undefined) {
          fail(schemaError(serverId, missing));
          return;
        }
        dropUntimeableDeadline(req.headers);
        handler(req, res);
      },
      (e: unknown) => fail(schemaError(serverId, e)),
    );
  };

  const server = await listen(settings, options.tls, options.onTlsClientError, onRequest, onStream);
  let closing: Promise<void> | undefined;
  return {
    url: server.url,
    close() {
      closing ??= (async () => {
        const reason = new ConnectError("the ingress is closing", Code.Unavailable);
        shutdown.abort(reason);
        for (const call of rawCalls) call.abort(reason);
        const stopped = server.close();
        await Promise.allSettled([...inFlight]);
        await server.disconnect();
        await stopped;
        await devices.close();
      })();
      return closing;
    },
  };
}

/** Binary gRPC and gRPC-Web: forwarded as bytes, no schema needed. */
function isRaw(kind: RequestKind): boolean {
  return (
    (kind.protocol === "grpc" ||
      kind.protocol === "grpc-web" ||
      kind.protocol === "grpc-web-text") &&
    kind.codec === "proto"
  );
}

/**
 * Why the handler of `schema` cannot serve `url`: it names no method the
 * schema describes (a device that lists a service without describing it,
 * a gateway routing by name only), which Connect's router would answer
 * with a bare 404. Reflection is served whatever the schema says.
 */
function missingMethod(schema: DeviceSchema, url: string | undefined): ConnectError | undefined {
  const path = url?.split("?", 1)[0];
  const target = methodFromPath(path);
  if (target === undefined) {
    return new ConnectError(`${path ?? ""} is not an RPC method path`, Code.Unimplemented);
  }
  if (target.service.startsWith("grpc.reflection.")) return undefined;
  if (schema.method(target.service, target.method) !== undefined) return undefined;
  return new ConnectError(
    `no schema for ${target.service}/${target.method} (the device does not describe it)`,
    Code.Unimplemented,
  );
}

/**
 * Removes a `grpc-timeout` or `connect-timeout-ms` longer than a timer
 * holds (about 24.8 days; gRPC allows 99999999H) from a request Connect's
 * router will serve: its deadline timer would fire after 1 ms. The call
 * then travels without a deadline, as the runtime sends one that long
 * (PROTOCOL.md section 12), and the client keeps its own.
 */
function dropUntimeableDeadline(headers: IncomingHttpHeaders): void {
  const grpcTimeout = headerValue(headers["grpc-timeout"]);
  if (grpcTimeout !== undefined) {
    const { timeoutMs } = parseTimeout(grpcTimeout, Number.MAX_SAFE_INTEGER);
    if (timeoutMs !== undefined && timeoutMs > MAX_TIMER_MS) delete headers["grpc-timeout"];
  }
  const connectTimeout = headerValue(headers["connect-timeout-ms"]);
  if (connectTimeout !== undefined && Number(connectTimeout) > MAX_TIMER_MS) {
    delete headers["connect-timeout-ms"];
  }
}

function schemaError(serverId: string, e: unknown): ConnectError {
  const error = ConnectError.from(e);
  const hint =
    "JSON and Connect calls need the method's schema: give the ingress a descriptorSet, or call with binary gRPC";
  if (error.code === Code.Unimplemented) {
    return new ConnectError(`device ${serverId}: ${error.rawMessage}; ${hint}`, Code.Unimplemented);
  }
  return new ConnectError(
    `device ${serverId}: its schema could not be learned by reflection: ${error.rawMessage}`,
    error.code,
  );
}

interface IngressSettings {
  readonly host: string;
  readonly port: number;
  readonly schema: DeviceSchema | undefined;
  readonly reflection: boolean;
  readonly schemaTtlMs: number;
  readonly reflectionTimeoutMs: number;
  readonly deviceIdleMs: number;
  readonly maxDevices: number;
  readonly maxMessageBytes: number;
  readonly keepalive: SessionKeepaliveTiming;
}

/**
 * Checks `mqtt`, `topicPrefix` and `transport` as the device transports
 * made on first calls will take them, so that a mistake fails the start
 * rather than every call (and a broker URL's password never reaches an
 * HTTP client in a call's error).
 */
function checkDeviceTransportOptions(options: GrpcIngressOptions): void {
  if (
    options.transport !== undefined &&
    (typeof options.transport !== "object" || options.transport === null)
  ) {
    throw new Error("transport option: must be an object of createMqttTransport options");
  }
  for (const key of ["mqtt", "serverId", "topicPrefix"]) {
    if (options.transport !== undefined && key in options.transport) {
      throw new Error(`transport.${key} option: give it at the top level of the options`);
    }
  }
  try {
    checkMqttTransportOptions({
      ...options.transport,
      mqtt: options.mqtt,
      serverId: "ingress",
      ...(options.topicPrefix !== undefined ? { topicPrefix: options.topicPrefix } : {}),
    });
  } catch (e) {
    const message = (e as Error).message;
    // The runtime names createMqttTransport's options; here they are transport.<name>.
    throw new Error(
      message.startsWith("mqtt option:") || message.startsWith("topicPrefix")
        ? message
        : `transport option: ${message.replace("createMqttTransport", "transport")}`,
      { cause: e },
    );
  }
}

/** Validates the options; errors name the option. */
function ingressSettings(options: GrpcIngressOptions): IngressSettings {
  if (options.mqtt === undefined || options.mqtt === null) {
    throw new Error("mqtt option: give a broker URL, MQTT.js options or an MqttClient");
  }
  checkDeviceTransportOptions(options);
  const host = options.listen?.host ?? "127.0.0.1";
  const port = options.listen?.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`listen.port option: ${String(port)} is not a port number (0 to 65535)`);
  }
  if (
    options.tls !== undefined &&
    (options.tls.key === undefined || options.tls.cert === undefined)
  ) {
    throw new Error("tls option: give both key and cert");
  }
  if (options.tls !== undefined) checkTlsPair(options.tls);
  if (options.onTlsClientError !== undefined && typeof options.onTlsClientError !== "function") {
    throw new Error("onTlsClientError option: must be a function");
  }
  const reflection = options.reflection ?? true;
  const schema =
    options.descriptorSet !== undefined
      ? schemaFromDescriptorSet(options.descriptorSet)
      : undefined;
  return {
    host,
    port,
    schema,
    reflection,
    schemaTtlMs: positive("schemaTtlMs", options.schemaTtlMs, 60_000),
    reflectionTimeoutMs: positive("reflectionTimeoutMs", options.reflectionTimeoutMs, 10_000),
    deviceIdleMs: positive("deviceIdleMs", options.deviceIdleMs, 60_000),
    maxDevices: positive("maxDevices", options.maxDevices, 10_000),
    maxMessageBytes: positive("maxMessageBytes", options.maxMessageBytes, 4 * 1024 * 1024),
    keepalive: {
      timeMs: timerMs("keepaliveTimeMs", options.keepaliveTimeMs, 2 * 60 * 60 * 1000),
      timeoutMs: timerMs("keepaliveTimeoutMs", options.keepaliveTimeoutMs, 20_000),
    },
  };
}

/**
 * Checks that `tls.key` is the private key of `tls.cert`'s certificate
 * (the first of the chain), and that OpenSSL takes the options. OpenSSL
 * keeps keys of different types (RSA, EC) in slots of their own, so an EC
 * key with an RSA certificate passes its own check and then fails every
 * handshake; here it is an error naming the option.
 */
function checkTlsPair(options: NonNullable<GrpcIngressOptions["tls"]>): void {
  const pem = (value: unknown) => typeof value === "string" || Buffer.isBuffer(value);
  // Arrays of keys and certificates (one per key type): left to OpenSSL.
  if (pem(options.cert) && pem(options.key)) checkKeyOfCertificate(options);
  try {
    tls.createSecureContext(options);
  } catch (e) {
    throw new Error(`tls option: ${(e as Error).message}`, { cause: e });
  }
}

function checkKeyOfCertificate(options: NonNullable<GrpcIngressOptions["tls"]>): void {
  // Node's TLS takes PEM only; X509Certificate and createPrivateKey take DER too.
  if (!options.cert.toString("latin1").includes("-----BEGIN")) {
    throw new Error(
      "tls.cert option: not PEM (a DER certificate? convert it: openssl x509 -inform der -in cert.der -out cert.pem)",
    );
  }
  if (!options.key.toString("latin1").includes("-----BEGIN")) {
    throw new Error(
      "tls.key option: not PEM (a DER key? convert it: openssl pkey -inform der -in key.der -out key.pem)",
    );
  }
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(options.cert);
  } catch (e) {
    throw new Error(`tls.cert option: not a PEM certificate (${(e as Error).message})`, {
      cause: e,
    });
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(
      options.passphrase !== undefined
        ? { key: options.key, passphrase: options.passphrase }
        : options.key,
    );
  } catch (e) {
    const encrypted = /ENCRYPTED/.test(options.key.toString());
    const problem = !encrypted
      ? "not a PEM private key"
      : options.passphrase === undefined
        ? "an encrypted private key: give tls.passphrase"
        : "an encrypted private key that tls.passphrase does not decrypt";
    throw new Error(`tls.key option: ${problem} (${(e as Error).message})`, { cause: e });
  }
  if (!certificate.checkPrivateKey(key)) {
    const keyType = key.asymmetricKeyType;
    const certType = certificate.publicKey.asymmetricKeyType;
    const types =
      keyType !== certType
        ? ` (the key is ${keyType?.toUpperCase() ?? "?"}, the certificate's ${certType?.toUpperCase() ?? "?"})`
        : "";
    throw new Error(
      `tls.key option: not the private key of the tls.cert certificate (${certificate.subject.replaceAll("\n", ", ")})${types}`,
    );
  }
}

/** A positive whole number of ms a timer can wait, or `fallback`. */
function timerMs(name: string, value: number | undefined, fallback: number): number {
  const ms = positive(name, value, fallback);
  if (ms > MAX_TIMER_MS) {
    throw new Error(`${name} option: ${ms} ms is longer than a timer waits (${MAX_TIMER_MS} ms)`);
  }
  return ms;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`${name} option: ${String(value)} is not a positive integer`);
  }
  return value;
}

/** A listening HTTP server of the ingress. */
interface Listening {
  readonly url: string;
  /** Stops accepting connections; resolves once every connection is gone. */
  close(): Promise<void>;
  /** Closes the connections left (GOAWAY on HTTP/2), destroying what does not close at once. */
  disconnect(): Promise<void>;
}

/** How long {@link GrpcIngress.close} lets clients' connections take the calls' last bytes, ms. */
const CLOSE_FLUSH_MS = 2_000;

/** The HTTP/2 connection preface; HTTP/1.1 requests never start with it (RFC 9113 3.4). */
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

async function listen(
  settings: IngressSettings,
  tlsOptions: GrpcIngressOptions["tls"],
  onTlsClientError: GrpcIngressOptions["onTlsClientError"],
  onRequest: (req: HttpRequest, res: HttpResponse) => void,
  onStream: (
    stream: http2.ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    rawHeaders: readonly string[] | undefined,
  ) => boolean,
): Promise<Listening> {
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<net.Socket>();
  const h2Options: http2.ServerOptions = {
    maxHeaderListPairs: MAX_HEADER_LIST_PAIRS,
    ...tlsOptions,
  };
  // HTTP/2 streams onStream leaves (Connect, JSON codecs) are served through
  // the compatibility API: by a server that never listens, whose request
  // listener turns the streams it is handed into requests and responses.
  const compat = http2.createServer(
    h2Options,
    onRequest as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  const h2 = http2.createServer(h2Options);
  h2.on("stream", (stream, headers, flags, rawHeaders?: string[]) => {
    if (!onStream(stream, headers, rawHeaders))
      compat.emit("stream", stream, headers, flags, rawHeaders);
  });
  h2.on("session", (session) => {
    track(sessions, session);
    keepSessionAlive(session, settings.keepalive);
  });
  const h1 = http.createServer(onRequest as http.RequestListener);
  let server: net.Server;
  if (tlsOptions !== undefined) {
    // HTTP/2 when ALPN chose h2, HTTP/1.1 otherwise (also without ALPN), as
    // http2.createSecureServer does with allowHTTP1 (the default here).
    const http1 = tlsOptions.allowHTTP1 !== false;
    const ALPNProtocols = http1 ? ["h2", "http/1.1"] : ["h2"];
    const secure = tls.createServer({ ...tlsOptions, ALPNProtocols }, (socket) => {
      if (socket.alpnProtocol === "h2") h2.emit("connection", socket);
      else if (http1) h1.emit("connection", socket);
      else socket.destroy();
    });
    server = secure;
    if (onTlsClientError !== undefined) {
      secure.on("tlsClientError", (error, socket) => {
        try {
          onTlsClientError(error, socket);
        } catch {
          // The application's callback: its failure is not the connection's.
        }
      });
    }
  } else {
    // Cleartext: one port for h2c with prior knowledge and HTTP/1.1, told
    // apart by the first bytes a client sends.
    server = net.createServer((socket) => {
      socket.once("data", (chunk: Buffer) => {
        socket.pause();
        socket.unshift(chunk);
        const n = Math.min(chunk.length, PREFACE.length);
        const isHttp2 = chunk.subarray(0, n).equals(PREFACE.subarray(0, n));
        (isHttp2 ? h2 : h1).emit("connection", socket);
        if (!isHttp2) socket.resume();
      });
    });
  }
  server.on("connection", (socket: net.Socket) => {
    socket.setNoDelay(true);
    track(sockets, socket);
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error) =>
      reject(
        new Error(
          `listen option: cannot listen on ${settings.host}:${settings.port} (${e.message})`,
        ),
      );
    server.once("error", onError);
    server.listen(settings.port, settings.host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `${tlsOptions !== undefined ? "https" : "http"}://${host}:${address.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    async disconnect() {
      // A session closes once its last stream ended: the calls' statuses
      // (HTTP/2 trailers, sent when the data before them is out) reach the
      // clients first. What is still open after CLOSE_FLUSH_MS (a client
      // that does not read, a connection that never spoke) is cut.
      const closed = [...sessions].map((session) => {
        const done = new Promise((resolve) => session.once("close", resolve));
        session.close();
        return done;
      });
      h1.closeAllConnections();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(closed),
        new Promise((resolve) => {
          timer = setTimeout(resolve, CLOSE_FLUSH_MS);
        }),
      ]);
      clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
    },
  };
}

function track<T extends { once(event: "close", listener: () => void): unknown }>(
  set: Set<T>,
  item: T,
): void {
  set.add(item);
  item.once("close", () => set.delete(item));
}

/** How many times `name` (lower case) occurs in `rawHeaders` (name, value, name, value, …). */
function headerCount(rawHeaders: readonly string[], name: string): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() === name) count++;
  }
  return count;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
