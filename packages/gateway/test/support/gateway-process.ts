/**
 * A gateway in a child process (gateway-child.ts): killed with SIGKILL like
 * a crashed device, or asked for its memory figures.
 */
import { fileURLToPath } from "node:url";
import { LineChild } from "../../../../test/support/line-child.js";
import type { GatewayChildConfig, GatewayChildEvent, MemorySample } from "./gateway-child.js";

export type { GatewayChildConfig, MemorySample };

const SCRIPT = fileURLToPath(new URL("./gateway-child.ts", import.meta.url));

/** The memory line a gateway child answers with. */
export type MemoryReport = Extract<GatewayChildEvent, { event: "memory" }>;

/** A running gateway process. */
export class GatewayProcess {
  private constructor(private readonly child: LineChild<GatewayChildEvent>) {}

  /** Starts a gateway and waits (at most 30 s) until it is announced. */
  static async start(config: GatewayChildConfig): Promise<GatewayProcess> {
    const gateway = GatewayProcess.spawn({ ...config, deferred: false });
    await gateway.untilEvent("ready");
    return gateway;
  }

  /**
   * Spawns a gateway process that loads and waits (at most 30 s until it
   * has loaded); {@link begin} starts the gateway. The process start
   * (seconds on a busy machine) is paid now, not when the test needs it.
   */
  static async preload(config: GatewayChildConfig): Promise<GatewayProcess> {
    const gateway = GatewayProcess.spawn({ ...config, deferred: true });
    await gateway.untilEvent("loaded");
    return gateway;
  }

  /** Starts a preloaded gateway and waits (at most 30 s) until it is announced. */
  async begin(): Promise<void> {
    const mark = this.child.mark();
    this.child.send("start");
    await this.untilEvent("ready", mark);
  }

  private static spawn(config: GatewayChildConfig): GatewayProcess {
    return new GatewayProcess(
      LineChild.tsx<GatewayChildEvent>(SCRIPT, config, "gateway process", ["--expose-gc"]),
    );
  }

  private async untilEvent(event: "loaded" | "ready", from = 0): Promise<void> {
    try {
      await this.child.until((e) => e.event === event, 30_000, from);
    } catch (e) {
      await this.child.kill();
      throw e;
    }
  }

  /** Starts new memory peaks from now; resolves with the figures now. */
  resetMemory(): Promise<MemoryReport> {
    return this.ask("reset");
  }

  /** The memory figures now and their peaks since the last reset. */
  memory(): Promise<MemoryReport> {
    return this.ask("memory");
  }

  private async ask(command: string): Promise<MemoryReport> {
    const mark = this.child.mark();
    this.child.send(command);
    return (await this.child.until((e) => e.event === "memory", 15_000, mark)) as MemoryReport;
  }

  /** SIGKILL: the gateway dies with its connection open, as a crash does. */
  kill(): Promise<void> {
    return this.child.kill();
  }

  /** Closes the gateway gracefully; SIGKILL when that takes more than 15 s. */
  async close(): Promise<void> {
    if (!this.child.alive) return;
    const mark = this.child.mark();
    this.child.send("close");
    try {
      await this.child.until((e) => e.event === "closed", 15_000, mark);
      await this.child.exit();
    } catch {
      await this.child.kill();
    }
  }
}
