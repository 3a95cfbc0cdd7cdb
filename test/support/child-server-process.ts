/**
 * Runs child-server.ts in a child process (`node --import tsx`, a
 * {@link LineChild}: it never outlives this process), reads its events, and
 * kills it: SIGKILL for a crash, `stop()` for a graceful close.
 */
import { fileURLToPath } from "node:url";
import type { ChildEvent, ChildServerConfig } from "./child-server.js";
import { LineChild } from "./line-child.js";
import { within } from "./outcome.js";

export type { ChildEvent, ChildServerConfig };

const SCRIPT = fileURLToPath(new URL("./child-server.ts", import.meta.url));

export class ChildServer {
  instanceId = "";

  private constructor(private readonly child: LineChild<ChildEvent>) {}

  /** The child's events so far, in order. */
  get events(): readonly ChildEvent[] {
    return this.child.events;
  }

  /** Names the child in errors. */
  get label(): string {
    return this.child.label;
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
    this.child.send("start");
    await this.untilReady();
  }

  private static spawn(config: ChildServerConfig, label: string): ChildServer {
    return new ChildServer(LineChild.tsx<ChildEvent>(SCRIPT, config, label));
  }

  private async untilReady(): Promise<void> {
    await this.untilEvent("ready", 30_000);
    const ready = this.events.find((e) => e.event === "ready");
    this.instanceId = ready?.event === "ready" ? ready.instanceId : "";
  }

  /** Waits for an event of the child's start; kills the child and throws with its output if it does not come. */
  private async untilEvent(event: "loaded" | "ready", ms: number): Promise<void> {
    try {
      await this.child.until((e) => e.event === event, ms);
    } catch (e) {
      await this.child.kill();
      throw e;
    }
  }

  get pid(): number {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.child.alive;
  }

  /** Events of one kind. */
  count(event: ChildEvent["event"]): number {
    return this.events.filter((e) => e.event === event).length;
  }

  /**
   * Resolves once some event satisfies `predicate`; rejects when the child
   * exits first (with its stderr in the message).
   */
  async until(predicate: (e: ChildEvent) => boolean): Promise<void> {
    await this.child.until(predicate);
  }

  /**
   * Resolves at the child's next event or its exit, for a test that waits
   * on a condition over several children's events.
   */
  nextEvent(): Promise<void> {
    return this.child.nextEvent();
  }

  /** SIGKILL: the process dies with its connection open, as a crash does. Waits for the exit. */
  kill(): Promise<void> {
    return this.child.kill();
  }

  /** Closes the server gracefully; SIGKILL when that takes more than `ms`. */
  async stop(ms = 10_000): Promise<void> {
    if (!this.alive) return;
    this.child.send("close");
    try {
      await within(this.child.exit(), ms, `${this.label} close`);
    } catch {
      await this.kill();
    }
  }
}
