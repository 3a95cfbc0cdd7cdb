/**
 * The ingress's `tls` option checked at start: a key that is not the
 * certificate's is refused naming the option, whether OpenSSL would have
 * refused it too (two RSA keys: "key values mismatch") or taken it and then
 * failed every handshake (an EC key with an RSA certificate: OpenSSL keeps
 * keys of each type in a slot of their own). A failed handshake reaches
 * `onTlsClientError`. No broker: the ingress opens device transports only
 * for calls.
 */
import { execFileSync } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { opensslPath } from "../../../test/brokers/tls-certificates.js";
import { createGrpcIngress } from "../src/index.js";

/** Nothing listens there: the ingress never gets to it in these tests. */
const NO_BROKER = "mqtt://127.0.0.1:1";

describe.runIf(opensslPath() !== undefined)("createGrpcIngress({ tls })", () => {
  let dir: string;
  /** RSA certificate and its key. */
  let rsaCert: Buffer;
  let rsaKey: Buffer;
  /** Another RSA key, and an EC key. */
  let otherRsaKey: Buffer;
  let ecKey: Buffer;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "mqrpc-ingress-tls-"));
    const openssl = opensslPath() as string;
    const file = (name: string) => join(dir, name);
    const selfSigned = (key: string, cert: string) =>
      execFileSync(
        openssl,
        [
          "req",
          "-x509",
          "-newkey",
          "rsa:2048",
          "-nodes",
          "-keyout",
          file(key),
          "-out",
          file(cert),
          "-days",
          "1",
          "-subj",
          "/CN=localhost",
          "-addext",
          "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        { stdio: "pipe" },
      );
    selfSigned("rsa.key", "rsa.pem");
    selfSigned("other.key", "other.pem");
    execFileSync(openssl, ["ecparam", "-genkey", "-name", "prime256v1", "-out", file("ec.key")], {
      stdio: "pipe",
    });
    rsaCert = readFileSync(file("rsa.pem"));
    rsaKey = readFileSync(file("rsa.key"));
    otherRsaKey = readFileSync(file("other.key"));
    ecKey = readFileSync(file("ec.key"));
  });

  afterAll(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("refuses an EC key with an RSA certificate, naming tls.key, before it listens", async () => {
    await expect(
      createGrpcIngress({ mqtt: NO_BROKER, tls: { cert: rsaCert, key: ecKey } }),
    ).rejects.toThrow(
      "tls.key option: not the private key of the tls.cert certificate (CN=localhost) (the key is EC, the certificate's RSA)",
    );
  });

  it("refuses another RSA key with the same message", async () => {
    await expect(
      createGrpcIngress({ mqtt: NO_BROKER, tls: { cert: rsaCert, key: otherRsaKey } }),
    ).rejects.toThrow(
      /^tls\.key option: not the private key of the tls\.cert certificate \(CN=localhost\)$/,
    );
  });

  it("refuses a tls.cert or tls.key that is not PEM, naming the option", async () => {
    await expect(
      createGrpcIngress({ mqtt: NO_BROKER, tls: { cert: "not a certificate", key: rsaKey } }),
    ).rejects.toThrow(/^tls\.cert option: not PEM \(a DER certificate\?/);
    // DER, which X509Certificate takes and Node's TLS does not.
    await expect(
      createGrpcIngress({
        mqtt: NO_BROKER,
        tls: { cert: new X509Certificate(rsaCert).raw, key: rsaKey },
      }),
    ).rejects.toThrow(
      "tls.cert option: not PEM (a DER certificate? convert it: openssl x509 -inform der -in cert.der -out cert.pem)",
    );
    const encrypted = createPrivateKey(rsaKey).export({
      format: "pem",
      type: "pkcs8",
      cipher: "aes-256-cbc",
      passphrase: "right",
    });
    await expect(
      createGrpcIngress({ mqtt: NO_BROKER, tls: { cert: rsaCert, key: encrypted } }),
    ).rejects.toThrow(/^tls\.key option: an encrypted private key: give tls\.passphrase \(/);
    await expect(
      createGrpcIngress({
        mqtt: NO_BROKER,
        tls: { cert: rsaCert, key: encrypted, passphrase: "wrong" },
      }),
    ).rejects.toThrow(
      /^tls\.key option: an encrypted private key that tls\.passphrase does not decrypt \(/,
    );
    // And the right passphrase passes the check (the start then fails on the missing broker only later).
    const ingress = await createGrpcIngress({
      mqtt: NO_BROKER,
      tls: { cert: rsaCert, key: encrypted, passphrase: "right" },
    });
    await ingress.close();
    await expect(
      createGrpcIngress({ mqtt: NO_BROKER, tls: { cert: rsaCert, key: rsaCert } }),
    ).rejects.toThrow(/^tls\.key option: not a PEM private key \(/);
  });

  it("reports a failed handshake to onTlsClientError; a good one is not reported", async () => {
    const failures: Array<Error & { remoteAddress: string | undefined }> = [];
    const ingress = await createGrpcIngress({
      mqtt: NO_BROKER,
      tls: { cert: rsaCert, key: rsaKey },
      onTlsClientError: (error, socket) =>
        failures.push(Object.assign(error, { remoteAddress: socket.remoteAddress })),
    });
    try {
      const port = Number(new URL(ingress.url).port);
      // Cleartext HTTP to the TLS port: the handshake fails on the ingress's side.
      const plain = net.connect(port, "127.0.0.1", () => plain.write("GET / HTTP/1.1\r\n\r\n"));
      plain.on("error", () => {});
      await expect.poll(() => failures.length).toBe(1);
      plain.destroy();
      expect(failures[0]).toMatchObject({
        code: "ERR_SSL_HTTP_REQUEST",
        remoteAddress: "127.0.0.1",
      });
      // One that trusts it completes the handshake: no failure reported.
      await new Promise<void>((resolve, reject) => {
        const socket = tls.connect({ host: "127.0.0.1", port, ca: rsaCert, ALPNProtocols: ["h2"] });
        socket.once("secureConnect", () => {
          socket.destroy();
          resolve();
        });
        socket.once("error", reject);
      });
      expect(failures).toHaveLength(1);
    } finally {
      await ingress.close();
    }
  });
});
