/**
 * The smallest useful browser client, for the bundle-size test: one
 * transport over MQTT on WebSockets and one typed unary call through
 * Connect's `createClient`.
 */
import { createClient } from "@connectrpc/connect";
import { createMqttTransport } from "@mqrpc/runtime";
import { DeviceService } from "../../../packages/example-device/src/gen/mqrpc/example/device/v1/device_pb.js";

/** Calls `GetInfo` on `serverId` through the broker at `url` (`ws://…` or `wss://…`). */
export async function getDeviceModel(url: string, serverId: string): Promise<string> {
  const transport = createMqttTransport({ mqtt: url, serverId });
  try {
    const info = await createClient(DeviceService, transport).getInfo({}, { timeoutMs: 5000 });
    return info.model;
  } finally {
    await transport.close();
  }
}
