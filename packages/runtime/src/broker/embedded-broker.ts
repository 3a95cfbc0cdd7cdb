/**
 * An in-process MQTT broker (Aedes) for demos, tests and single-process
 * deployments, optionally with authentication and a Mosquitto-style ACL.
 * Aedes, `ws` and the `node:` modules are imported only when
 * {@link startEmbeddedBroker} runs, so the client's import graph stays free of
 * Node-only modules (and the package's browser entry leaves this file out).
 */

import type { Aedes, AedesOptions, AedesPublishPacket, Subscription } from "aedes";
import { type ClientAcl, type MosquittoAcl, parseMosquittoAcl } from "./mosquitto-acl.js";

/** Who a connection is: its MQTT client id and the username it connected with. */
export interface EmbeddedBrokerClient {
  /** The client id from its CONNECT; `""` in a denial for a client no longer connected. */
  readonly clientId: string;
  /** Undefined when the client sent no username. */
  readonly username: string | undefined;
}

/** A publish (or last will) offered to {@link EmbeddedBrokerOptions.authorizePublish}. */
export interface EmbeddedBrokerPublish {
  /** The topic name published to (no wildcards). */
  readonly topic: string;
  /** The message as published, in bytes (a Node.js `Buffer`). */
  readonly payload: Uint8Array;
  /** The QoS the client published with (for a will, the will's QoS). */
  readonly qos: 0 | 1 | 2;
  /** Whether the broker is to keep it as the topic's retained message. */
  readonly retain: boolean;
  /** True for the client's last will, checked when the broker is about to publish it. */
  readonly will: boolean;
}

/** Something the broker refused, as reported to {@link EmbeddedBrokerOptions.onDenied}. */
export interface EmbeddedBrokerDenial {
  /**
   * `connect`: CONNECT refused (CONNACK {@link returnCode}); `publish`: a
   * PUBLISH dropped; `will`: a last will not published; `subscribe`: a
   * subscription refused (SUBACK 0x80); `receive`: a message not delivered
   * to a subscriber (`read` denied by the ACL).
   */
  readonly action: "connect" | "publish" | "will" | "subscribe" | "receive";
  /**
   * The client refused: for `connect` the client id and username of its
   * CONNECT; `clientId` `""` and no username when the broker no longer
   * knows the client (e.g. the stale last will of a client gone).
   */
  readonly client: EmbeddedBrokerClient;
  /** The topic (publish, will, receive) or filter (subscribe); absent for connect. */
  readonly topic?: string;
  /** Why, in words; client ids, usernames and topics quoted as JSON strings. */
  readonly reason: string;
  /**
   * For `connect`: the MQTT 3.1.1 CONNACK return code sent: 2 identifier
   * rejected, 3 server unavailable, 4 bad username or password, 5 not authorized.
   */
  readonly returnCode?: 2 | 3 | 4 | 5;
}

/**
 * Options for {@link startEmbeddedBroker}. Unknown options, values of the
 * wrong type and malformed ACL lines are refused with an Error naming the
 * option (and the line).
 */
