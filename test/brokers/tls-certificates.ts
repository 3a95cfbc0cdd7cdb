/**
 * Throwaway X.509 certificates for TLS tests, issued at test time with the
 * `openssl` command (node:crypto parses certificates but has no API to
 * issue them): a certificate authority, server certificates for 127.0.0.1
 * and localhost, and client certificates whose common name a broker with
 * `use_identity_as_username` takes as the MQTT username. ECDSA P-256 keys,
 * valid for a day, PEM files in a private temp dir (mode 0700) that
 * `remove()` deletes (and the process's exit, if a test never got there).
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { findBinary, makeTempDir } from "./broker-process.js";

/** The openssl binary: `$MQRPC_OPENSSL`, else on PATH. */
export function opensslPath(): string | undefined {
  return findBinary("openssl", "MQRPC_OPENSSL");
}

/** A certificate and its private key, as PEM files. */
export interface CertificateFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

const KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** A CA of its own in a temp dir; see the module comment. */
export class TestCertificateAuthority {
  private serial = 0;

  private constructor(
    private readonly openssl: string,
    private readonly dir: { readonly path: string; remove(): void },
    /** The CA certificate (PEM): what a client's `--cacert` or a broker's `cafile` names. */
    readonly caFile: string,
    private readonly caKeyFile: string,
  ) {}

  /**
   * Makes a CA (a self-signed certificate with `CA:TRUE`) named `commonName`.
   *
   * @throws Error when openssl is not installed, or with its output when it fails.
   */
  static create(commonName = "mqrpc test CA"): TestCertificateAuthority {
    const openssl = opensslPath();
    if (openssl === undefined) {
      throw new Error("openssl is not installed (apt-get install openssl, or set MQRPC_OPENSSL)");
    }
    const dir = makeTempDir("mqrpc-tls-");
    try {
      const caFile = join(dir.path, "ca.pem");
      const caKeyFile = join(dir.path, "ca.key");
      run(openssl, [
        "req",
        "-x509",
        ...KEY_ARGS,
        "-keyout",
        caKeyFile,
        "-out",
        caFile,
        "-days",
        "1",
        "-subj",
        `/CN=${commonName}`,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
      ]);
      return new TestCertificateAuthority(openssl, dir, caFile, caKeyFile);
    } catch (error) {
      dir.remove();
      throw error;
    }
  }

  /** A server certificate for `hosts` (IP addresses and DNS names, in its subjectAltName). */
  issueServer(hosts: readonly string[] = ["127.0.0.1", "localhost"]): CertificateFiles {
    const altNames = hosts.map((h) => (isIP(h) !== 0 ? `IP:${h}` : `DNS:${h}`));
    return this.issue(hosts[0] ?? "server", [
      `subjectAltName=${altNames.join(",")}`,
      "extendedKeyUsage=serverAuth",
    ]);
  }

  /** A client certificate for mutual TLS; `commonName` is the username under `use_identity_as_username`. */
  issueClient(commonName: string): CertificateFiles {
    return this.issue(commonName, ["extendedKeyUsage=clientAuth"]);
  }

  /** Deletes the temp dir with every key and certificate. Idempotent. */
  remove(): void {
    this.dir.remove();
  }

  private issue(commonName: string, extensions: readonly string[]): CertificateFiles {
    const base = join(this.dir.path, `leaf-${++this.serial}`);
    const keyFile = `${base}.key`;
    const certFile = `${base}.pem`;
    const extFile = `${base}.ext`;
    writeFileSync(
      extFile,
      [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        ...extensions,
        "",
      ].join("\n"),
    );
    run(this.openssl, [
      "req",
      "-new",
      ...KEY_ARGS,
      "-keyout",
      keyFile,
      "-out",
      `${base}.csr`,
      "-subj",
      `/CN=${commonName}`,
    ]);
    run(this.openssl, [
      "x509",
      "-req",
      "-in",
      `${base}.csr`,
      "-CA",
      this.caFile,
      "-CAkey",
      this.caKeyFile,
      "-set_serial",
      String(this.serial + 1),
      "-days",
      "1",
      "-extfile",
      extFile,
      "-out",
      certFile,
    ]);
    return { certFile, keyFile };
  }
}

function run(openssl: string, args: readonly string[]): void {
  try {
    execFileSync(openssl, args, { stdio: "pipe" });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
    throw new Error(`openssl ${args.join(" ")} failed: ${(error as Error).message}\n${stderr}`);
  }
}
