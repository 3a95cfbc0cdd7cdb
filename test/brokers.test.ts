/**
 * Smoke tests of the broker harness (test/brokers/): every target of the run
 * carries a QoS 1 publish from one raw MQTT.js client to another and keeps a
 * retained message; the selection env vars mean what they say; Mosquitto
 * restarts on the same port with its persisted state; and no broker outlives
 * its `stop()` or the process that started it.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import {
  connectAsync,
  type IClientOptions,
  type MqttClient,
  connect as mqttConnect,
  type Packet,
} from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { mosquittoAvailable, mosquittoPath, startMosquitto } from "./brokers/mosquitto.js";
import { natsPath } from "./brokers/nats.js";
import { brokerSelection } from "./brokers/selection.js";
import { brokerTargets, forEachBroker } from "./brokers/targets.js";

const clients: MqttClient[] = [];
const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

async function connect(url: string, options: IClientOptions): Promise<MqttClient> {
  const client = await connectAsync(url, { ...options, reconnectPeriod: 0, connectTimeout: 5000 });
  clients.push(client);
  return client;
}

/** A topic of our own; no `.` or spaces, which NATS rejects. */
function uniqueTopic(label: string): string {
  return `mqrpc-smoke/${label}/${randomBytes(6).toString("hex")}`;
}

interface Received {
  readonly payload: string;
  readonly packet: Packet & { qos?: number; retain?: boolean; properties?: unknown };
}

/** The next message `client` receives on `topic`. */
function nextMessage(client: MqttClient, topic: string): Promise<Received> {
  return new Promise((resolve) => {
    const onMessage = (t: string, payload: Buffer, packet: Received["packet"]) => {
      if (t !== topic) return;
      client.off("message", onMessage);
      resolve({ payload: payload.toString(), packet });
    };
    client.on("message", onMessage);
  });
}

forEachBroker((target) => {
  const options = { ...target.mqttOptions };

  it("negotiates the target's protocol level", async () => {
    const client = await connect(target.url, options);
    expect(client.connected).toBe(true);
    expect(client.options.protocolVersion).toBe(target.protocolVersion);
  });

  it("delivers a QoS 1 publish to another client", async () => {
    const topic = uniqueTopic("qos1");
    const subscriber = await connect(target.url, options);
    const granted = await subscriber.subscribeAsync(topic, { qos: 1 });
    expect(granted.map((g) => g.qos)).toEqual([1]);
    const received = nextMessage(subscriber, topic);
    const publisher = await connect(target.url, options);
    // Resolves on the broker's PUBACK.
    await publisher.publishAsync(topic, "hello over QoS 1", { qos: 1 });
    const message = await received;
    expect(message.payload).toBe("hello over QoS 1");
    expect(message.packet.qos).toBe(1);
  });

  if (target.protocolVersion === 5) {
    it("carries MQTT 5 user properties", async () => {
      const topic = uniqueTopic("props");
      const subscriber = await connect(target.url, options);
      await subscriber.subscribeAsync(topic, { qos: 1 });
      const received = nextMessage(subscriber, topic);
      const publisher = await connect(target.url, options);
      await publisher.publishAsync(topic, "x", {
        qos: 1,
        properties: { userProperties: { call: "42" } },
      });
      const message = await received;
      expect(message.packet.properties).toMatchObject({ userProperties: { call: "42" } });
    });
  }

  it("keeps a retained message for a later subscriber", async () => {
    const topic = uniqueTopic("retained");
    const publisher = await connect(target.url, options);
    await publisher.publishAsync(topic, "last known state", { qos: 1, retain: true });
    const late = await connect(target.url, options);
    const received = nextMessage(late, topic);
    await late.subscribeAsync(topic, { qos: 1 });
    const message = await received;
    expect(message.payload).toBe("last known state");
    expect(message.packet.retain).toBe(true);
    // Clear it: the broker outlives this test.
    await publisher.publishAsync(topic, "", { qos: 1, retain: true });
  });
});