export interface EmbeddedBrokerOptions {
  /** TCP port; 0 (the default) picks a free one. */
  readonly port?: number;
  /** Interface to listen on; defaults to the loopback address 127.0.0.1. */
  readonly host?: string;
  /**
   * Also serve MQTT over WebSockets, as browsers need (they cannot open
   * TCP sockets): `true` listens on a free port, `{ port }` on that port
   * (0: a free one), on the same {@link EmbeddedBrokerOptions.host}, with
   * TCP_NODELAY on every accepted socket. Any request path is accepted;
   * {@link EmbeddedBroker.wsUrl} names `/mqtt`, MQTT.js's default. Plain
   * `ws://` only: for `wss://` put a TLS terminator in front, or use a real
   * broker (README, "Browsers"). Default: false (TCP only).
   */
  readonly websocket?: boolean | { readonly port?: number };
  /**
   * Accounts, username → password: a client must send one of these
   * usernames with its password (compared in constant time, as UTF-8 bytes)
   * or is refused with CONNACK 4 (bad username or password), or 5 (not
   * authorized) when it sends no username. Not with {@link authenticate}.
   */
  readonly users?: Readonly<Record<string, string>>;
  /**
   * Custom authentication: resolves true to let the client in. Anything
   * else refuses it with CONNACK 4 (5 when it sent no username); a throw or
   * rejection refuses it with CONNACK 3 (server unavailable). The password
   * is the raw bytes of the CONNECT packet. Not with {@link users}.
   */
  readonly authenticate?: (
    username: string | undefined,
    password: Uint8Array | undefined,
    clientId: string,
  ) => boolean | Promise<boolean>;
  /**
   * The client id is the username (the meaning of Mosquitto's
   * `use_username_as_clientid true`): each account has exactly one client
   * id, so `%c` in the ACL names the account and no account can take over
   * another's client id (and kick it off, read its replies or call under
   * its key). Aedes cannot rewrite client ids as Mosquitto does, so a client
   * whose id differs from its username is refused at CONNECT with return
   * code 2 (identifier rejected), one without a username with 5 (not
   * authorized). Connect with `clientId` equal to `username`.
   *
   * Default: true when {@link users} or {@link authenticate} is given,
   * false otherwise.
   */
  readonly usernameAsClientId?: boolean;
  /**
   * Access control in Mosquitto `acl_file` syntax (`user`, `topic` and
   * `pattern` lines with `read`, `write`, `readwrite` or `deny`, `%c` and
   * `%u` as whole levels, `#` comments): docs/mosquitto-acl.conf works
   * unchanged. Once given, everything not granted is denied. `write`
   * governs PUBLISH, retained messages and last wills; `read` governs
   * SUBSCRIBE (the whole filter must fall under one `read` rule) and every
   * message delivered, retained ones included. See mosquitto-acl.ts for the
   * evaluation order.
   */
  readonly acl?: string;
  /**
   * A further check for each PUBLISH and last will the ACL (if any)
   * allowed: resolve true to allow. A refusal, throw or rejection drops the
   * message as the ACL does.
   */
  readonly authorizePublish?: (
    client: EmbeddedBrokerClient,
    publish: EmbeddedBrokerPublish,
  ) => boolean | Promise<boolean>;
  /**
   * A further check for each subscription the ACL (if any) allowed,
   * including those restored from a persistent session: resolve true to
   * allow. A refusal, throw or rejection answers SUBACK 0x80.
   */
  readonly authorizeSubscribe?: (
    client: EmbeddedBrokerClient,
    filter: string,
    qos: number,
  ) => boolean | Promise<boolean>;
  /** Called for every refusal (see {@link EmbeddedBrokerDenial}); exceptions are ignored. */
  readonly onDenied?: (denial: EmbeddedBrokerDenial) => void;
}

/** A running embedded broker. */
export interface EmbeddedBroker {
  /** `mqtt://host:port`, ready for `createMqttTransport({ mqtt: url })`. */
  readonly url: string;
  /** The port actually bound. */
  readonly port: number;
  /**
   * With {@link EmbeddedBrokerOptions.websocket}: `ws://host:port/mqtt`,
   * ready for `createMqttTransport({ mqtt: wsUrl })` in a browser (or in
   * Node, where MQTT.js speaks WebSockets too). Undefined otherwise.
   */
  readonly wsUrl: string | undefined;
  /** The WebSocket port actually bound; undefined without {@link EmbeddedBrokerOptions.websocket}. */
  readonly wsPort: number | undefined;
  /** Disconnects every client and stops listening (TCP and WebSocket). */
  close(): Promise<void>;
}

const OPTION_NAMES: ReadonlySet<string> = new Set<keyof EmbeddedBrokerOptions>([
  "port",
  "host",
  "websocket",
  "users",
  "authenticate",
  "usernameAsClientId",
  "acl",
  "authorizePublish",
  "authorizeSubscribe",
  "onDenied",
]);

