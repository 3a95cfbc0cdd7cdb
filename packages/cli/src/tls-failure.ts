/**
 * What a failed TLS handshake with the broker means, in words an operator
 * can act on: the broker's certificate does not verify (wrong or missing
 * `--cacert`, a host name it is not for, expired), the broker refused the
 * client's certificate (none given, or not from a CA it trusts), or the
 * port does not speak TLS at all.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { tlsFailureKind } from "@mqrpc/runtime";

/** An error from MQTT.js or node:tls, with Node's `code` and OpenSSL's `reason` when it has them. */
type NetworkError = Error & { readonly code?: unknown; readonly reason?: unknown };

/**
 * The ConnectError for a TLS failure of the connection to the broker at
 * `url`, or undefined when `error` is not a TLS failure (a refused or
 * dropped TCP connection, a DNS error):
 * - UNAVAILABLE when the broker's certificate does not verify, naming
 *   `--cacert` when the CA is the likely cause (`hasCa`: one was given);
 * - UNAUTHENTICATED when the broker refused the client's certificate (a TLS
 *   alert about the certificate), naming `--cert` and `--key`;
 * - UNAVAILABLE for another handshake failure, asking whether the port is
 *   a TLS listener.
 */
export function tlsFailure(
  url: string,
  error: NetworkError,
  hasCa: boolean,
): ConnectError | undefined {
  const code = typeof error.code === "string" ? error.code : undefined;
  // MQTT.js's own check, after a handshake Node let through unverified.
  if (code === undefined && error.message === "TLS not authorized") {
    return new ConnectError(
      `the TLS certificate of the MQTT broker at ${url} does not verify`,
      Code.Unavailable,
    );
  }
  if (code === undefined) return undefined;
  const kind = tlsFailureKind(error);
  if (kind === "untrusted-broker-certificate" || kind === "invalid-broker-certificate") {
    const hint =
      kind === "invalid-broker-certificate"
        ? ""
        : hasCa
          ? ": --cacert does not hold the CA that signed it"
          : ": give the CA certificate that signed it with --cacert";
    return new ConnectError(
      `the TLS certificate of the MQTT broker at ${url} does not verify (${code}: ${error.message})${hint}`,
      Code.Unavailable,
    );
  }
  if (!code.startsWith("ERR_SSL_")) return undefined;
  const reason = typeof error.reason === "string" ? error.reason : code;
  if (
    kind === "client-certificate-refused" ||
    (/alert/i.test(reason) && /certificate|unknown ca|access denied/i.test(reason))
  ) {
    const hint = /certificate required/i.test(reason)
      ? ": it asks for a client certificate (give --cert and --key)"
      : ": it does not accept the client certificate (--cert and --key)";
    return new ConnectError(
      `the MQTT broker at ${url} refused the TLS handshake (${reason})${hint}`,
      Code.Unauthenticated,
    );
  }
  return new ConnectError(
    `the TLS handshake with the MQTT broker at ${url} failed (${reason}): is ${hostPort(url)} a TLS listener?`,
    Code.Unavailable,
  );
}

/** `host:port` of a broker URL, for messages. */
export function hostPort(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
