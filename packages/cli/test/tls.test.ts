/**
 * The connection options for TLS brokers (`mqtts://`, `--cacert`, `--cert`,
 * `--key`, `--username` with `--password-file`, `MQRPC_MQTT_URL`), with the
 * built `mqrpc` run as a process against Mosquitto TLS listeners whose
 * certificates a throwaway CA issues at test time: one that verifies the
 * broker only, one that requires client certificates (mutual TLS, the
 * certificate's common name as the username), and one that asks for a
 * password. Servers run in this process, connected over the same TLS
 * listener. A certificate that does not verify, or a client certificate
 * the broker refuses, ends the command with the exit code of its status
 * and a message naming the TLS problem, not with the `--connect-timeout`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createMqttServer, type MqttServer } from "@mqrpc/runtime";
import type { IClientOptions } from "mqtt";
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import { freePort } from "../../../test/brokers/free-port.js";
import {
  type MosquittoBroker,
  type MosquittoTls,
  mosquittoAvailable,
  startMosquitto,
} from "../../../test/brokers/mosquitto.js";
import { brokerSelection } from "../../../test/brokers/selection.js";
import {
  type CertificateFiles,
  opensslPath,
  TestCertificateAuthority,
} from "../../../test/brokers/tls-certificates.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "../../../test/support/interop-service.js";
import { Closer, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { CliProcess, type CliResult } from "./support/cli-process.js";
import { startGrpcUpstream } from "./support/grpc-upstream.js";

const SERVICE = TestService.typeName;
const PASSWORD = "correct horse battery staple";
const DEVICE_PASSWORD = "device secret";

// CI (MQRPC_REQUIRE_BROKERS) must not skip these for want of openssl.
const runnable =
  mosquittoAvailable() && (opensslPath() !== undefined || brokerSelection().required);

interface ListedServer {
  readonly serverId: string;
  readonly state: string;
}

describe.runIf(runnable)("the connection options against a TLS broker", { timeout: 60_000 }, () => {
  /** Server certificate only: clients verify the broker with `--cacert`. */
  let serverAuth: MosquittoBroker;
  /** Mutual TLS: a client certificate from the broker's CA is the login. */
  let mutual: MosquittoBroker;
  /** Server certificate, and a username and password. */
  let password: MosquittoBroker;
  /** A CA that signed none of the brokers' certificates. */
  let stranger: TestCertificateAuthority;
  let files: string;
  let passwordFile: string;
  let wrongPasswordFile: string;
  /** Client certificates from the mutual broker's CA: for `mqrpc`, for servers. */
  let cliCert: CertificateFiles;
  let deviceCert: CertificateFiles;
  /** A client certificate from the stranger CA. */
  let strangerCert: CertificateFiles;

  beforeAll(async () => {
    [serverAuth, mutual, password] = await Promise.all([
      startMosquitto({ tls: true }),
      startMosquitto({ tls: { requireCertificate: true } }),
      startMosquitto({ tls: true, users: { alice: PASSWORD, device: DEVICE_PASSWORD } }),
    ]);
    stranger = TestCertificateAuthority.create("not the brokers' CA");
    cliCert = tlsOf(mutual).authority.issueClient("mqrpc-cli");
    deviceCert = tlsOf(mutual).authority.issueClient("device");
    strangerCert = stranger.issueClient("mqrpc-cli");
    files = mkdtempSync(join(tmpdir(), "mqrpc-cli-tls-"));
    passwordFile = join(files, "password");
    // The first line is the password: a trailing newline is not part of it.
    writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    wrongPasswordFile = join(files, "wrong-password");
    writeFileSync(wrongPasswordFile, "not it\n", { mode: 0o600 });
  });

  afterAll(async () => {
    await CliProcess.killAll();
    await Promise.all([serverAuth?.stop(), mutual?.stop(), password?.stop()]);
    stranger?.remove();
    if (files !== undefined) rmSync(files, { recursive: true, force: true });
  });

  function tlsOf(broker: MosquittoBroker): MosquittoTls {
    if (broker.tls === undefined) throw new Error("started without tls");
    return broker.tls;
  }

  function fixture(context: TestContext) {
    const closer = new Closer();
    context.onTestFinished(() => closer.closeAll());
    const start = (args: readonly string[], env?: Record<string, string>) =>
      closer.add(CliProcess.start(args, env), (p) => p.kill());
    return {
      closer,
      start,
      /** Runs `mqrpc <args>` to its end (stdin closed). */
      run(args: readonly string[], env?: Record<string, string>): Promise<CliResult> {
        const p = start(args, env);
        p.endInput();
        return p.exited;
      },
      /** Serves TestService on `broker`'s TLS listener, with `login` (a client certificate or password). */
      async serve(
        broker: MosquittoBroker,
        login: Pick<IClientOptions, "cert" | "key" | "username" | "password"> = {},
      ): Promise<MqttServer> {
        const tls = tlsOf(broker);
        const server = await createMqttServer({
          mqtt: {
            url: tls.url,
            ca: readFileSync(tls.caFile),
            protocolVersion: 5,
            reconnectPeriod: 200,
            ...login,
          },
          serverId: uniqueServerId("cli-tls"),
        });
        closer.add(server, (s) => s.close());
        server.service(TestService, interopService);
        await server.announced();
        return server;
      },
    };
  }

  /** `--mqtt mqtts://… --cacert <the broker's CA>` */
  function tlsArgs(broker: MosquittoBroker): string[] {
    const tls = tlsOf(broker);
    return ["--mqtt", tls.url, "--cacert", tls.caFile];
  }

  function mutualArgs(cert: CertificateFiles = cliCert): string[] {
    return [...tlsArgs(mutual), "--cert", cert.certFile, "--key", cert.keyFile];
  }

  function listed(result: CliResult, serverId: string): ListedServer | undefined {
    return (JSON.parse(result.stdout) as ListedServer[]).find((s) => s.serverId === serverId);
  }

  describe.concurrent("a broker certificate verified with --cacert", () => {
    it("list shows a server connected over TLS, and call reaches it (MQTT 3.1.1 and 5)", async (context) => {
      const f = fixture(context);
      const server = await f.serve(serverAuth);
      const [list, call] = await Promise.all([
        f.run(["list", ...tlsArgs(serverAuth), "--format", "json"]),
        f.run([
          "call",
          ...tlsArgs(serverAuth),
          "--mqtt-version",
          "5",
          server.serverId,
          `${SERVICE}/UnaryCall`,
          "-d",
          '{"responseSize": 3}',
        ]),
      ]);
      expect(list.stderr).toBe("");
      expect(list.code).toBe(0);
      expect(listed(list, server.serverId)?.state).toBe("online");
      expect(call.stderr).toBe("");
      expect(call.code).toBe(0);
      expect(call.stdout).toBe('{"payload":{"body":"AAAA"}}\n');
    });

    it("takes the broker URL from MQRPC_MQTT_URL", async (context) => {
      const f = fixture(context);
      const server = await f.serve(serverAuth);
      const tls = tlsOf(serverAuth);
      const call = await f.run(
        ["call", "--cacert", tls.caFile, server.serverId, `${SERVICE}/EmptyCall`],
        { MQRPC_MQTT_URL: tls.url },
      );
      expect(call.stderr).toBe("");
      expect(call.code).toBe(0);
      expect(call.stdout).toBe("{}\n");
    });

    it("a --cacert that did not sign the broker's certificate: exit 78 naming the TLS problem", async (context) => {
      const f = fixture(context);
      // Far longer than the run: the failure is the handshake's, not a timeout.
      const wait = ["--connect-timeout", "10m"];
      const [list, call] = await Promise.all([
        f.run(["list", "--mqtt", tlsOf(serverAuth).url, "--cacert", stranger.caFile, ...wait]),
        f.run([
          "call",
          "--mqtt",
          tlsOf(serverAuth).url,
          "--cacert",
          stranger.caFile,
          ...wait,
          "some-device",
          `${SERVICE}/EmptyCall`,
        ]),
      ]);
      const message = `the TLS certificate of the MQTT broker at ${tlsOf(serverAuth).url} does not verify (SELF_SIGNED_CERT_IN_CHAIN: self-signed certificate in certificate chain): --cacert does not hold the CA that signed it`;
      for (const r of [list, call]) {
        expect(r.code).toBe(64 + Code.Unavailable);
        expect(r.stdout).toBe("");
      }
      expect(list.stderr).toBe(`mqrpc: unavailable: ${message}\n`);
      // call prints every status it ends with as JSON.
      expect(JSON.parse(call.stderr)).toEqual({ code: "unavailable", message });
    });

    it("no --cacert: the system CAs do not verify a private CA, exit 78 asking for --cacert", async (context) => {
      const f = fixture(context);
      const r = await f.run(["list", "--mqtt", tlsOf(serverAuth).url, "--connect-timeout", "10m"]);
      expect(r.code).toBe(64 + Code.Unavailable);
      expect(r.stderr).toMatch(
        /does not verify \(SELF_SIGNED_CERT_IN_CHAIN: .*\): give the CA certificate that signed it with --cacert\n$/,
      );
    });

    it("mqtts:// to a plain listener and mqtt:// to a TLS one: exit 78 asking whether it is a TLS port", async (context) => {
      const f = fixture(context);
      const [tlsToPlain, plainToTls] = await Promise.all([
        f.run(["list", "--mqtt", serverAuth.url.replace("mqtt:", "mqtts:")]),
        f.run(["list", "--mqtt", tlsOf(serverAuth).url.replace("mqtts:", "mqtt:")]),
      ]);
      expect(tlsToPlain.code).toBe(64 + Code.Unavailable);
      expect(tlsToPlain.stderr).toContain(
        `(is 127.0.0.1:${serverAuth.port} a TLS listener? mqtts:// and wss:// need one)`,
      );
      expect(plainToTls.code).toBe(64 + Code.Unavailable);
      expect(plainToTls.stderr).toContain(
        `(is 127.0.0.1:${tlsOf(serverAuth).port} a TLS listener? then use mqtts:// or wss://)`,
      );
    });
  });

  describe.concurrent("mutual TLS: --cert and --key", () => {
    it("list and call log in with a client certificate", async (context) => {
      const f = fixture(context);
      const server = await f.serve(mutual, {
        cert: readFileSync(deviceCert.certFile),
        key: readFileSync(deviceCert.keyFile),
      });
      const [list, call] = await Promise.all([
        f.run(["list", ...mutualArgs(), "--format", "json"]),
        f.run([
          "call",
          ...mutualArgs(),
          server.serverId,
          `${SERVICE}/StreamingOutputCall`,
          "-d",
          '{"responseParameters": [{"size": 1}, {"size": 2}]}',
        ]),
      ]);
      expect(list.stderr).toBe("");
      expect(list.code).toBe(0);
      expect(listed(list, server.serverId)?.state).toBe("online");
      expect(call.stderr).toBe("");
      expect(call.code).toBe(0);
      expect(call.stdout).toBe('{"payload":{"body":"AA=="}}\n{"payload":{"body":"AAA="}}\n');
    });

    it("without a client certificate, or with one from another CA: exit 80 naming it", async (context) => {
      const f = fixture(context);
      const [none, foreign] = await Promise.all([
        f.run(["list", ...tlsArgs(mutual), "--connect-timeout", "10m"]),
        f.run(["list", ...mutualArgs(strangerCert), "--connect-timeout", "10m"]),
      ]);
      const url = tlsOf(mutual).url;
      expect(none.code).toBe(64 + Code.Unauthenticated);
      expect(none.stderr).toMatch(
        new RegExp(
          `^mqrpc: unauthenticated: the MQTT broker at ${url} refused the TLS handshake \\(.*alert certificate required\\): it asks for a client certificate \\(give --cert and --key\\)\\n$`,
        ),
      );
      expect(foreign.code).toBe(64 + Code.Unauthenticated);
      expect(foreign.stderr).toMatch(
        new RegExp(
          `^mqrpc: unauthenticated: the MQTT broker at ${url} refused the TLS handshake \\(.*alert unknown ca\\): it does not accept the client certificate \\(--cert and --key\\)\\n$`,
        ),
      );
    });

    it("--cert without --key is a usage error (exit 2)", async (context) => {
      const f = fixture(context);
      const r = await f.run(["list", ...tlsArgs(mutual), "--cert", cliCert.certFile]);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe("mqrpc: --cert and --key go together: give both or neither\n");
    });
  });

  describe.concurrent("--username and --password-file over TLS", () => {
    it("list and call log in with the password read from the file", async (context) => {
      const f = fixture(context);
      const server = await f.serve(password, { username: "device", password: DEVICE_PASSWORD });
      const login = ["--username", "alice", "--password-file", passwordFile];
      // The client id defaults to the username: two at once need ids of their own.
      const [list, call] = await Promise.all([
        f.run([
          "list",
          ...tlsArgs(password),
          ...login,
          "--client-id",
          "alice-list",
          "--format",
          "json",
        ]),
        f.run([
          "call",
          ...tlsArgs(password),
          ...login,
          "--client-id",
          "alice-call",
          server.serverId,
          `${SERVICE}/EmptyCall`,
        ]),
      ]);
      expect(list.stderr).toBe("");
      expect(list.code).toBe(0);
      expect(listed(list, server.serverId)?.state).toBe("online");
      expect(call.stderr).toBe("");
      expect(call.code).toBe(0);
      expect(call.stdout).toBe("{}\n");
    });

    it("a wrong password (from MQRPC_PASSWORD_FILE too) is refused: exit 71 on MQTT 5 and 3.1.1", async (context) => {
      const f = fixture(context);
      const [v5, v3] = await Promise.all([
        f.run(["list", ...tlsArgs(password), "--mqtt-version", "5"], {
          MQRPC_USERNAME: "alice",
          MQRPC_PASSWORD_FILE: wrongPasswordFile,
        }),
        f.run([
          "list",
          ...tlsArgs(password),
          "--username",
          "alice",
          "--password-file",
          wrongPasswordFile,
        ]),
      ]);
      // Mosquitto 2 answers a wrong password with "not authorized" (CONNACK
      // 5, reason code 135), not "bad username or password" (4, 134): the
      // CLI reports the code the broker sent.
      for (const r of [v5, v3]) {
        expect(r.stderr).toMatch(
          new RegExp(
            `^mqrpc: permission_denied: the MQTT broker at ${tlsOf(password).url} refused the client: .*[Nn]ot authorized\\n$`,
          ),
        );
        expect(r.code).toBe(64 + Code.PermissionDenied);
      }
    });
  });

  describe.concurrent("long-running commands over TLS", () => {
    it("expose and forward over mutual TLS carry a gRPC call; SIGTERM exits 0 and leaves it offline", async (context) => {
      const f = fixture(context);
      const grpcPort = await startGrpcUpstream(f.closer);
      const serverId = uniqueServerId("cli-tls-expose");
      const expose = f.start([
        "expose",
        ...mutualArgs(deviceCert),
        "--server-id",
        serverId,
        "--port",
        "50051",
        "--target",
        `127.0.0.1:${grpcPort}`,
      ]);
      await expose.untilLine((l) => / online /.test(l), 30_000);
      const forward = f.start([
        "forward",
        ...mutualArgs(),
        "--server-id",
        serverId,
        "--port",
        "50051",
        "--listen",
        "127.0.0.1:0",
      ]);
      const listening = await forward.untilLine((l) => / listening /.test(l), 30_000);
      const port = /listening 127\.0\.0\.1:(\d+) -> /.exec(listening)?.[1];
      expect(port).toMatch(/^\d+$/);
      const client = createClient(
        TestService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }),
      );
      const unary = await client.unaryCall({ responseSize: 5 }, { timeoutMs: 20_000 });
      expect(unary.payload?.body.byteLength).toBe(5);

      const forwardEnd = await forward.stop("SIGTERM");
      expect(forwardEnd.code).toBe(0);
      const exposeEnd = await expose.stop("SIGTERM");
      expect(exposeEnd.stderr).toBe("");
      expect(exposeEnd.code).toBe(0);
      const list = await f.run(["list", ...mutualArgs(), "--all", "--format", "json"]);
      expect(list.code).toBe(0);
      expect(listed(list, serverId)?.state).toBe("offline");
    });

    it("gateway, expose, forward and ingress with a broker certificate that does not verify exit 78 at once", async (context) => {
      const f = fixture(context);
      const untrusted = ["--mqtt", tlsOf(serverAuth).url, "--cacert", stranger.caFile];
      const results = await Promise.all([
        f.run([
          "gateway",
          ...untrusted,
          "--server-id",
          uniqueServerId("cli-tls-gateway"),
          "--upstream",
          "http://127.0.0.1:9",
        ]),
        f.run([
          "expose",
          ...untrusted,
          "--server-id",
          "x",
          "--port",
          "1",
          "--target",
          "127.0.0.1:9",
        ]),
        f.run([
          "forward",
          ...untrusted,
          "--server-id",
          "x",
          "--port",
          "1",
          "--listen",
          "127.0.0.1:0",
        ]),
        f.run(["ingress", ...untrusted, "--listen", "127.0.0.1:0"]),
      ]);
      for (const r of results) {
        expect(r.stdout).toBe("");
        expect(r.stderr).toMatch(
          /^mqrpc: unavailable: the TLS certificate of the MQTT broker at \S+ does not verify \(SELF_SIGNED_CERT_IN_CHAIN: .*\): --cacert does not hold the CA that signed it\n$/,
        );
        expect(r.code).toBe(64 + Code.Unavailable);
      }
    });

    it("expose without a client certificate on the mutual listener exits 80 at once", async (context) => {
      const f = fixture(context);
      const r = await f.run([
        "expose",
        ...tlsArgs(mutual),
        "--server-id",
        "x",
        "--port",
        "1",
        "--target",
        "127.0.0.1:9",
      ]);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/it asks for a client certificate \(give --cert and --key\)\n$/);
      expect(r.code).toBe(64 + Code.Unauthenticated);
    });

    it("expose waiting for a broker that is not there says so, and SIGTERM stops it with exit 0", async (context) => {
      const f = fixture(context);
      const nobody = `mqtts://127.0.0.1:${await freePort()}`;
      const expose = f.start([
        "expose",
        "--mqtt",
        nobody,
        "--cacert",
        tlsOf(serverAuth).caFile,
        "--server-id",
        "x",
        "--port",
        "1",
        "--target",
        "127.0.0.1:9",
      ]);
      const warning = await expose.untilLine((l) => / warn /.test(l), 30_000);
      expect(warning).toMatch(
        new RegExp(
          `warn cannot reach the MQTT broker at ${nobody}: connect ECONNREFUSED .*; waiting for it$`,
        ),
      );
      const end = await expose.stop("SIGTERM");
      expect(end.stderr).toBe("");
      expect(end.code).toBe(0);
    });
  });
});