/**
 * Starts Aedes on a TCP port (free by default) with TCP_NODELAY on every
 * accepted socket: without it a QoS 1 round trip on loopback waits for
 * delayed ACKs and takes tens of milliseconds instead of a fraction of one.
 * With `websocket` it also serves MQTT over WebSockets (for browsers) on a
 * second port, see {@link EmbeddedBrokerOptions.websocket}.
 * Speaks MQTT 3.1.1 (Aedes has no MQTT 5), so refusals are the 3.1.1 ones:
 * a CONNACK return code, SUBACK 0x80, and a refused PUBLISH acknowledged and
 * dropped (as Mosquitto does on 3.1.1; the connection stays up).
 *
 * **Without options it has no authentication and no ACL.** Any client that
 * reaches it can read, forge and cancel every call and write any server's
 * presence, retained and as its last will. It listens on 127.0.0.1 unless
 * given another `host`; do not expose it on a network you do not trust.
 *
 * **With {@link EmbeddedBrokerOptions.users} (or `authenticate`) and
 * {@link EmbeddedBrokerOptions.acl}** it enforces the layout of
 * docs/mosquitto-acl.conf as Mosquitto does: only known accounts connect,
 * each with its username as client id (`usernameAsClientId`), a caller
 * reads only its own reply topics and publishes requests only under its
 * own key, a server reads only its own request topics and writes only its
 * own reply topics and presence (retained messages and last wills
 * included). mqrpc servers and callers then connect with `clientId` equal
 * to their username (so usernames must be valid mqrpc client ids: A-Z a-z
 * 0-9 _ -). Authentication without an ACL keeps strangers out and accounts
 * off each other's client ids, but every account may still read and write
 * every topic, so any account can read, forge and cancel every call. An
 * ACL without authentication binds topics to client ids and usernames the
 * clients choose themselves: it stops mistakes, not attackers.
 *
 * It never protects: the traffic itself (plain TCP; no TLS here: put it
 * behind a TLS terminator or use a real broker), against denial of service
 * (no connection, rate or queue limits beyond Aedes' defaults), or against
 * code in the same process.
 *
 * @throws Error naming the option for an unknown option or a bad value, and
 *   the line for a malformed `acl`.
 */
export async function startEmbeddedBroker(
  options: EmbeddedBrokerOptions = {},
): Promise<EmbeddedBroker> {
  const settings = checkOptions(options);
  const [{ Aedes }, net, crypto, webSocket] = await Promise.all([
    importAedes(),
    import("node:net"),
    import("node:crypto"),
    settings.wsPort === undefined ? undefined : importWebSocket(),
  ]);
  const hooks = settings.secured ? securityHooks(settings, crypto) : undefined;
  const aedes = await Aedes.createBroker(hooks?.aedesOptions ?? {});
  if (hooks !== undefined) {
    // A refused PUBLISH is acknowledged and dropped, as Mosquitto does on
    // MQTT 3.1.1: Aedes would close the connection instead, and a client
    // that resends its unacknowledged publishes after reconnecting would
    // loop, losing every other call on its connection. authorizePublish
    // marks the packet; the broker's publish (which the PUBLISH handler and
    // the last will both go through after authorization) skips it.
    const publish = aedes.publish.bind(aedes) as unknown as PublishFunction;
    const skipRefused: PublishFunction = (packet, client, done) => {
      if (hooks.refused.has(packet)) {
        const callback = typeof client === "function" ? client : done;
        callback?.();
        return;
      }
      publish(packet, client, done);
    };
    (aedes as unknown as { publish: PublishFunction }).publish = skipRefused;
  }
  const sockets = new Set<import("node:net").Socket>();
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    aedes.handle(socket);
  });
  const boundPort = await listen(server, settings.port, settings.host);
  let ws: WebSocketListener | undefined;
  if (webSocket !== undefined && settings.wsPort !== undefined) {
    try {
      ws = await listenWebSocket(webSocket, aedes, settings.wsPort, settings.host);
    } catch (e) {
      server.close();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      throw e;
    }
  }
  const urlHost = settings.host.includes(":") ? `[${settings.host}]` : settings.host;
  let closing: Promise<void> | undefined;
  return {
    url: `mqtt://${urlHost}:${boundPort}`,
    port: boundPort,
    wsUrl: ws === undefined ? undefined : `ws://${urlHost}:${ws.port}/mqtt`,
    wsPort: ws?.port,
    close() {
      closing ??= (async () => {
        // server.close() only stops accepting; its callback waits for every
        // accepted connection to end. Clients reconnect rather than leave,
        // so the connections are ended here: Aedes closes the clients it
        // knows (publishing their wills), then whatever is left (sockets
        // that never sent CONNECT, or that Aedes is still closing) is
        // destroyed.
        const stopped = [
          new Promise<void>((resolve) => server.close(() => resolve())),
          ws?.stopAccepting(),
        ];
        await new Promise<void>((resolve) => aedes.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        ws?.destroySockets();
        await Promise.all(stopped);
      })();
      return closing;
    },
  };
}

