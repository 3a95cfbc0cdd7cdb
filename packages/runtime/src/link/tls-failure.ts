/**
 * TLS failures that a reconnect cannot heal: the broker's certificate does
 * not verify against the CA given (or has expired, or names another host),
 * or the broker refused the client's certificate. MQTT.js retries them
 * forever like a dropped connection; a server start fails on them instead.
 */

/** Node's codes for a broker certificate that does not chain to a trusted CA (OpenSSL's X509_V_ERR names). */
const UNTRUSTED_CERTIFICATE = new Set([
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
]);

/** Codes for a broker certificate whose dates or host name are wrong, whoever signed it. */
const INVALID_CERTIFICATE = new Set([
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** TLS alerts by which a broker refuses the client's certificate (Node: ERR_SSL_…_ALERT_…). */
const CLIENT_CERTIFICATE_REFUSED =
  /^ERR_SSL_(SSLV3|TLSV1|TLSV13)_ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_REQUIRED|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED)$/;

/**
 * What a failed TLS handshake with the broker was about, from the error
 * MQTT.js reports (Node's `code`):
 * - `untrusted-broker-certificate`: the broker's certificate does not chain
 *   to the CA given (`ca` option; Node's defaults without one);
 * - `invalid-broker-certificate`: its dates or host name are wrong;
 * - `client-certificate-refused`: the broker refused the client's
 *   certificate (none given, or not from a CA it trusts): a TLS alert.
 * Undefined for anything else, TLS or not (a refused TCP connection, a
 * port that does not speak TLS). None of these heal by connecting again:
 * a server start fails on them (`createMqttServer`).
 */
export type TlsFailureKind =
  | "untrusted-broker-certificate"
  | "invalid-broker-certificate"
  | "client-certificate-refused";

/** See {@link TlsFailureKind}. */
export function tlsFailureKind(error: unknown): TlsFailureKind | undefined {
  if (!(error instanceof Error)) return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== "string") return undefined;
  if (UNTRUSTED_CERTIFICATE.has(code)) return "untrusted-broker-certificate";
  if (INVALID_CERTIFICATE.has(code)) return "invalid-broker-certificate";
  if (CLIENT_CERTIFICATE_REFUSED.test(code)) return "client-certificate-refused";
  return undefined;
}

/** Whether `e` is a TLS failure that connecting again would meet again. */
export function isCertificateFailure(e: unknown): e is Error {
  return tlsFailureKind(e) !== undefined;
}
