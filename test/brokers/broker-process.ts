/**
 * Runs a broker binary as a child process on ports of ours: waits until it
 * says it is ready AND its ports accept TCP connections, fails with the
 * broker's own output if it exits first, and stops it on request.
 *
 * Never leaving a broker running:
 * - `stop()` sends SIGTERM and waits for the exit (SIGKILL after 5 s);
 * - on this process's `exit` event every broker still running gets SIGKILL
 *   and the temp dirs are removed;
 * - and for the cases where no `exit` event fires (vitest stops its fork
 *   workers with SIGTERM, a CI timeout SIGKILLs node), the broker runs under
 *   a tiny `sh` watchdog: the broker is `exec`ed by the shell (so the pid we
 *   hold is the broker's own), and a background subshell blocks reading the
 *   stdin pipe that only this process can write; when this process dies for
 *   any reason the pipe reaches EOF and the subshell sends SIGTERM to the
 *   broker.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { freePorts } from "./free-port.js";

interface Registry {
  readonly running: Set<ChildProcess>;
  readonly tempDirs: Set<string>;
}

// One registry and one exit listener per process, even though vitest
// re-evaluates this module for every test file a worker runs.
const registryKey = Symbol.for("mqrpc.test.broker-processes");
const registry: Registry =
  ((globalThis as Record<symbol, unknown>)[registryKey] as Registry | undefined) ??
  installRegistry();

function installRegistry(): Registry {
  const created: Registry = { running: new Set(), tempDirs: new Set() };
  (globalThis as Record<symbol, unknown>)[registryKey] = created;
  process.once("exit", () => {
    for (const child of created.running) child.kill("SIGKILL");
    for (const dir of created.tempDirs) rmSync(dir, { recursive: true, force: true });
  });
  return created;
}

// $0 is the broker binary, "$@" its arguments. fd 3 keeps the stdin pipe for
// the watchdog (a background list's stdin is /dev/null unless redirected);
// `$$` in the subshell is the shell's pid, which `exec` hands to the broker.
const WATCHDOG = [
  "exec 3<&0",
  "( cat >/dev/null; kill -TERM $$ 2>/dev/null ) <&3 >/dev/null 2>&1 &",
  'exec "$0" "$@" </dev/null 3<&-',
].join("\n");

/**
 * The path of an executable: `$envVar` if set, else the first `name` on
 * PATH or in the usual sbin directories (Debian installs brokers in /usr/sbin,
 * which is not on every user's PATH).
 */
export function findBinary(name: string, envVar: string): string | undefined {
  const override = process.env[envVar];
  if (override !== undefined && override !== "") {
    return isExecutable(override) ? override : undefined;
  }
  const dirs = [
    ...(process.env.PATH ?? "").split(delimiter),
    "/usr/sbin",
    "/usr/local/sbin",
    "/opt/homebrew/sbin",
    "/sbin",
  ];
  for (const dir of dirs) {
    if (dir === "") continue;
    const path = join(dir, name);
    if (isExecutable(path)) return path;
  }
  return undefined;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** A private temp dir (mode 0700), removed by `remove()` or at process exit. */
export function makeTempDir(prefix: string): { readonly path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  registry.tempDirs.add(path);
  return {
    path,
    remove() {
      registry.tempDirs.delete(path);
      rmSync(path, { recursive: true, force: true });
    },
  };
}

/** What to run and how to tell it is ready. */
export interface BrokerProcessSpec {
  /** For messages, e.g. `mosquitto`. */
  readonly name: string;
  readonly binary: string;
  readonly args: readonly string[];
  /** Ports on 127.0.0.1 that must accept connections before the broker counts as up. */
  readonly ports: readonly number[];
  /** A line the broker logs once it listens. */
  readonly ready: RegExp;
  /** Bound on the whole start; 15 s by default. */
  readonly timeoutMs?: number;
}

/** A broker child process. */
export interface BrokerProcess {
  readonly pid: number;
  /** The last 16 kB the broker wrote to stdout and stderr. */
  output(): string;
  /** SIGTERM, then wait for the exit (SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}

/** A broker that exited or hung during start; `output` is what it said. */
export class BrokerStartError extends Error {
  override readonly name = "BrokerStartError";
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(`${message}\n--- broker output ---\n${output.trimEnd()}`);
  }
  /** The port was taken between finding it free and the broker binding it. */
  get addressInUse(): boolean {
    return /address already in use/i.test(this.output);
  }
}

const OUTPUT_LIMIT = 16_000;

/** Starts `spec.binary` and resolves once it is ready and listening on every port. */
export async function startBrokerProcess(spec: BrokerProcessSpec): Promise<BrokerProcess> {
  const child = spawn("/bin/sh", ["-c", WATCHDOG, spec.binary, ...spec.args], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  registry.running.add(child);
  let output = "";
  let ready = false;
  const collect = (data: Buffer) => {
    output = (output + data.toString()).slice(-OUTPUT_LIMIT);
    if (!ready && spec.ready.test(output)) ready = true;
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  let exitStatus: string | undefined;
  const exited = new Promise<void>((resolve) => {
    const done = (status: string) => {
      exitStatus ??= status;
      registry.running.delete(child);
      child.stdin.destroy();
      resolve();
    };
    child.once("exit", (code, signal) =>
      done(signal !== null ? `signal ${signal}` : `code ${code}`),
    );
    child.once("error", (error) => done(`spawn error: ${error.message}`));
  });
  // Nothing is ever written; errors here only mean the child is gone.
  child.stdin.on("error", () => {});

  const stop = async (): Promise<void> => {
    if (exitStatus === undefined) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
  };

  const timeoutMs = spec.timeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  const where = `${spec.name} (${spec.binary} ${spec.args.join(" ")})`;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    if (exitStatus !== undefined) {
      throw new BrokerStartError(`${where} exited with ${exitStatus} during start`, output);
    }
    if (ready && (await allAccept(spec.ports))) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await exited;
      throw new BrokerStartError(
        `${where} was not ready on port(s) ${spec.ports.join(", ")} within ${timeoutMs} ms`,
        output,
      );
    }
    await new Promise((r) => setTimeout(r, delay));
  }
  // The broker may still have exited between the ready line and now.
  if (exitStatus !== undefined) {
    throw new BrokerStartError(`${where} exited with ${exitStatus} during start`, output);
  }
  return {
    pid: child.pid ?? -1,
    output: () => output,
    stop,
  };
}

/**
 * Runs `start` on `count` fresh free ports, retrying on new ports (up to 5
 * times) when the broker reports one was taken in the meantime. With `fixed`
 * ports it runs once on those.
 */
export async function onFreePorts<T>(
  count: number,
  fixed: readonly number[] | undefined,
  start: (ports: number[]) => Promise<T>,
): Promise<T> {
  if (fixed !== undefined) return start([...fixed]);
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(await freePorts(count));
    } catch (error) {
      if (attempt >= 5 || !(error instanceof BrokerStartError && error.addressInUse)) throw error;
    }
  }
}

async function allAccept(ports: readonly number[]): Promise<boolean> {
  const results = await Promise.all(ports.map(accepts));
  return results.every(Boolean);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.setTimeout(1000);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}