/** Listens on `port` (0: a free one) and resolves with the port bound. */
async function listen(
  server: import("node:net").Server,
  port: number,
  host: string,
): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  return typeof address === "object" && address !== null ? address.port : port;
}

/** The WebSocket side of the broker: an HTTP server that upgrades to MQTT. */
interface WebSocketListener {
  readonly port: number;
  /** Stops accepting; resolves once every accepted connection has ended. */
  stopAccepting(): Promise<void>;
  /** Ends the connections still open (call after Aedes closed its clients). */
  destroySockets(): void;
}

type WebSocketModules = Awaited<ReturnType<typeof importWebSocket>>;

async function importWebSocket() {
  const [http, ws] = await Promise.all([import("node:http"), import("ws")]);
  return { http, ws };
}

/**
 * MQTT over WebSockets (one binary WebSocket message per chunk of the MQTT
 * byte stream, as MQTT.js and Mosquitto do), handed to Aedes as a stream.
 * The subprotocol the client asks for first (`mqtt`, or `mqttv3.1`) is
 * accepted, as `ws` does by default.
 */
async function listenWebSocket(
  { http, ws }: WebSocketModules,
  aedes: Aedes,
  port: number,
  host: string,
): Promise<WebSocketListener> {
  const sockets = new Set<import("node:net").Socket>();
  const server = http.createServer((_request, response) => {
    response.writeHead(426, { "content-type": "text/plain" }).end("MQTT over WebSockets only\n");
  });
  server.on("connection", (socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  const wss = new ws.WebSocketServer({ server });
  // Errors of a failed handshake or a torn connection concern that client
  // only; the connection is closed and the broker goes on.
  wss.on("error", () => {});
  wss.on("connection", (socket, request) => {
    const stream = ws.createWebSocketStream(socket);
    stream.on("error", () => stream.destroy());
    aedes.handle(stream, request);
  });
  const boundPort = await listen(server, port, host);
  return {
    port: boundPort,
    stopAccepting: () =>
      new Promise<void>((resolve) => {
        wss.close();
        server.close(() => resolve());
      }),
    destroySockets() {
      for (const socket of sockets) socket.destroy();
    },
  };
}

/**
 * Aedes is an optional peer dependency, so that clients and browser bundles
 * install no broker: a missing one is named with the command that adds it.
 */
async function importAedes(): Promise<typeof import("aedes")> {
  try {
    return await import("aedes");
  } catch (e) {
    if ((e as { code?: unknown } | null)?.code === "ERR_MODULE_NOT_FOUND") {
      throw new Error(
        "startEmbeddedBroker needs the package aedes, an optional peer dependency of " +
          "@mqrpc/runtime: install it with `npm install aedes@^1.2.0`",
        { cause: e },
      );
    }
    throw e;
  }
}

type PublishFunction = (
  packet: object,
  client: unknown,
  done?: (error?: Error | null) => void,
) => void;

interface Settings {
  readonly port: number;
  readonly host: string;
  /** The WebSocket port to listen on (0: a free one), undefined for none. */
  readonly wsPort: number | undefined;
  readonly users: ReadonlyMap<string, string> | undefined;
  readonly authenticate: EmbeddedBrokerOptions["authenticate"];
  readonly usernameAsClientId: boolean;
  readonly acl: MosquittoAcl | undefined;
  readonly authorizePublish: EmbeddedBrokerOptions["authorizePublish"];
  readonly authorizeSubscribe: EmbeddedBrokerOptions["authorizeSubscribe"];
  readonly onDenied: EmbeddedBrokerOptions["onDenied"];
  /** Whether any check is configured; without one Aedes runs with its defaults. */
  readonly secured: boolean;
}

function checkOptions(options: EmbeddedBrokerOptions): Settings {
  if (typeof options !== "object" || options === null) {
    throw new Error(`startEmbeddedBroker: options must be an object, got ${String(options)}`);
  }
  for (const name of Object.keys(options)) {
    if (!OPTION_NAMES.has(name)) {
      throw new Error(
        `startEmbeddedBroker: unknown option ${JSON.stringify(name)} (known: ${[...OPTION_NAMES].join(", ")})`,
      );
    }
  }
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(
      `startEmbeddedBroker: option port must be an integer from 0 to 65535, got ${port}`,
    );
  }
  const host = options.host ?? "127.0.0.1";
  if (typeof host !== "string" || host === "") {
    throw new Error(`startEmbeddedBroker: option host must be a non-empty string`);
  }
  const wsPort = websocketPort(options.websocket);
  const functionOption = <K extends keyof EmbeddedBrokerOptions>(name: K) => {
    const value = options[name];
    if (value !== undefined && typeof value !== "function") {
      throw new Error(
        `startEmbeddedBroker: option ${name} must be a function, got ${typeof value}`,
      );
    }
    return value;
  };
  const authenticate = functionOption("authenticate");
  const authorizePublish = functionOption("authorizePublish");
  const authorizeSubscribe = functionOption("authorizeSubscribe");
  const onDenied = functionOption("onDenied");
  let users: Map<string, string> | undefined;
  if (options.users !== undefined) {
    if (
      typeof options.users !== "object" ||
      options.users === null ||
      Array.isArray(options.users)
    ) {
      throw new Error("startEmbeddedBroker: option users must be an object of username → password");
    }
    if (authenticate !== undefined) {
      throw new Error(
        "startEmbeddedBroker: give either option users or option authenticate, not both",
      );
    }
    users = new Map();
    for (const [username, password] of Object.entries(options.users)) {
      if (username === "" || typeof password !== "string") {
        throw new Error(
          `startEmbeddedBroker: option users must map non-empty usernames to password strings (${JSON.stringify(username)} does not)`,
        );
      }
      users.set(username, password);
    }
  }
  if (options.usernameAsClientId !== undefined && typeof options.usernameAsClientId !== "boolean") {
    throw new Error("startEmbeddedBroker: option usernameAsClientId must be a boolean");
  }
  const usernameAsClientId =
    options.usernameAsClientId ?? (users !== undefined || authenticate !== undefined);
  let acl: MosquittoAcl | undefined;
  if (options.acl !== undefined) {
    if (typeof options.acl !== "string") {
      throw new Error(
        "startEmbeddedBroker: option acl must be a string in Mosquitto acl_file syntax",
      );
    }
    try {
      acl = parseMosquittoAcl(options.acl);
    } catch (e) {
      throw new Error(
        `startEmbeddedBroker: option acl, ${e instanceof Error ? e.message : String(e)}`,
        { cause: e },
      );
    }
  }
  return {
    port,
    host,
    wsPort,
    users,
    authenticate,
    usernameAsClientId,
    acl,
    authorizePublish,
    authorizeSubscribe,
    onDenied,
    secured:
      users !== undefined ||
      authenticate !== undefined ||
      usernameAsClientId ||
      acl !== undefined ||
      authorizePublish !== undefined ||
      authorizeSubscribe !== undefined,
  };
}

/** The WebSocket port that option `websocket` asks for, or undefined for none. */
function websocketPort(websocket: EmbeddedBrokerOptions["websocket"]): number | undefined {
  if (websocket === undefined || websocket === false) return undefined;
  if (websocket === true) return 0;
  if (typeof websocket !== "object" || websocket === null || Array.isArray(websocket)) {
    throw new Error(
      `startEmbeddedBroker: option websocket must be true, false or { port }, got ${String(websocket)}`,
    );
  }
  for (const name of Object.keys(websocket)) {
    if (name !== "port") {
      throw new Error(
        `startEmbeddedBroker: option websocket has an unknown field ${JSON.stringify(name)} (known: port)`,
      );
    }
  }
  const port = websocket.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(
      `startEmbeddedBroker: option websocket.port must be an integer from 0 to 65535, got ${port}`,
    );
  }
  return port;
}

