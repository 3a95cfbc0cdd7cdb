/**
 * The files of the TLS flags (`--cacert`, `--cert`, `--key`; `--tls-cert`,
 * `--tls-key` of `ingress`) are checked before any broker contact or
 * listening: one that is not what the flag asks for (not PEM, a key in the
 * certificate's flag, an encrypted key, a key that is not the
 * certificate's, an RSA certificate with an EC key) exits 2 with one line
 * naming the flag and the file, not OpenSSL's error at the first
 * connection (exit 1) or, for the ingress, a server whose every handshake
 * fails. The "broker" is a TCP listener that counts connections
 * (support/counting-broker.ts). And `mqrpc ingress` logs the TLS
 * handshakes that fail on its side, at most one line a minute.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { opensslPath } from "../../../test/brokers/tls-certificates.js";
import { CliProcess, type CliResult } from "./support/cli-process.js";
import { countingBroker } from "./support/counting-broker.js";

function run(args: readonly string[]): Promise<CliResult> {
  const p = CliProcess.start(args);
  p.endInput();
  return p.exited;
}

describe.runIf(opensslPath() !== undefined)(
  "the files of the TLS flags",
  { timeout: 60_000 },
  () => {
    let dir: string;
    /** Paths: an RSA certificate and its key, another RSA key, an EC key, … */
    const f = {
      rsaCert: "",
      rsaKey: "",
      otherKey: "",
      ecKey: "",
      encryptedKey: "",
      derCert: "",
      derKey: "",
      notPem: "",
    };

    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), "mqrpc-cli-tls-files-"));
      const openssl = opensslPath() as string;
      const ssl = (args: string[]) => execFileSync(openssl, args, { stdio: "pipe" });
      const path = (name: string) => join(dir, name);
      for (const [cert, key] of [
        ["rsa.pem", "rsa.key"],
        ["other.pem", "other.key"],
      ]) {
        ssl([
          "req",
          "-x509",
          "-newkey",
          "rsa:2048",
          "-nodes",
          "-keyout",
          path(key as string),
          "-out",
          path(cert as string),
          "-days",
          "1",
          "-subj",
          "/CN=localhost",
        ]);
      }
      ssl(["ecparam", "-genkey", "-name", "prime256v1", "-out", path("ec.key")]);
      ssl([
        "pkey",
        "-in",
        path("rsa.key"),
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        path("enc.key"),
      ]);
      ssl(["x509", "-in", path("rsa.pem"), "-outform", "DER", "-out", path("rsa.der")]);
      ssl(["pkey", "-in", path("rsa.key"), "-outform", "DER", "-out", path("rsa.key.der")]);
      writeFileSync(path("ext"), "not a certificate\n");
      Object.assign(f, {
        rsaCert: path("rsa.pem"),
        rsaKey: path("rsa.key"),
        otherKey: path("other.key"),
        ecKey: path("ec.key"),
        encryptedKey: path("enc.key"),
        derCert: path("rsa.der"),
        derKey: path("rsa.key.der"),
        notPem: path("ext"),
      });
    });

    afterAll(async () => {
      await CliProcess.killAll();
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    });

    /** Command lines (before the broker URL), and the one line on stderr. */
    const refused = (): ReadonlyArray<readonly [string, string[], string]> => [
      [
        "list --cert not PEM",
        ["list", "--cert", f.notPem, "--key", f.rsaKey],
        `--cert: ${f.notPem} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`,
      ],
      [
        "call --key not the certificate's (both RSA)",
        ["call", "d", "a.B/C", "--cert", f.rsaCert, "--key", f.otherKey],
        `--key: ${f.otherKey} is not the private key of the --cert certificate ${f.rsaCert}`,
      ],
      [
        "list --key EC for an RSA --cert",
        ["list", "--cert", f.rsaCert, "--key", f.ecKey],
        `--key: ${f.ecKey} is not the private key of the --cert certificate ${f.rsaCert} (the key is EC, the certificate's RSA)`,
      ],
      [
        "describe --cert and --key swapped",
        ["describe", "d", "--cert", f.rsaKey, "--key", f.rsaCert],
        `--cert: ${f.rsaKey} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line; it holds a private key, which goes to --key)`,
      ],
      [
        "expose --key encrypted",
        [
          "expose",
          "--server-id",
          "d",
          "--port",
          "22",
          "--target",
          "127.0.0.1:22",
          "--cert",
          f.rsaCert,
          "--key",
          f.encryptedKey,
        ],
        `--key: ${f.encryptedKey} is an encrypted private key; mqrpc takes only unencrypted keys (openssl pkey -in ${f.encryptedKey} -out ${f.encryptedKey}.plain.pem decrypts it; keep that file private)`,
      ],
      [
        "list --key DER",
        ["list", "--cert", f.rsaCert, "--key", f.derKey],
        `--key: ${f.derKey} holds no PEM private key (no "-----BEGIN PRIVATE KEY-----" line; it is a DER key: openssl pkey -inform DER -in ${f.derKey} -out ${f.derKey}.pem converts it)`,
      ],
      [
        "list --cacert not PEM",
        ["list", "--cacert", f.notPem],
        `--cacert: ${f.notPem} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`,
      ],
      [
        "list --cacert DER",
        ["list", "--cacert", f.derCert],
        `--cacert: ${f.derCert} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line; it is a DER certificate: openssl x509 -inform DER -in ${f.derCert} -out ${f.derCert}.pem converts it)`,
      ],
    ];

    const refusedIngress = (): ReadonlyArray<readonly [string, string[], string]> => [
      [
        "ingress --tls-key EC for an RSA --tls-cert",
        ["ingress", "--tls-cert", f.rsaCert, "--tls-key", f.ecKey],
        `--tls-key: ${f.ecKey} is not the private key of the --tls-cert certificate ${f.rsaCert} (the key is EC, the certificate's RSA)`,
      ],
      [
        "ingress --tls-key not the certificate's (both RSA)",
        ["ingress", "--tls-cert", f.rsaCert, "--tls-key", f.otherKey],
        `--tls-key: ${f.otherKey} is not the private key of the --tls-cert certificate ${f.rsaCert}`,
      ],
      [
        "ingress --tls-cert not PEM",
        ["ingress", "--tls-cert", f.notPem, "--tls-key", f.rsaKey],
        `--tls-cert: ${f.notPem} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`,
      ],
    ];

    it("refuses a bad file with one line naming the flag and the file, exit 2, no broker contact", async (context) => {
      const broker = await countingBroker(context);
      const cases = [
        ...refused().map(
          ([name, args, line]) => [name, [...args, "--mqtt", broker.tlsUrl], line] as const,
        ),
        // The ingress's own TLS does not need a TLS broker.
        ...refusedIngress().map(
          ([name, args, line]) => [name, [...args, "--mqtt", broker.url], line] as const,
        ),
      ];
      const results = await Promise.all(cases.map(([, args]) => run(args)));
      for (const [i, [name, , line]] of cases.entries()) {
        const r = results[i] as CliResult;
        expect(r.stderr, name).toBe(`mqrpc: ${line}\n`);
        expect(r.code, name).toBe(2);
        expect(r.stdout, name).toBe("");
      }
      expect(await broker.settledCount()).toBe(0);
    });

    it("takes a good certificate, key and CA: the command goes on to the broker", async (context) => {
      const broker = await countingBroker(context);
      const p = CliProcess.start([
        "list",
        "--mqtt",
        broker.tlsUrl,
        "--cacert",
        f.rsaCert,
        "--cert",
        f.rsaCert,
        "--key",
        f.rsaKey,
      ]);
      context.onTestFinished(() => p.kill());
      await broker.untilAccepted(1);
      expect(p.stderr).toBe("");
    });

    it("ingress logs a TLS handshake that failed on its side, then at most one line a minute", async (context) => {
      const broker = await countingBroker(context);
      const ingress = CliProcess.start([
        "ingress",
        "--mqtt",
        broker.url,
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        f.rsaCert,
        "--tls-key",
        f.rsaKey,
      ]);
      context.onTestFinished(() => ingress.kill());
      const listening = await ingress.untilLine((l) => / listening https:/.test(l));
      const port = Number(/:(\d+) \(devices on/.exec(listening)?.[1]);
      /** Cleartext HTTP to the TLS port; resolves once the ingress closed the connection. */
      const cleartext = () =>
        new Promise<number>((resolve) => {
          const socket = connect(port, "127.0.0.1", () => socket.write("GET / HTTP/1.1\r\n\r\n"));
          let localPort = 0;
          socket.once("connect", () => {
            localPort = socket.localPort ?? 0;
          });
          socket.on("error", () => {});
          socket.once("close", () => resolve(localPort));
          socket.resume();
        });
      /** Connects and closes before any handshake, as a TCP health check does. */
      const probe = () =>
        new Promise<void>((resolve) => {
          const socket = connect(port, "127.0.0.1", () => socket.end());
          socket.on("error", () => {});
          socket.once("close", () => resolve());
          socket.resume();
        });
      await probe();
      const first = await cleartext();
      const line = await ingress.untilLine((l) => / warn TLS /.test(l));
      expect(line).toMatch(
        new RegExp(
          `^\\S+Z warn TLS handshake with 127\\.0\\.0\\.1:${first} failed: http request \\(ERR_SSL_HTTP_REQUEST\\); further failures are logged at most once a minute$`,
        ),
      );
      await cleartext();
      await probe();
      const end = await ingress.stop("SIGTERM");
      expect(end.code).toBe(0);
      expect(end.stderr).toBe("");
      expect(ingress.lines().filter((l) => / warn TLS /.test(l))).toEqual([line]);
    });
  },
);
