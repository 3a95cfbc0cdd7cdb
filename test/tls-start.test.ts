/**
 * A server started against a TLS listener whose certificates do not fit
 * fails its start naming the TLS problem, rather than retrying the
 * handshake forever; with the right CA it serves over TLS.
 */

import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport } from "@mqrpc/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MosquittoBroker, mosquittoAvailable, startMosquitto } from "./brokers/mosquitto.js";
import { brokerSelection, kindSelected } from "./brokers/selection.js";
import { opensslPath, TestCertificateAuthority } from "./brokers/tls-certificates.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { uniqueServerId } from "./support/rpc-fixture.js";

// Missing Mosquitto or openssl skips, unless MQRPC_REQUIRE_BROKERS makes it an error.
const run =
  kindSelected("mosquitto") &&
  ((mosquittoAvailable() && opensslPath() !== undefined) || brokerSelection().required)
    ? describe
    : describe.skip;

run("server start over TLS", () => {
  let broker: MosquittoBroker;
  let strangers: TestCertificateAuthority;
  beforeAll(async () => {
    broker = await startMosquitto({ tls: { requireCertificate: true } });
    strangers = TestCertificateAuthority.create("another CA");
  });
  afterAll(async () => {
    await broker?.stop();
    strangers?.remove();
  });

  const tls = () => {
    if (broker.tls === undefined) throw new Error("no TLS listener");
    return broker.tls;
  };
  const client = (authority: TestCertificateAuthority) => {
    const files = authority.issueClient("dev-tls");
    return { cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) };
  };

  it("fails at once, naming TLS, when the broker's certificate does not verify", async () => {
    const start = createMqttServer({
      serverId: uniqueServerId("tls-ca"),
      mqtt: {
        url: tls().url,
        ca: readFileSync(strangers.caFile),
        ...client(tls().authority),
        reconnectPeriod: 100,
      },
      routes: (s) => s.service(TestService, interopService),
    });
    await expect(start).rejects.toThrow(
      /TLS with the MQTT broker failed \(SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO/,
    );
  });

  it("fails at once when the broker refuses the client's certificate", async () => {
    const start = createMqttServer({
      serverId: uniqueServerId("tls-cert"),
      mqtt: {
        url: tls().url,
        ca: readFileSync(tls().caFile),
        ...client(strangers),
        reconnectPeriod: 100,
      },
      routes: (s) => s.service(TestService, interopService),
    });
    await expect(start).rejects.toThrow(/TLS with the MQTT broker failed \(ERR_SSL_/);
  });

  it("serves over TLS with the right CA and certificate", async () => {
    const serverId = uniqueServerId("tls-ok");
    const mqtt = { url: tls().url, ca: readFileSync(tls().caFile), ...client(tls().authority) };
    const server = await createMqttServer({
      serverId,
      mqtt: { ...mqtt, clientId: "dev-tls" },
      routes: (s) => s.service(TestService, interopService),
    });
    const transport = createMqttTransport({ serverId, mqtt: { ...mqtt, clientId: "caller-tls" } });
    try {
      await createClient(TestService, transport).emptyCall({});
    } finally {
      await transport.close();
      await server.close();
    }
  });
});
