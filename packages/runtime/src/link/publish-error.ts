/**
 * Maps a failed MQTT publish to the status the caller sees. On MQTT 5 the
 * broker says why in the PUBACK reason code; on 3.1.1 a refused publish is
 * silent (see docs/SECURITY.md) and only a broken connection shows up here,
 * except for a publish too large for the broker, which the link recognises
 * (see {@link PacketTooLargeError}).
 */
import { Code, ConnectError } from "@connectrpc/connect";

const NOT_AUTHORIZED = 0x87;
const TOPIC_NAME_INVALID = 0x90;
const PACKET_TOO_LARGE = 0x95;
const QUOTA_EXCEEDED = 0x97;
const PAYLOAD_FORMAT_INVALID = 0x99;

/**
 * A publish larger than the broker accepts. Either the broker closed the
 * connection on it (MQTT 3.1.1 has no other way to refuse it; the link then
 * dropped it so that MQTT.js does not send it again on every reconnect), or
 * the link refused it before sending because it exceeds a limit already
 * known (the MQTT 5 CONNACK maximum packet size, or one learned that way).
 */
export class PacketTooLargeError extends Error {
  /** The MQTT 5 reason code for "Packet too large", as a PUBACK would carry it. */
  readonly code = PACKET_TOO_LARGE;

  /**
   * @param packetBytes size of the MQTT packet that was refused
   * @param limitBytes the largest packet the link now sends on this connection
   * @param closedByBroker whether the broker closed the connection on it
   *   (rather than the link refusing it before sending)
   */
  constructor(
    readonly packetBytes: number,
    readonly limitBytes: number,
    readonly closedByBroker: boolean,
  ) {
    super(
      closedByBroker
        ? `the broker closed the connection on a publish of ${packetBytes} bytes, larger than it accepts`
        : `a publish of ${packetBytes} bytes is larger than the broker accepts (${limitBytes} bytes)`,
    );
    this.name = "PacketTooLargeError";
  }

  /** The explanation a caller or an operator reads, naming the option to set. */
  describe(topic: string): string {
    const advice =
      "set maxPublishBytes to the broker's maximum packet size so that larger messages are chunked";
    return this.closedByBroker
      ? `the broker closed the connection on a publish of ${this.packetBytes} bytes to ${topic}, ` +
          `larger than its maximum packet size; ${advice} ` +
          `(this connection now keeps publishes to at most ${this.limitBytes} bytes)`
      : `the publish of ${this.packetBytes} bytes to ${topic} is larger than the broker accepts ` +
          `(${this.limitBytes} bytes, the maximum packet size it announced or closed the connection over); ${advice}`;
  }

  override toString(): string {
    return `${this.name}: ${this.message}; set maxPublishBytes to the broker's maximum packet size`;
  }
}

/** Converts the error of a rejected publish to `topic` into a ConnectError. */
export function publishError(error: unknown, topic: string): ConnectError {
  if (error instanceof PacketTooLargeError) {
    return new ConnectError(error.describe(topic), Code.ResourceExhausted);
  }
  const reason = (error as { code?: unknown } | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  switch (reason) {
    case NOT_AUTHORIZED:
      return new ConnectError(
        `the broker denied the publish to ${topic} (not authorized)${hintOf(error)}`,
        Code.PermissionDenied,
      );
    case PACKET_TOO_LARGE:
    case QUOTA_EXCEEDED:
      return new ConnectError(
        `the broker refused the publish to ${topic}: ${message}`,
        Code.ResourceExhausted,
      );
    case TOPIC_NAME_INVALID:
    case PAYLOAD_FORMAT_INVALID:
      return new ConnectError(
        `the broker refused the publish to ${topic}: ${message}`,
        Code.InvalidArgument,
      );
    default:
      return new ConnectError(`publish to ${topic} failed: ${message}`, Code.Unavailable);
  }
}

/** What the link that published found out about a refusal (e.g. a client id that is not the username). */
function hintOf(error: unknown): string {
  const hint = (error as { hint?: unknown } | undefined)?.hint;
  return typeof hint === "string" ? hint : "";
}