describe("broker harness", () => {
  it("runs exactly the selected targets whose broker is installed", () => {
    const installed = (name: string) =>
      name.startsWith("mosquitto")
        ? mosquittoPath() !== undefined
        : name === "nats"
          ? natsPath() !== undefined
          : true;
    const expected = brokerSelection().targets.filter(installed);
    expect(brokerTargets().map((t) => t.name)).toEqual(expected);
    for (const target of brokerTargets()) {
      expect(target.url).toMatch(/^mqtt:\/\/127\.0\.0\.1:\d+$/);
      expect(target.mqttOptions.protocolVersion).toBe(target.protocolVersion);
      // Never the machine's own brokers on the default ports.
      expect(target.url).not.toMatch(/:(1883|4222)$/);
    }
  });

  it("reads MQRPC_BROKERS and MQRPC_REQUIRE_BROKERS", () => {
    expect(brokerSelection({}).targets).toEqual([
      "aedes",
      "mosquitto-3.1.1",
      "mosquitto-5",
      "nats",
    ]);
    expect(brokerSelection({ MQRPC_BROKERS: " nats, Aedes " }).targets).toEqual(["aedes", "nats"]);
    expect(brokerSelection({ MQRPC_BROKERS: "mosquitto" }).targets).toEqual([
      "mosquitto-3.1.1",
      "mosquitto-5",
    ]);
    expect(brokerSelection({ MQRPC_BROKERS: "mosquitto-5" }).targets).toEqual(["mosquitto-5"]);
    expect(() => brokerSelection({ MQRPC_BROKERS: "aedes,mosquito" })).toThrow(
      /unknown broker "mosquito"/,
    );
    expect(brokerSelection({}).required).toBe(false);
    expect(brokerSelection({ MQRPC_REQUIRE_BROKERS: "1" }).required).toBe(true);
    expect(brokerSelection({ MQRPC_REQUIRE_BROKERS: "0" }).required).toBe(false);
  });

  describe.runIf(mosquittoAvailable())("Mosquitto", () => {
    it("restarts on the same port with its persisted sessions and retained messages", async () => {
      const broker = await startMosquitto({ persistence: true });
      stops.push(() => broker.stop());
      const topic = uniqueTopic("persisted");
      const publisher = await connect(broker.url, { protocolVersion: 5 });
      await publisher.publishAsync(topic, "survives restarts", { qos: 1, retain: true });
      // A persistent session with a subscription, offline during the restart.
      const sessionOptions = {
        protocolVersion: 4 as const,
        clientId: `smoke-${randomBytes(4).toString("hex")}`,
        clean: false,
      };
      const session = await connect(broker.url, sessionOptions);
      await session.subscribeAsync(`${topic}/queued`, { qos: 1 });
      await session.endAsync();
      await publisher.endAsync();

      const pid = broker.pid;
      await broker.restart();
      expect(broker.pid).not.toBe(pid);
      expect(alive(pid)).toBe(false);

      const publisher2 = await connect(broker.url, { protocolVersion: 5 });
      const late = await connect(broker.url, { protocolVersion: 5 });
      const retained = nextMessage(late, topic);
      await late.subscribeAsync(topic, { qos: 1 });
      expect((await retained).payload).toBe("survives restarts");

      // The session's subscription survived: a message published while it
      // is offline is queued and delivered when it comes back.
      await publisher2.publishAsync(`${topic}/queued`, "queued while offline", { qos: 1 });
      // Listening before the CONNACK: the queued message follows it at once.
      const resumed = mqttConnect(broker.url, { ...sessionOptions, reconnectPeriod: 0 });
      clients.push(resumed);
      const queued = nextMessage(resumed, `${topic}/queued`);
      expect((await queued).payload).toBe("queued while offline");
    });

    it("fails with Mosquitto's own error when the config is bad", async () => {
      await expect(startMosquitto({ extraConfig: "bogus_option 1" })).rejects.toThrow(
        /Unknown configuration variable "bogus_option"/,
      );
    });

    it("leaves no process behind after stop()", async () => {
      const broker = await startMosquitto();
      const pid = broker.pid;
      expect(alive(pid)).toBe(true);
      await broker.stop();
      expect(alive(pid)).toBe(false);
    });

    it.runIf(process.platform === "linux")(
      "stops a broker whose starting process was SIGKILLed",
      async () => {
        const module = fileURLToPath(new URL("./brokers/mosquitto.ts", import.meta.url));
        const script = `import { startMosquitto } from ${JSON.stringify(module)};
const broker = await startMosquitto();
console.log("pid", broker.pid, "conf", broker.configFile);
setInterval(() => {}, 1000);`;
        const child = spawn(
          process.execPath,
          ["--import", "tsx", "--input-type=module", "-e", script],
          {
            stdio: ["ignore", "pipe", "inherit"],
          },
        );
        const [pid, conf] = await new Promise<[number, string]>((resolve, reject) => {
          let out = "";
          child.stdout.on("data", (d: Buffer) => {
            out += d.toString();
            const match = /pid (\d+) conf (\S+)\n/.exec(out);
            if (match) resolve([Number(match[1]), match[2]!]);
          });
          child.once("exit", (code) => reject(new Error(`child exited with ${code}: ${out}`)));
        });
        expect(alive(pid)).toBe(true);
        child.kill("SIGKILL");
        const deadline = Date.now() + 5000;
        while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        expect(alive(pid)).toBe(false);
        // The killed process could not remove its temp dir.
        rmSync(dirname(conf), { recursive: true, force: true });
      },
    );
  });
});

/** Whether `pid` is a live process (a zombie is not). Linux /proc. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
