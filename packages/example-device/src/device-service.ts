/**
 * A simulated edge device: what firmware on a sensor box would implement.
 * Every method honours its context signal, so cancelled or expired calls
 * stop work at once.
 */
import { createHash } from "node:crypto";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { DeviceService } from "./gen/mqrpc/example/device/v1/device_pb.js";

/** Options of {@link createDeviceImpl}. */
export interface SimulatedDevice {
  readonly deviceId: string;
  /** Largest firmware image accepted, in bytes. */
  readonly maxFirmwareBytes?: number;
}

/** Creates the DeviceService implementation of one simulated device. */
export function createDeviceImpl(device: SimulatedDevice): ServiceImpl<typeof DeviceService> {
  const bootedAt = Date.now();
  const led = { brightness: 0, color: "white" };
  const maxFirmwareBytes = device.maxFirmwareBytes ?? 64 * 1024 * 1024;
  let seed = 1;
  const noise = () => {
    seed = (seed * 16807) % 2147483647;
    return seed / 2147483647 - 0.5;
  };
  const sample = () => ({
    timestampMs: BigInt(Date.now()),
    temperatureCelsius: 21.5 + noise(),
    humidityPercent: 40 + 4 * noise(),
  });

  return {
    getInfo() {
      return {
        deviceId: device.deviceId,
        model: "mqrpc-sim-1",
        firmwareVersion: "1.4.2",
        uptimeSeconds: BigInt(Math.floor((Date.now() - bootedAt) / 1000)),
        temperatureCelsius: sample().temperatureCelsius,
      };
    },

    setLed(req) {
      if (req.brightness > 100) {
        throw new ConnectError(
          `brightness must be 0..100, got ${req.brightness}`,
          Code.InvalidArgument,
        );
      }
      led.brightness = req.brightness;
      led.color = req.color || led.color;
      return { ...led };
    },

    async *streamTelemetry(req, ctx) {
      for (let i = 0; req.count === 0 || i < req.count; i++) {
        if (i > 0 && req.intervalMs > 0) await sleep(req.intervalMs, ctx);
        yield sample();
      }
    },

    async uploadFirmware(chunks, ctx) {
      const hash = createHash("sha256");
      let received = 0;
      for await (const chunk of chunks) {
        received += chunk.data.byteLength;
        if (received > maxFirmwareBytes) {
          throw new ConnectError(
            `firmware exceeds ${maxFirmwareBytes} bytes`,
            Code.ResourceExhausted,
          );
        }
        hash.update(chunk.data);
      }
      ctx.responseTrailer.set("x-firmware-slot", "b");
      return { bytesReceived: BigInt(received), sha256: hash.digest("hex") };
    },

    async *console(lines) {
      yield { line: `${device.deviceId} console ready` };
      for await (const { line } of lines) {
        const [command, ...args] = line.trim().split(/\s+/);
        switch (command) {
          case "echo":
            yield { line: args.join(" ") };
            break;
          case "led":
            yield { line: `led ${led.brightness}% ${led.color}` };
            break;
          case "uptime":
            yield { line: `up ${Math.floor((Date.now() - bootedAt) / 1000)} s` };
            break;
          default:
            yield { line: `unknown command: ${command ?? ""}` };
        }
      }
    },
  };
}

function sleep(ms: number, ctx: HandlerContext): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ctx.signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(ctx.signal.reason);
    };
    ctx.signal.addEventListener("abort", onAbort, { once: true });
  });
}
