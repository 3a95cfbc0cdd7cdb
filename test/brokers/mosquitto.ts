/**
 * Mosquitto 2 started by the tests on a free port with generated config:
 * TCP_NODELAY on, default queue limits (`max_queued_messages` 1000), optional
 * ACL, passwords and persistence, an optional TLS listener with a throwaway
 * CA (see tls-certificates.ts), and a restart on the same port for
 * broker-restart tests. Never daemonized, never on a fixed port unless asked.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  type BrokerProcess,
  findBinary,
  makeTempDir,
  onFreePorts,
  startBrokerProcess,
} from "./broker-process.js";
import { kindSelected } from "./selection.js";
import { TestCertificateAuthority } from "./tls-certificates.js";

/** The TLS listener of {@link MosquittoOptions.tls}. */
export interface MosquittoTlsOptions {
  /**
   * The CA that issues the broker's certificate (for 127.0.0.1 and
   * localhost) and verifies client certificates; the caller keeps and
   * removes it. By default a new one, removed by `stop()`.
   */
  readonly authority?: TestCertificateAuthority;
  /**
   * Mutual TLS: refuse clients without a certificate from the CA
   * (`require_certificate true`) and take the certificate's common name as
   * the MQTT username (`use_identity_as_username true`: no password asked).
   */
  readonly requireCertificate?: boolean;
}

/** The TLS listener of a running Mosquitto. */
export interface MosquittoTls {
  /** `mqtts://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** The CA of the broker's certificate; {@link TestCertificateAuthority.issueClient} makes client certificates. */
  readonly authority: TestCertificateAuthority;
  /** The CA certificate (PEM file) that verifies the broker. */
  readonly caFile: string;
}

/** Options for {@link startMosquitto}. */
export interface MosquittoOptions {
  /** Path of an ACL file (Mosquitto syntax), used as is. */
  readonly aclFile?: string;
  /** ACL file contents; written to the broker's temp dir. Exclusive with `aclFile`. */
  readonly acl?: string;
  /** Path of a `mosquitto_passwd` file; anonymous clients are refused when set. */
  readonly passwordFile?: string;
  /** Users and passwords, hashed with `mosquitto_passwd` into the temp dir. Exclusive with `passwordFile`. */
  readonly users?: Readonly<Record<string, string>>;
  /** Keep sessions, queued and retained messages across `restart()`. Implied by `dataDir`. */
  readonly persistence?: boolean;
  /** Where persistence writes `mosquitto.db`; a temp dir by default. Not removed by `stop()`. */
  readonly dataDir?: string;
  /** More configuration lines, appended. */
  readonly extraConfig?: string;
  /** A fixed port; a free one by default (retried if taken while starting). */
  readonly port?: number;
  /**
   * Also a `protocol websockets` listener, on a second free port (not with
   * `port`). Mosquitto 2.0 binds it on every interface whatever address it
   * is given, and will not start with a websockets listener alone.
   */
  readonly websockets?: boolean;
  /**
   * Also a TLS listener (MQTT over TLS) on another free port (not with
   * `port`), with a server certificate for 127.0.0.1 and localhost; `true`
   * for a new CA and no client certificates. Needs the openssl command.
   * Passwords, ACL and anonymous access are the same on every listener.
   */
  readonly tls?: true | MosquittoTlsOptions;
}

/** A running Mosquitto. */
export interface MosquittoBroker {
  /** `mqtt://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** `ws://127.0.0.1:<port>/mqtt` with `websockets`, else undefined. */
  readonly wsUrl: string | undefined;
  /** The TLS listener with `tls`, else undefined. */
  readonly tls: MosquittoTls | undefined;
  /** The broker's pid (changes on restart). */
  readonly pid: number;
  /** The generated mosquitto.conf. */
  readonly configFile: string;
  /** SIGTERM, wait for the exit, remove the temp dir (and a CA the broker made). Idempotent. */
  stop(): Promise<void>;
  /**
   * Stops (SIGTERM: a clean shutdown, which publishes the clients' wills)
   * and starts again on the same port with the same config and persistence
   * dir, after staying down `downMs` (default 0).
   */
  restart(options?: { readonly downMs?: number }): Promise<void>;
}

/** The mosquitto binary: `$MQRPC_MOSQUITTO`, else on PATH or in /usr/sbin. */
export function mosquittoPath(): string | undefined {
  return findBinary("mosquitto", "MQRPC_MOSQUITTO");
}

/**
 * Whether tests may use Mosquitto: its binary is installed and
 * `MQRPC_BROKERS` does not leave it out (so `MQRPC_BROKERS=aedes` also skips
 * the suites that start a Mosquitto of their own).
 */
export function mosquittoAvailable(): boolean {
  return mosquittoPath() !== undefined && kindSelected("mosquitto");
}

