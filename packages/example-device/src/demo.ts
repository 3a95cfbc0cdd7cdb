/**
 * `npm run demo`: a device serves DeviceService over MQTT and a cloud-side
 * client calls every method once. Uses the embedded broker unless MQTT_URL
 * names another one. Exits 0 after a real round trip of each RPC kind.
 * With `--serve`, runs the device alone (see serve()).
 */
import { createHash, randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport, startEmbeddedBroker } from "@mqrpc/runtime";
import { createDeviceImpl } from "./device-service.js";
import {
  createDeviceServiceClient,
  registerDeviceService,
} from "./gen/mqrpc/example/device/v1/device_mqrpc.js";

const DEVICE_ID = "sensor-box.7";

/**
 * `npm run demo -- --serve`: only the device, until Ctrl-C, for the `mqrpc`
 * CLI to find and call. Its broker is MQTT_URL, else an embedded one on
 * 127.0.0.1:1883 (the CLI's default broker URL).
 */
async function serve(): Promise<void> {
  const broker = process.env.MQTT_URL
    ? undefined
    : await startEmbeddedBroker({ port: 1883 }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "EADDRINUSE") throw e;
        throw new Error(
          "port 1883 is taken, by a broker? Serve through it: MQTT_URL=mqtt://localhost:1883 npm run demo -- --serve",
        );
      });
  const url = process.env.MQTT_URL ?? (broker?.url as string);
  const server = await createMqttServer({
    mqtt: url,
    serverId: DEVICE_ID,
    routes: (s) => registerDeviceService(s, createDeviceImpl({ deviceId: DEVICE_ID })),
  });
  console.log(`broker     ${url}${broker ? " (embedded Aedes)" : ""}`);
  console.log(
    `device     "${DEVICE_ID}" serving mqrpc.example.device.v1.DeviceService; Ctrl-C stops`,
  );
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await server.close(); // announces the device offline
  await broker?.close();
}

async function main(): Promise<void> {
  if (process.argv.includes("--serve")) return serve();
  const broker = process.env.MQTT_URL ? undefined : await startEmbeddedBroker();
  const url = process.env.MQTT_URL ?? (broker?.url as string);
  console.log(`broker     ${url}${broker ? " (embedded Aedes)" : ""}`);

  const server = await createMqttServer({
    mqtt: url,
    serverId: DEVICE_ID,
    routes: (s) => registerDeviceService(s, createDeviceImpl({ deviceId: DEVICE_ID })),
  });
  console.log(`device     "${DEVICE_ID}" serving mqrpc.example.device.v1.DeviceService`);

  const transport = createMqttTransport({ mqtt: url, serverId: DEVICE_ID });
  const device = createDeviceServiceClient(transport);
  try {
    // Unary.
    let started = performance.now();
    const info = await device.getInfo({}, { timeoutMs: 5000 });
    console.log(
      `\nGetInfo    ${info.deviceId}: ${info.model}, firmware ${info.firmwareVersion}, ` +
        `${info.temperatureCelsius.toFixed(1)} °C (${ms(started)})`,
    );
    const led = await device.setLed({ brightness: 80, color: "amber" });
    console.log(`SetLed     LED now ${led.brightness}% ${led.color}`);
    try {
      await device.setLed({ brightness: 150 });
    } catch (e) {
      const err = ConnectError.from(e);
      console.log(`SetLed     brightness 150 refused: ${Code[err.code]} "${err.rawMessage}"`);
    }

    // Server streaming, batched by the proto option on StreamTelemetry.
    started = performance.now();
    let count = 0;
    let sum = 0;
    for await (const t of device.streamTelemetry({ count: 1000 })) {
      count++;
      sum += t.temperatureCelsius;
    }
    console.log(
      `Telemetry  ${count} samples, mean ${(sum / count).toFixed(2)} °C in ${ms(started)} (batched stream)`,
    );

    // Client streaming: a firmware image in 64 KiB pieces, with progress.
    const image = randomBytes(4 * 1024 * 1024);
    const piece = 64 * 1024;
    started = performance.now();
    async function* pieces() {
      for (let offset = 0; offset < image.length; offset += piece) {
        progress(offset + piece, image.length);
        yield { data: image.subarray(offset, offset + piece) };
      }
    }
    const upload = await device.uploadFirmware(pieces(), {
      onTrailer: (t) =>
        console.log(`           trailer x-firmware-slot: ${t.get("x-firmware-slot")}`),
    });
    const expected = createHash("sha256").update(image).digest("hex");
    console.log(
      `Firmware   ${upload.bytesReceived} bytes in ${ms(started)}, sha256 ${upload.sha256.slice(0, 16)}… ` +
        (upload.sha256 === expected ? "verified" : "MISMATCH"),
    );
    if (upload.sha256 !== expected) throw new Error("firmware checksum mismatch");

    // Bidi streaming: an interactive console.
    const commands = ["echo hello from the cloud", "led", "uptime"];
    async function* typed() {
      for (const line of commands) yield { line };
    }
    for await (const out of device.console(typed())) {
      console.log(`Console    > ${out.line}`);
    }
  } finally {
    await transport.close();
    await server.close();
    await broker?.close();
  }
  console.log("\ndone: every RPC kind made a round trip through the broker");
}

function ms(since: number): string {
  return `${(performance.now() - since).toFixed(1)} ms`;
}

function progress(done: number, total: number): void {
  const ratio = Math.min(1, done / total);
  const width = 30;
  const bar = "#".repeat(Math.round(ratio * width)).padEnd(width, ".");
  const line = `Upload     [${bar}] ${(ratio * 100).toFixed(0).padStart(3)}%`;
  if (process.stdout.isTTY) process.stdout.write(`\r${line}${ratio === 1 ? "\n" : ""}`);
  else if (ratio === 1 || Math.round(ratio * 100) % 25 === 0) console.log(line);
}

main().then(
  () => {
    process.exitCode = 0;
  },
  (e: unknown) => {
    console.error("demo failed:", e);
    process.exit(1);
  },
);
