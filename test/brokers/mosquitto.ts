/**
 * Mosquitto 2 started by the tests on a free port with generated config:
 * TCP_NODELAY on, default queue limits, optional ACL and persistence, and a
 * restart on the same port for broker-restart tests.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrokerProcess, binaryPresent, startBrokerProcess } from "./broker-process.js";
import { freePort } from "./free-port.js";

export const MOSQUITTO = "/usr/sbin/mosquitto";

/** Options for {@link startMosquitto}. */
export interface MosquittoOptions {
  /** ACL file contents (Mosquitto syntax). */
  readonly acl?: string;
  /** Keep sessions and retained messages across restarts. */
  readonly persistence?: boolean;
  /** Users and passwords; anonymous clients are refused when set. */
  readonly users?: Readonly<Record<string, string>>;
  /** More configuration lines. */
  readonly extraConfig?: string;
}

/** A running Mosquitto. */
export interface MosquittoBroker {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
  /** Stops and starts again on the same port with the same config and data. */
  restart(): Promise<void>;
}

export function mosquittoAvailable(): boolean {
  return binaryPresent(MOSQUITTO);
}

export async function startMosquitto(options: MosquittoOptions = {}): Promise<MosquittoBroker> {
  const dir = mkdtempSync(join(tmpdir(), "mqrpc-mosquitto-"));
  // Started as root, Mosquitto drops to its own user: let it read the
  // config files and write its persistence here.
  chmodSync(dir, 0o777);
  const port = await freePort();
  const lines = [
    `listener ${port} 127.0.0.1`,
    `allow_anonymous ${options.users === undefined ? "true" : "false"}`,
    "set_tcp_nodelay true",
    "log_type error",
    "log_dest stderr",
    `persistence ${options.persistence ? "true" : "false"}`,
  ];
  if (options.persistence) lines.push(`persistence_location ${dir}/`, "autosave_interval 1");
  if (options.acl !== undefined) {
    writeFileSync(join(dir, "acl"), options.acl);
    lines.push(`acl_file ${join(dir, "acl")}`);
  }
  if (options.users !== undefined) {
    const file = join(dir, "passwd");
    writeFileSync(file, "");
    for (const [user, password] of Object.entries(options.users)) {
      execFileSync("/usr/bin/mosquitto_passwd", ["-b", file, user, password]);
    }
    chmodSync(file, 0o644);
    lines.push(`password_file ${file}`);
  }
  if (options.extraConfig) lines.push(options.extraConfig);
  const conf = join(dir, "mosquitto.conf");
  writeFileSync(conf, `${lines.join("\n")}\n`);
  let proc: BrokerProcess = await startBrokerProcess(MOSQUITTO, ["-c", conf], port);
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    async stop() {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await proc.stop();
      proc = await startBrokerProcess(MOSQUITTO, ["-c", conf], port);
    },
  };
}
