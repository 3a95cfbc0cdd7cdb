/**
 * Security of the bridge: each virtual port is a request topic of its own
 * (`mqrpc/s/{serverId}/mqrpc~v1~Tunnel/Port{n}/{clientKey}`), so the
 * documented Mosquitto ACL (docs/mosquitto-acl.conf, client id = username)
 * allows or denies per device and per port: a caller the ACL denies cannot
 * open a connection (MQTT 5: EACCES at once; MQTT 3.1.1, where brokers drop
 * refused publishes silently: ETIMEDOUT at connectTimeoutMs), and the
 * server never sees it. `forwardPort` binds loopback unless told otherwise.
 */
import { readFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type MosquittoBroker,
  mosquittoAvailable,
  startMosquitto,
} from "../../../test/brokers/mosquitto.js";
import { Closer } from "../../../test/support/rpc-fixture.js";
import { connectMqtt, forwardPort, listenMqtt, type MqttListener } from "../src/index.js";
import { closed, nextError, readAll } from "./support/bridge-fixture.js";

const docs = (name: string) => new URL(`../../../docs/${name}`, import.meta.url);
const shippedAcl = readFileSync(docs("mosquitto-acl.conf"), "utf8");
const shippedListener = readFileSync(docs("mosquitto.conf"), "utf8")
  .split("\n")
  .filter((line) => /^(allow_anonymous|use_username_as_clientid)\b/.test(line))
  .join("\n");
/** The documented ACL, with callers allowed to reach port 8080 of dev-42 only. */
const portAcl = shippedAcl
  .replace(
    "pattern write mqrpc/s/+/+/+/%c\n",
    "pattern write mqrpc/s/dev-42/mqrpc~v1~Tunnel/Port8080/%c\n",
  )
  .replace("pattern write mqrpc/s/+/+/+/%c/+\n", "");
const users = { "dev-42": "server-secret", alice: "alice-secret" };

describe.runIf(mosquittoAvailable())("broker ACLs per device and per port", () => {
  let broker: MosquittoBroker;
  const closer = new Closer();
  const listeners: Record<number, MqttListener> = {};
  const accepted: number[] = [];

  beforeAll(async () => {
    expect(portAcl).toContain("Port8080");
    expect(portAcl).not.toContain("pattern write mqrpc/s/+/+/+/%c\n");
    broker = await startMosquitto({ acl: portAcl, users, extraConfig: shippedListener });
  });
  afterEach(() => closer.closeAll());
  afterAll(() => broker?.stop());

  for (const protocolVersion of [4, 5] as const) {
    it(`lets alice open port 8080 and denies port 22 (MQTT ${protocolVersion === 5 ? "5" : "3.1.1"})`, async () => {
      const account = (username: keyof typeof users) => ({
        url: broker.url,
        protocolVersion,
        username,
        password: users[username],
        reconnectPeriod: 200,
      });
      for (const port of [8080, 22]) {
        listeners[port] = closer.add(
          await listenMqtt({ mqtt: account("dev-42"), serverId: "dev-42", port }),
          (l) => l.close(),
        );
        listeners[port].on("connection", (socket) => {
          accepted.push(port);
          socket.end(`port ${port}`);
        });
      }
      accepted.length = 0;
      const allowed = closer.add(
        connectMqtt({ mqtt: account("alice"), serverId: "dev-42", port: 8080 }),
        (s) => s.destroy(),
      );
      allowed.end();
      expect((await readAll(allowed)).toString()).toBe("port 8080");

      const denied = closer.add(
        connectMqtt({
          mqtt: account("alice"),
          serverId: "dev-42",
          port: 22,
          connectTimeoutMs: 1500,
        }),
        (s) => s.destroy(),
      );
      denied.write("let me in");
      const error = await nextError(denied);
      // MQTT 5 refuses the publish (PUBACK 0x87); 3.1.1 drops it silently.
      expect(error.code).toBe(protocolVersion === 5 ? "EACCES" : "ETIMEDOUT");
      expect(denied.connecting).toBe(true);
      await closed(denied);
      expect(accepted).toEqual([8080]);
    });
  }
});

describe("forwardPort's local side", () => {
  it("binds loopback unless told otherwise, and refuses bad listen options", async () => {
    const forward = await forwardPort({
      mqtt: "mqtt://127.0.0.1:1",
      serverId: "dev-42",
      port: 22,
      connectTimeoutMs: 100,
    });
    try {
      expect(forward.address.host).toBe("127.0.0.1");
      // A local program's connection goes nowhere but the bridge; with no
      // broker it is reset at once rather than left hanging.
      const local = tcpConnect(forward.address.port, "127.0.0.1");
      const error = await new Promise<Error & { code?: string }>((resolve) =>
        local.once("error", resolve),
      );
      expect(error.code).toBe("ECONNRESET");
    } finally {
      await forward.close();
    }
    await expect(
      forwardPort({ mqtt: "mqtt://127.0.0.1:1", serverId: "d", port: 22, listen: { port: -1 } }),
    ).rejects.toThrow(/^listen\.port/);
  });
});
