/**
 * Starts every broker the integration tests use, once per `vitest run`:
 * embedded Aedes always; Mosquitto (MQTT 3.1.1 and 5) and NATS in MQTT mode
 * when their binaries are present, each on free ports with generated config.
 * `MQRPC_BROKERS=aedes,mosquitto` narrows the set; `MQRPC_REQUIRE_BROKERS=1`
 * (CI) turns a missing binary into a failure instead of a skip. Prints which
 * brokers the run covered.
 */
import type { TestProject } from "vitest/node";
import { startEmbeddedBroker } from "../../packages/runtime/src/embedded-broker.js";
import { mosquittoAvailable, startMosquitto } from "./mosquitto.js";
import { natsAvailable, startNats } from "./nats.js";
import type { BrokerTarget } from "./targets.js";

const stops: Array<() => Promise<void>> = [];
let summary = "";

export async function setup(project: TestProject): Promise<void> {
  const wanted = (process.env.MQRPC_BROKERS ?? "aedes,mosquitto,nats")
    .split(",")
    .map((s) => s.trim());
  const required = process.env.MQRPC_REQUIRE_BROKERS === "1";
  const targets: BrokerTarget[] = [];
  const skipped: string[] = [];

  if (wanted.includes("aedes")) {
    const aedes = await startEmbeddedBroker();
    stops.push(() => aedes.close());
    targets.push({
      name: "aedes",
      kind: "aedes",
      url: aedes.url,
      mqttOptions: { protocolVersion: 4 },
      sharedSubscriptions: false,
    });
  }
  if (wanted.includes("mosquitto")) {
    if (mosquittoAvailable()) {
      const mosquitto = await startMosquitto();
      stops.push(() => mosquitto.stop());
      for (const protocolVersion of [4, 5] as const) {
        targets.push({
          name: protocolVersion === 4 ? "mosquitto-3.1.1" : "mosquitto-5",
          kind: "mosquitto",
          url: mosquitto.url,
          mqttOptions: { protocolVersion },
          sharedSubscriptions: true,
        });
      }
    } else if (required) {
      throw new Error(
        "MQRPC_REQUIRE_BROKERS=1 but mosquitto is not installed (apt-get install mosquitto)",
      );
    } else {
      skipped.push("mosquitto (binary not found)");
    }
  }
  if (wanted.includes("nats")) {
    if (natsAvailable()) {
      const nats = await startNats();
      stops.push(() => nats.stop());
      targets.push({
        name: "nats",
        kind: "nats",
        url: nats.url,
        mqttOptions: { protocolVersion: 4 },
        sharedSubscriptions: false,
      });
    } else if (required) {
      throw new Error(
        "MQRPC_REQUIRE_BROKERS=1 but nats-server is not installed (apt-get install nats-server)",
      );
    } else {
      skipped.push("nats (binary not found)");
    }
  }
  project.provide("brokers", targets);
  summary =
    `mqrpc brokers covered: ${targets.map((t) => t.name).join(", ")}` +
    (skipped.length > 0 ? `; not covered: ${skipped.join(", ")}` : "");
  console.log(summary);
}

export async function teardown(): Promise<void> {
  for (const stop of stops.reverse()) await stop();
  console.log(summary);
}
