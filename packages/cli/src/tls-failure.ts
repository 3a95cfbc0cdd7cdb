/**
 * What a failed TLS handshake with the broker means, in words an operator
 * can act on: the broker's certificate does not verify (wrong or missing
 * `--cacert`, a host name it is not for, expired), the broker refused the
 * client's certificate (none given, or not from a CA it trusts), or the
 * port does not speak TLS at all.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Node's codes for a broker certificate that does not verify (OpenSSL's
 * X509_V_ERR names, and Node's own host name check).
 */
const UNVERIFIED_CERTIFICATE = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "CERT_SIGNATURE_FAILURE",
  "CERT_CHAIN_TOO_LONG",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_REVOKED",
  "INVALID_CA",
  "INVALID_PURPOSE",
  "PATH_LENGTH_EXCEEDED",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** Codes whose cause is the certificate's dates or name, not the CA that signed it. */
const NOT_ABOUT_THE_CA = new Set([
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

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
  if (UNVERIFIED_CERTIFICATE.has(code)) {
    const hint = NOT_ABOUT_THE_CA.has(code)
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
  if (/alert/i.test(reason) && /certificate|unknown ca|access denied/i.test(reason)) {
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
