/**
 * A progress bar for requests with bytes read from files, on stderr when it
 * is a terminal (never in a pipe). Progress is what left on the wire: the
 * payload bytes of the call's publishes to the request topics, counted from
 * the MQTT client's `packetsend` events, against the encoded size of the
 * request messages (frame overhead makes the count run slightly ahead, so
 * it is capped at the total until the call ends).
 */
import cliProgress from "cli-progress";
import type { MqttClient } from "mqtt";

/** Bytes in a human unit (KiB, MiB, GiB), as the bar shows them. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The bar of one call's upload. */
export class UploadProgress {
  private readonly bar: cliProgress.SingleBar;
  private total = 0;
  private sent = 0;
  private readonly started = performance.now();
  private stopped = false;

  /** Starts counting the publishes of `client` whose topic starts with `requestTopicBase`. */
  constructor(
    private readonly client: MqttClient,
    private readonly requestTopicBase: string,
  ) {
    this.bar = new cliProgress.SingleBar(
      {
        format: "upload [{bar}] {percentage}% {done} of {size} {rate}",
        stream: process.stderr,
        hideCursor: true,
        barsize: 30,
        fps: 10,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(1, 0, { done: formatBytes(0), size: formatBytes(0), rate: "" });
    client.on("packetsend", this.onPacket);
  }

  /** Adds a request message's encoded size to the total. */
  addMessage(bytes: number): void {
    this.total += bytes;
    this.render();
  }

  /** Stops the bar (at 100% when `complete`) and the counting. */
  stop(complete: boolean): void {
    if (this.stopped) return;
    this.stopped = true;
    this.client.off("packetsend", this.onPacket);
    if (complete) this.sent = this.total;
    this.render();
    this.bar.stop();
  }

  private readonly onPacket = (packet: {
    cmd: string;
    topic?: string;
    payload?: unknown;
  }): void => {
    if (packet.cmd !== "publish" || packet.topic?.startsWith(this.requestTopicBase) !== true)
      return;
    const payload = packet.payload;
    this.sent +=
      typeof payload === "string"
        ? Buffer.byteLength(payload)
        : ((payload as Uint8Array | undefined)?.byteLength ?? 0);
    this.render();
  };

  private render(): void {
    const done = Math.min(this.sent, this.total);
    const seconds = (performance.now() - this.started) / 1000;
    this.bar.setTotal(Math.max(this.total, 1));
    this.bar.update(done, {
      done: formatBytes(done),
      size: formatBytes(this.total),
      rate: seconds > 0.2 ? `${formatBytes(done / seconds)}/s` : "",
    });
  }
}
