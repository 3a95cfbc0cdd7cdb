/**
 * Runs child-server.ts in a child process (`node --import tsx`), reads its
 * events, and kills it: SIGKILL for a crash, `stop()` for a graceful close.
 *
 * Never leaving a child running: the child exits when its stdin reaches EOF,
 * which happens however this process ends (vitest's SIGTERM to a worker, a
 * crash); on a normal exit every child still running also gets SIGKILL.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { ChildEvent, ChildServerConfig } from "./child-server.js";
import { within } from "./outcome.js";

export type { ChildEvent, ChildServerConfig };

const SCRIPT = fileURLToPath(new URL("./child-server.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../", import.meta.url));

const runningKey = Symbol.for("mqrpc.test.child-servers");
const running: Set<ChildProcessWithoutNullStreams> =
  ((globalThis as Record<symbol, unknown>)[runningKey] as
    | Set<ChildProcessWithoutNullStreams>
    | undefined) ?? installRegistry();

function installRegistry(): Set<ChildProcessWithoutNullStreams> {
  const set = new Set<ChildProcessWithoutNullStreams>();
  (globalThis as Record<symbol, unknown>)[runningKey] = set;
  process.once("exit", () => {
    for (const child of set) child.kill("SIGKILL");
  });
  return set;
}

export class ChildServer {
  readonly events: ChildEvent[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly exited: Promise<void>;
  private output = "";
  instanceId = "";

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly label: string,
  ) {
    running.add(child);
    this.exited = new Promise((resolve) => {
      child.once("exit", () => {
        running.delete(child);
        resolve();
        for (const w of [...this.waiters]) w();
      });
    });
    let buffered = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      buffered += chunk;
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
        try {
          this.events.push(JSON.parse(line) as ChildEvent);
        } catch {
          this.output += `${line}\n`;
        }
      }
      for (const w of [...this.waiters]) w();
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      this.output = (this.output + chunk).slice(-8000);
    });
    // EPIPE after a kill is expected.
    child.stdin.on("error", () => {});
  }

  /** Spawns a child server and waits (at most 30 s) until it serves. */
  static async start(config: ChildServerConfig, label = "child server"): Promise<ChildServer> {
    const server = ChildServer.spawn({ ...config, deferred: false }, label);
    await server.untilReady();
    return server;
  }

  /**
   * Spawns a child server that loads and then waits (at most 30 s until it
   * has loaded); {@link begin} starts it. For a replacement that must start
   * quickly later: the process start (seconds on a busy machine) is paid now.
   */
  static async preload(config: ChildServerConfig, label = "child server"): Promise<ChildServer> {
    const server = ChildServer.spawn({ ...config, deferred: true }, label);
    await server.untilEvent("loaded", 30_000);
    return server;
  }

  /** Starts a server spawned by {@link preload} and waits (at most 30 s) until it serves. */
  async begin(): Promise<void> {
    this.child.stdin.write("start\n");
    await this.untilReady();
  }

  private static spawn(config: ChildServerConfig, label: string): ChildServer {
    const child = spawn(process.execPath, ["--import", "tsx", SCRIPT, JSON.stringify(config)], {
      cwd: REPO,
      stdio: ["pipe", "pipe", "pipe"],
    });
    return new ChildServer(child, label);
  }

  private async untilReady(): Promise<void> {
    await this.untilEvent("ready", 30_000);
    const ready = this.events.find((e) => e.event === "ready");
    this.instanceId = ready?.event === "ready" ? ready.instanceId : "";
  }

  /** Waits for an event of the child's start; kills the child and throws with its output if it does not come. */
  private async untilEvent(event: "loaded" | "ready", ms: number): Promise<void> {
    try {
      await within(
        this.until((e) => e.event === event),
        ms,
        `${this.label} ${event}`,
      );
    } catch (e) {
      this.child.kill("SIGKILL");
      throw new Error(`${String(e)}\n--- ${this.label} output ---\n${this.output}`);
    }
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Events of one kind. */
  count(event: ChildEvent["event"]): number {
    return this.events.filter((e) => e.event === event).length;
  }

  /**
   * Resolves once some event satisfies `predicate`; rejects when the child
   * exits first (with its stderr in the message).
   */
  until(predicate: (e: ChildEvent) => boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.events.some(predicate)) {
          this.waiters.delete(check);
          resolve();
        } else if (!this.alive) {
          this.waiters.delete(check);
          reject(new Error(`${this.label} exited\n--- output ---\n${this.output}`));
        }
      };
      this.waiters.add(check);
      check();
    });
  }

  /**
   * Resolves at the child's next event or its exit, for a test that waits
   * on a condition over several children's events.
   */
  nextEvent(): Promise<void> {
    if (!this.alive) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        this.waiters.delete(wake);
        resolve();
      };
      this.waiters.add(wake);
    });
  }

  /** SIGKILL: the process dies with its connection open, as a crash does. Waits for the exit. */
  async kill(): Promise<void> {
    if (this.alive) this.child.kill("SIGKILL");
    await this.exited;
  }

  /** Closes the server gracefully; SIGKILL when that takes more than `ms`. */
  async stop(ms = 10_000): Promise<void> {
    if (!this.alive) return;
    this.child.stdin.write("close\n");
    try {
      await within(this.exited, ms, `${this.label} close`);
    } catch {
      await this.kill();
    }
  }
}
