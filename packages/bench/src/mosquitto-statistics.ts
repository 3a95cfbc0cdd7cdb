/**
 * Mosquitto's own counts of connected clients and subscriptions, read from
 * its `$SYS/broker/...` tree (the broker must run with a short
 * `sys_interval`, e.g. 1 s). Used by the scale rows to count what a process
 * holds on the broker as the difference before and after.
 */
import { connectAsync, type MqttClient } from "mqtt";

/** What the broker counts at one moment. */
export interface BrokerCounts {
  /** `$SYS/broker/clients/connected` */
  readonly connectedClients: number;
  /** `$SYS/broker/subscriptions/count` */
  readonly subscriptions: number;
}

const CONNECTED = "$SYS/broker/clients/connected";
const SUBSCRIPTIONS = "$SYS/broker/subscriptions/count";
const UPTIME = "$SYS/broker/uptime";

/** A subscriber to Mosquitto's statistics; its own connection and subscriptions are constant. */
export class MosquittoStatistics {
  private readonly values = new Map<string, number>();
  private readonly waiters = new Set<(topic: string) => void>();
  private readonly echoTopic = `bench-statistics/${process.pid}/echo`;

  private constructor(private readonly client: MqttClient) {
    client.on("message", (topic, payload) => {
      if (topic !== this.echoTopic) this.values.set(topic, Number.parseInt(payload.toString(), 10));
      for (const wake of [...this.waiters]) wake(topic);
    });
  }

  static async watch(url: string): Promise<MosquittoStatistics> {
    const client = await connectAsync(url, { clientId: `bench-statistics-${process.pid}` });
    const statistics = new MosquittoStatistics(client);
    await client.subscribeAsync([CONNECTED, SUBSCRIPTIONS, UPTIME, statistics.echoTopic]);
    return statistics;
  }

  /**
   * The counts as of now. Mosquitto updates its statistics in one pass
   * every `sys_interval` (every 2 s with `sys_interval 1`: it waits for
   * more than the interval), the uptime first and then each count that
   * changed. So: wait for an uptime sent at least `slackMs` after this
   * call (a pass that began after the broker handled what came before),
   * then for an echo of a publish of our own, which the broker handles
   * only after that pass has been written to us. Rejects after `timeoutMs`
   * (no `$SYS` tree: not Mosquitto, or `sys_interval 0`).
   */
  async settle(slackMs = 250, timeoutMs = 10_000): Promise<BrokerCounts> {
    const after = performance.now() + slackMs;
    await this.next(UPTIME, after, timeoutMs);
    const echoed = this.next(this.echoTopic, 0, timeoutMs);
    await this.client.publishAsync(this.echoTopic, "", { qos: 0 });
    await echoed;
    return {
      connectedClients: this.values.get(CONNECTED) ?? 0,
      subscriptions: this.values.get(SUBSCRIPTIONS) ?? 0,
    };
  }

  /** Resolves on the first message on `topic` that arrives at or after `after` (performance.now()). */
  private async next(topic: string, after: number, timeoutMs: number): Promise<void> {
    let wake: (topic: string) => void = () => {};
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        wake = (arrived) => {
          if (arrived === topic && performance.now() >= after) resolve();
        };
        this.waiters.add(wake);
        timer = setTimeout(
          () => reject(new Error(`no ${topic} within ${timeoutMs} ms: is sys_interval set?`)),
          timeoutMs,
        );
      });
    } finally {
      this.waiters.delete(wake);
      clearTimeout(timer);
    }
  }

  close(): Promise<void> {
    return this.client.endAsync();
  }
}