export async function startMosquitto(options: MosquittoOptions = {}): Promise<MosquittoBroker> {
  const binary = mosquittoPath();
  if (binary === undefined) {
    throw new Error(
      "mosquitto is not installed (apt-get install mosquitto, or set MQRPC_MOSQUITTO)",
    );
  }
  if (options.acl !== undefined && options.aclFile !== undefined) {
    throw new Error("startMosquitto: give acl or aclFile, not both");
  }
  if (options.users !== undefined && options.passwordFile !== undefined) {
    throw new Error("startMosquitto: give users or passwordFile, not both");
  }
  if (options.websockets === true && options.port !== undefined) {
    throw new Error("startMosquitto: websockets needs free ports, not a fixed port");
  }
  if (options.tls !== undefined && options.port !== undefined) {
    throw new Error("startMosquitto: tls needs free ports, not a fixed port");
  }
  const dir = makeTempDir("mqrpc-mosquitto-");
  const tlsOptions = options.tls === true ? {} : options.tls;
  // A CA made here is removed with the broker; one given is the caller's.
  let ownAuthority: TestCertificateAuthority | undefined;
  try {
    if (tlsOptions !== undefined && tlsOptions.authority === undefined) {
      ownAuthority = TestCertificateAuthority.create();
    }
    const authority = tlsOptions?.authority ?? ownAuthority;
    const tlsConfig =
      authority === undefined ? [] : tlsListenerConfig(authority, tlsOptions?.requireCertificate);
    const common = commonConfig(dir.path, options);
    const conf = join(dir.path, "mosquitto.conf");
    const start = (port: number, wsPort: number | undefined, tlsPort: number | undefined) => {
      const listeners = [`listener ${port} 127.0.0.1`];
      if (wsPort !== undefined)
        listeners.push(`listener ${wsPort} 127.0.0.1`, "protocol websockets");
      if (tlsPort !== undefined) listeners.push(`listener ${tlsPort} 127.0.0.1`, ...tlsConfig);
      writeFileSync(conf, [...listeners, ...common, ""].join("\n"));
      return startBrokerProcess({
        name: "mosquitto",
        binary,
        args: ["-c", conf],
        ports: [port, wsPort, tlsPort].filter((p) => p !== undefined),
        ready: /mosquitto version \S+ running/,
      });
    };
    const websockets = options.websockets === true;
    let port = 0;
    let wsPort: number | undefined;
    let tlsPort: number | undefined;
    let proc: BrokerProcess = await onFreePorts(
      1 + (websockets ? 1 : 0) + (authority !== undefined ? 1 : 0),
      options.port === undefined ? undefined : [options.port],
      (ports) => {
        port = ports[0]!;
        wsPort = websockets ? ports[1] : undefined;
        tlsPort = authority !== undefined ? ports[websockets ? 2 : 1] : undefined;
        return start(port, wsPort, tlsPort);
      },
    );
    let stopped = false;
    return {
      url: `mqtt://127.0.0.1:${port}`,
      port,
      wsUrl: wsPort === undefined ? undefined : `ws://127.0.0.1:${wsPort}/mqtt`,
      tls:
        authority === undefined || tlsPort === undefined
          ? undefined
          : {
              url: `mqtts://127.0.0.1:${tlsPort}`,
              port: tlsPort,
              authority,
              caFile: authority.caFile,
            },
      get pid() {
        return proc.pid;
      },
      configFile: conf,
      async stop() {
        stopped = true;
        await proc.stop();
        dir.remove();
        ownAuthority?.remove();
      },
      async restart(restartOptions) {
        if (stopped) throw new Error("restart() after stop()");
        await proc.stop();
        const downMs = restartOptions?.downMs ?? 0;
        if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
        proc = await start(port, wsPort, tlsPort);
      },
    };
  } catch (error) {
    dir.remove();
    ownAuthority?.remove();
    throw error;
  }
}

/** The lines after a TLS listener's `listener` line: its certificates and client-certificate policy. */
function tlsListenerConfig(
  authority: TestCertificateAuthority,
  requireCertificate: boolean | undefined,
): string[] {
  const server = authority.issueServer();
  const lines = [
    `cafile ${authority.caFile}`,
    `certfile ${server.certFile}`,
    `keyfile ${server.keyFile}`,
  ];
  if (requireCertificate === true) {
    lines.push("require_certificate true", "use_identity_as_username true");
  }
  return lines;
}

/** Every config line but the listener. */
function commonConfig(dir: string, options: MosquittoOptions): string[] {
  const lines: string[] = [];
  // Started as root, Mosquitto drops to the `mosquitto` user, which cannot
  // read our private temp dir; a test broker on loopback may stay root.
  if (process.getuid?.() === 0) lines.push("user root");
  let passwordFile = options.passwordFile;
  if (options.users !== undefined) {
    passwordFile = join(dir, "passwd");
    writeFileSync(passwordFile, "", { mode: 0o600 });
    const tool = findBinary("mosquitto_passwd", "MQRPC_MOSQUITTO_PASSWD");
    if (tool === undefined) throw new Error("startMosquitto({ users }) needs mosquitto_passwd");
    for (const [user, password] of Object.entries(options.users)) {
      execFileSync(tool, ["-b", passwordFile, user, password], { stdio: "pipe" });
    }
  }
  lines.push(
    `allow_anonymous ${passwordFile === undefined ? "true" : "false"}`,
    "set_tcp_nodelay true",
    "log_dest stderr",
    // "information" adds the start/stop lines (readiness is "... running")
    // but not one line per connection, which is "notice".
    "log_type error",
    "log_type warning",
    "log_type information",
  );
  if (passwordFile !== undefined) lines.push(`password_file ${passwordFile}`);
  let aclFile = options.aclFile;
  if (options.acl !== undefined) {
    aclFile = join(dir, "acl");
    writeFileSync(aclFile, options.acl);
  }
  if (aclFile !== undefined) lines.push(`acl_file ${aclFile}`);
  const persistence = options.persistence ?? options.dataDir !== undefined;
  lines.push(`persistence ${persistence}`);
  if (persistence) {
    const location = options.dataDir ?? dir;
    lines.push(`persistence_location ${location.endsWith("/") ? location : `${location}/`}`);
    // Also on disk within a second when a test SIGKILLs the broker.
    lines.push("autosave_interval 1");
  }
  if (options.extraConfig !== undefined && options.extraConfig !== "") {
    lines.push(options.extraConfig);
  }
  return lines;
}
