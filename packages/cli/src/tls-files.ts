/**
 * Checks of the PEM files that TLS flags name (`--cacert`, `--cert`,
 * `--key`; `--tls-cert`, `--tls-key` of `mqrpc ingress`), before any
 * broker contact or listening: a file that is not what its flag asks for
 * (not PEM, an encrypted key, a key that is not the certificate's) is a
 * usage error naming the flag and the file, not OpenSSL's words
 * (`error:0480006C:PEM routines::no start line`) once a connection is
 * tried, or a server that fails every handshake.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { createSecureContext } from "node:tls";
import { CliError, EXIT_USAGE } from "./exit-codes.js";

/** A file a flag named, as read. */
export interface FlagFile {
  /** `--cert` */
  readonly flag: string;
  readonly path: string;
  readonly data: Buffer;
}

/** PEM blocks: `-----BEGIN <label>-----` … `-----END <label>-----`. */
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;
/** The labels OpenSSL reads a certificate from. */
const CERTIFICATE_LABELS = new Set(["CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"]);

interface PemBlock {
  readonly label: string;
  readonly text: string;
}

function pemBlocks(data: Buffer): PemBlock[] {
  const text = data.toString("latin1");
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1] ?? "", text: m[0] }));
}

function usage(message: string, cause?: unknown): CliError {
  return new CliError(message, EXIT_USAGE, cause === undefined ? undefined : { cause });
}

/**
 * What a file holds instead of what its flag asks for, for messages:
 * `; it holds a private key, which goes to --key`.
 */
function instead(
  file: FlagFile,
  blocks: readonly PemBlock[],
  wanted: "certificate" | "key",
  partnerFlag: string | undefined,
): string {
  const to = partnerFlag !== undefined ? `, which goes to ${partnerFlag}` : "";
  if (wanted === "certificate" && blocks.some((b) => b.label.endsWith("PRIVATE KEY"))) {
    return `; it holds a private key${to}`;
  }
  if (wanted === "key" && blocks.some((b) => CERTIFICATE_LABELS.has(b.label))) {
    return `; it holds a certificate${to}`;
  }
  if (blocks.length === 0 && wanted === "certificate" && isDerCertificate(file.data)) {
    return `; it is a DER certificate: openssl x509 -inform DER -in ${file.path} -out ${file.path}.pem converts it`;
  }
  if (blocks.length === 0 && wanted === "key" && isDerKey(file.data)) {
    return `; it is a DER key: openssl pkey -inform DER -in ${file.path} -out ${file.path}.pem converts it`;
  }
  return "";
}

function isDerKey(data: Buffer): boolean {
  for (const type of ["pkcs8", "pkcs1", "sec1"] as const) {
    try {
      createPrivateKey({ key: data, format: "der", type });
      return true;
    } catch {
      // Not this encoding.
    }
  }
  return false;
}

function isDerCertificate(data: Buffer): boolean {
  try {
    new X509Certificate(data);
    return true;
  } catch {
    return false;
  }
}

/** The certificates of `file`, parsed; throws when it holds none or one does not parse. */
function certificates(file: FlagFile, keyFlag?: string): X509Certificate[] {
  const blocks = pemBlocks(file.data);
  const certs = blocks.filter((b) => CERTIFICATE_LABELS.has(b.label));
  if (certs.length === 0) {
    return fail(
      `${file.flag}: ${file.path} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line` +
        `${instead(file, blocks, "certificate", keyFlag)})`,
    );
  }
  const parsed: X509Certificate[] = [];
  for (const [i, block] of certs.entries()) {
    // OpenSSL's own "TRUSTED CERTIFICATE" form is left to OpenSSL.
    if (block.label === "TRUSTED CERTIFICATE") continue;
    try {
      parsed.push(new X509Certificate(block.text));
    } catch (e) {
      const which = certs.length > 1 ? `certificate ${i + 1} of ${file.path}` : file.path;
      throw usage(
        `${file.flag}: ${which} is not a valid PEM certificate (${(e as Error).message})`,
        e,
      );
    }
  }
  return parsed;
}

function fail(message: string): never {
  throw usage(message);
}

/**
 * Checks a CA file (`--cacert`): one or more PEM certificates, each valid.
 * OpenSSL itself skips what is not a certificate, so that a wrong file
 * would show only as a broker certificate that does not verify.
 *
 * @throws CliError (usage exit code) naming the flag and the file.
 */
export function checkCaFile(file: FlagFile): void {
  certificates(file);
}

/**
 * Checks a certificate and its private key (`--cert` and `--key`,
 * `--tls-cert` and `--tls-key`): PEM, the key unencrypted, and the key the
 * certificate's (of the same type: OpenSSL keeps an RSA and an EC key in
 * slots of their own, so a mismatch of types passes its check and fails
 * every handshake).
 *
 * @throws CliError (usage exit code) naming the flags and the files.
 */
export function checkCertificateAndKey(cert: FlagFile, key: FlagFile): void {
  const [leaf] = certificates(cert, key.flag);
  const keyBlocks = pemBlocks(key.data);
  const keyBlock = keyBlocks.find((b) => b.label.endsWith("PRIVATE KEY"));
  if (keyBlock === undefined) {
    fail(
      `${key.flag}: ${key.path} holds no PEM private key (no "-----BEGIN PRIVATE KEY-----" line` +
        `${instead(key, keyBlocks, "key", cert.flag)})`,
    );
  }
  if (
    keyBlock.label === "ENCRYPTED PRIVATE KEY" ||
    /^Proc-Type: *4, *ENCRYPTED/m.test(keyBlock.text)
  ) {
    fail(
      `${key.flag}: ${key.path} is an encrypted private key; mqrpc takes only unencrypted keys (openssl pkey -in ${key.path} -out ${key.path}.plain.pem decrypts it; keep that file private)`,
    );
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(keyBlock.text);
  } catch (e) {
    throw usage(
      `${key.flag}: ${key.path} is not a valid PEM private key (${(e as Error).message})`,
      e,
    );
  }
  if (leaf !== undefined && !leaf.checkPrivateKey(privateKey)) {
    const keyType = privateKey.asymmetricKeyType;
    const certType = leaf.publicKey.asymmetricKeyType;
    const types =
      keyType !== certType && keyType !== undefined && certType !== undefined
        ? ` (the key is ${keyName(keyType)}, the certificate's ${keyName(certType)})`
        : "";
    fail(
      `${key.flag}: ${key.path} is not the private key of the ${cert.flag} certificate ${cert.path}${types}`,
    );
  }
  // What else OpenSSL refuses in them (the certificates after the first).
  try {
    createSecureContext({ cert: cert.data, key: key.data });
  } catch (e) {
    throw usage(
      `${cert.flag} ${cert.path} and ${key.flag} ${key.path}: ${(e as Error).message}`,
      e,
    );
  }
}

/** `RSA`, `EC`, `Ed25519`… for a key type of node:crypto. */
function keyName(type: string): string {
  return type === "ed25519" || type === "ed448" ? `Ed${type.slice(2)}` : type.toUpperCase();
}
