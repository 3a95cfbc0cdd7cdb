/**
 * How the end of a connection's call reaches the code that uses the socket:
 * as the error a `net.Socket` would emit (a Node error code such as
 * `ECONNRESET`, which HTTP and gRPC libraries understand), with the call's
 * status as its `cause`.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Node error codes a bridged socket emits. */
export type MqttSocketErrorCode =
  | "ECONNREFUSED"
  | "ECONNRESET"
  | "ETIMEDOUT"
  | "EACCES"
  | "EPIPE"
  | "EPROTO";

/**
 * The error a bridged socket is destroyed with: `code` is the Node error
 * code (`ECONNREFUSED` when nothing listens on the virtual port or the
 * server is offline, `ECONNRESET` when the peer reset the connection or
 * went silent, `ETIMEDOUT` when the connection was not accepted within
 * `connectTimeoutMs`, `EACCES` when the broker refused the request topic),
 * `syscall` is `connect` before the connection was accepted and `read`
 * after, and `cause` is the mqrpc status (a `ConnectError`) that ended the
 * connection's call.
 */
export class MqttSocketError extends Error {
  /** Always `"MqttSocketError"`. */
  override name = "MqttSocketError";
  /** The Node error code. */
  readonly code: MqttSocketErrorCode;
  /** `connect` or `read`, as in Node's system errors. */
  readonly syscall: "connect" | "read";

  constructor(
    code: MqttSocketErrorCode,
    syscall: "connect" | "read",
    message: string,
    cause: ConnectError,
  ) {
    super(`${syscall} ${code}: ${message}`, { cause });
    this.code = code;
    this.syscall = syscall;
  }

  /** The status of the connection's call. */
  get status(): ConnectError {
    return this.cause as ConnectError;
  }
}

/**
 * The socket error for a call that ended with `reason` before the server
 * accepted the connection (`accepted` false) or after.
 */
export function socketErrorOf(reason: unknown, accepted: boolean): MqttSocketError {
  if (reason instanceof MqttSocketError) return reason;
  const status = ConnectError.from(reason);
  const text = status.rawMessage;
  if (!accepted) {
    switch (status.code) {
      case Code.DeadlineExceeded:
        return new MqttSocketError("ETIMEDOUT", "connect", text, status);
      case Code.PermissionDenied:
      case Code.Unauthenticated:
        return new MqttSocketError("EACCES", "connect", text, status);
      default:
        return new MqttSocketError("ECONNREFUSED", "connect", text, status);
    }
  }
  switch (status.code) {
    case Code.DeadlineExceeded:
      return new MqttSocketError("ETIMEDOUT", "read", text, status);
    case Code.PermissionDenied:
    case Code.Unauthenticated:
      return new MqttSocketError("EACCES", "read", text, status);
    default:
      return new MqttSocketError("ECONNRESET", "read", text, status);
  }
}

/**
 * The status a reset carries to the peer: the application's error message
 * (or "connection reset") with ABORTED, or the status a ConnectError
 * already has.
 */
export function resetStatus(error: Error | null | undefined, by: string): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof MqttSocketError) return error.status;
  const text =
    error === null || error === undefined ? "" : error.message === "" ? error.name : error.message;
  return new ConnectError(
    text === "" ? `connection reset by ${by}` : `connection reset by ${by}: ${text}`,
    Code.Aborted,
  );
}