/** The parts of an Aedes client these hooks use (its `id`; the object's identity). */
interface AedesClient {
  readonly id: string;
}

/** What is known about an accepted connection. */
interface Connection {
  readonly client: EmbeddedBrokerClient;
  readonly acl: ClientAcl | undefined;
}

interface Refusal {
  readonly returnCode: 2 | 3 | 4 | 5;
  readonly reason: string;
}

const quote = (text: string | undefined) => (text === undefined ? "(none)" : JSON.stringify(text));

/** Aedes hooks enforcing the settings, and the set of publishes they refused. */
function securityHooks(settings: Settings, crypto: typeof import("node:crypto")) {
  const connections = new WeakMap<object, Connection>();
  const refused = new WeakSet<object>();
  const verifyPassword = settings.users && passwordVerifier(settings.users, crypto);

  const report = (denial: EmbeddedBrokerDenial) => {
    try {
      settings.onDenied?.(denial);
    } catch {
      // A failing observer must not change what the broker does.
    }
  };

  async function refusalOf(
    client: EmbeddedBrokerClient,
    password: Uint8Array | undefined,
  ): Promise<Refusal | undefined> {
    const { clientId, username } = client;
    if (verifyPassword !== undefined) {
      if (username === undefined) {
        return { returnCode: 5, reason: "no username: this broker requires one (option users)" };
      }
      if (!verifyPassword(username, password)) {
        return { returnCode: 4, reason: `wrong username or password for ${quote(username)}` };
      }
    }
    if (settings.authenticate !== undefined) {
      let accepted: unknown;
      try {
        accepted = await settings.authenticate(username, password, clientId);
      } catch (e) {
        return {
          returnCode: 3,
          reason: `the authenticate hook failed: ${e instanceof Error ? e.message : String(e)}`,
        };
      }
      if (accepted !== true) {
        return {
          returnCode: username === undefined ? 5 : 4,
          reason: `the authenticate hook refused ${quote(username)}`,
        };
      }
    }
    if (settings.usernameAsClientId) {
      if (username === undefined) {
        return {
          returnCode: 5,
          reason: "no username: with usernameAsClientId the client id must be the username",
        };
      }
      if (clientId !== username) {
        return {
          returnCode: 2,
          reason: `client id ${quote(clientId)} is not the username ${quote(username)} (usernameAsClientId: connect with the username as client id)`,
        };
      }
    }
    return undefined;
  }

  /** Runs an optional hook; a throw or rejection counts as a refusal, with its message. */
  async function hookAllows(
    hook: () => boolean | Promise<boolean>,
    name: string,
  ): Promise<string | undefined> {
    try {
      return (await hook()) === true ? undefined : `refused by ${name}`;
    } catch (e) {
      return `${name} failed: ${e instanceof Error ? e.message : String(e)}`;
    }
  }

  const unknownClient: EmbeddedBrokerClient = { clientId: "", username: undefined };

  const aedesOptions: AedesOptions = {
    authenticate(
      client: AedesClient,
      username: string | undefined,
      password: Buffer | undefined,
      done: (error: (Error & { returnCode: number }) | null, success: boolean | null) => void,
    ) {
      const identity: EmbeddedBrokerClient = {
        clientId: client.id,
        username: typeof username === "string" ? username : undefined,
      };
      void refusalOf(identity, password).then((refusal) => {
        if (refusal === undefined) {
          connections.set(client, { client: identity, acl: settings.acl?.forClient(identity) });
          done(null, true);
          return;
        }
        report({ action: "connect", client: identity, ...refusal });
        done(Object.assign(new Error(refusal.reason), { returnCode: refusal.returnCode }), false);
      });
    },

    authorizePublish(
      client: AedesClient | null,
      packet: {
        cmd?: string;
        topic: string;
        payload: Buffer | string;
        qos: 0 | 1 | 2;
        retain?: boolean;
      },
      callback: (error?: Error | null) => void,
    ) {
      if (packet.topic.startsWith("$SYS/")) {
        // Aedes' own default: clients never publish on $SYS.
        callback(new Error("$SYS/ topic is reserved"));
        return;
      }
      const will = packet.cmd !== "publish";
      const connection = client === null ? undefined : connections.get(client);
      const refuse = (reason: string) => {
        refused.add(packet);
        report({
          action: will ? "will" : "publish",
          client: connection?.client ?? unknownClient,
          topic: packet.topic,
          reason,
        });
        callback(null);
      };
      if (connection === undefined) {
        // A stale last will of a client no longer connected: whose it was is
        // unknown, so nothing the ACL or hook could check.
        if (settings.acl === undefined && settings.authorizePublish === undefined) callback(null);
        else refuse("the publishing client is not connected");
        return;
      }
      if (connection.acl !== undefined && !connection.acl.canPublish(packet.topic)) {
        refuse(`the acl grants ${quote(connection.client.username)} no write access`);
        return;
      }
      const hook = settings.authorizePublish;
      if (hook === undefined) {
        callback(null);
        return;
      }
      const publish: EmbeddedBrokerPublish = {
        topic: packet.topic,
        payload: typeof packet.payload === "string" ? Buffer.from(packet.payload) : packet.payload,
        qos: packet.qos,
        retain: packet.retain === true,
        will,
      };
      void hookAllows(() => hook(connection.client, publish), "authorizePublish").then((reason) =>
        reason === undefined ? callback(null) : refuse(reason),
      );
    },

    authorizeSubscribe(
      client: AedesClient,
      subscription: Subscription,
      callback: (error: Error | null, subscription?: Subscription | null) => void,
    ) {
      const connection = connections.get(client);
      const refuse = (reason: string) => {
        report({
          action: "subscribe",
          client: connection?.client ?? unknownClient,
          topic: subscription.topic,
          reason,
        });
        // A null subscription is a refusal: SUBACK 0x80 for this filter.
        callback(null, null);
      };
      if (connection === undefined) {
        refuse("the subscribing client is not connected");
        return;
      }
      if (connection.acl !== undefined && !connection.acl.canSubscribe(subscription.topic)) {
        refuse(`the acl grants ${quote(connection.client.username)} no read access to all of it`);
        return;
      }
      const hook = settings.authorizeSubscribe;
      if (hook === undefined) {
        callback(null, subscription);
        return;
      }
      void hookAllows(
        () => hook(connection.client, subscription.topic, subscription.qos),
        "authorizeSubscribe",
      ).then((reason) => (reason === undefined ? callback(null, subscription) : refuse(reason)));
    },

    ...(settings.acl !== undefined
      ? {
          // Every delivery, retained messages and resumed sessions included.
          authorizeForward(client: AedesClient, packet: AedesPublishPacket) {
            const connection = connections.get(client);
            if (connection?.acl?.canReceive(packet.topic) === true) return packet;
            report({
              action: "receive",
              client: connection?.client ?? unknownClient,
              topic: packet.topic,
              reason: `the acl grants ${quote(connection?.client.username)} no read access`,
            });
            return null;
          },
        }
      : {}),
  };
  return { aedesOptions, refused };
}

/**
 * A constant-time password check: SHA-256 of both sides compared with
 * timingSafeEqual, against a random digest for unknown usernames, so the
 * time taken says nothing about the password or whether the user exists.
 */
function passwordVerifier(
  users: ReadonlyMap<string, string>,
  crypto: typeof import("node:crypto"),
): (username: string, password: Uint8Array | undefined) => boolean {
  const digest = (bytes: Uint8Array | string) => crypto.createHash("sha256").update(bytes).digest();
  const expected = new Map([...users].map(([username, password]) => [username, digest(password)]));
  const nobody = digest(crypto.randomBytes(32));
  return (username, password) => {
    const want = expected.get(username);
    const same = crypto.timingSafeEqual(want ?? nobody, digest(password ?? new Uint8Array(0)));
    return same && want !== undefined && password !== undefined;
  };
}
