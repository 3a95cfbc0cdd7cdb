/**
 * The example device (packages/example-device) as the browser tests serve
 * it from Node, with two additions a test needs: SetLed's range error
 * carries an error detail and a trailer, and each StreamTelemetry handler
 * reports how its signal ended, by the `x-test-call` request header, so a
 * test can see a deadline or cancel from the page reach the handler.
 */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { createDeviceImpl } from "../../packages/example-device/src/device-service.js";
import {
  type DeviceService,
  SetLedResponseSchema,
} from "../../packages/example-device/src/gen/mqrpc/example/device/v1/device_pb.js";

/** The request header that names a call for {@link HandlerAborts}. */
export const TEST_CALL_HEADER = "x-test-call";

/** Why handlers' signals fired, by test call name. */
export class HandlerAborts {
  private readonly reasons = new Map<string, unknown>();
  private readonly waiters = new Map<string, (reason: unknown) => void>();

  record(call: string, reason: unknown): void {
    this.reasons.set(call, reason);
    this.waiters.get(call)?.(reason);
    this.waiters.delete(call);
  }

  /** Resolves with the reason the handler of `call` was aborted with. */
  of(call: string): Promise<unknown> {
    if (this.reasons.has(call)) return Promise.resolve(this.reasons.get(call));
    return new Promise((resolve) => this.waiters.set(call, resolve));
  }
}

/** The device implementation for the browser tests. */
export function browserTestDevice(
  deviceId: string,
  aborts: HandlerAborts,
): ServiceImpl<typeof DeviceService> {
  const device = createDeviceImpl({ deviceId });
  return {
    ...device,
    setLed(request, context) {
      if (request.brightness > 100) {
        throw new ConnectError(
          `brightness must be 0..100, got ${request.brightness}`,
          Code.InvalidArgument,
          { "x-max-brightness": "100" },
          [{ desc: SetLedResponseSchema, value: { brightness: 100, color: request.color } }],
        );
      }
      return device.setLed(request, context);
    },
    streamTelemetry(request, context) {
      const call = context.requestHeader.get(TEST_CALL_HEADER);
      if (call !== null) {
        context.signal.addEventListener("abort", () => aborts.record(call, context.signal.reason), {
          once: true,
        });
      }
      return device.streamTelemetry(request, context);
    },
  };
}
