/**
 * Maps a failed MQTT publish to the status the caller sees. On MQTT 5 the
 * broker says why in the PUBACK reason code; on 3.1.1 a refused publish is
 * silent (see docs/SECURITY.md) and only a broken connection shows up here.
 */
import { Code, ConnectError } from "@connectrpc/connect";

const NOT_AUTHORIZED = 0x87;
const TOPIC_NAME_INVALID = 0x90;
const PACKET_TOO_LARGE = 0x95;
const QUOTA_EXCEEDED = 0x97;
const PAYLOAD_FORMAT_INVALID = 0x99;

/** Converts the error of a rejected publish to `topic` into a ConnectError. */
export function publishError(error: unknown, topic: string): ConnectError {
  const reason = (error as { code?: unknown } | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  switch (reason) {
    case NOT_AUTHORIZED:
      return new ConnectError(
        `the broker denied the publish to ${topic} (not authorized)`,
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
