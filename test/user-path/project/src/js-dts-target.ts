/**
 * Type-checks code generated with the plugins' default target (js+dts),
 * in src/gen-js (see ../run.sh): the declarations resolve and type the
 * generated functions.
 */
import type { Client } from "@connectrpc/connect";
import type { MqttServer, ServiceSettings } from "@mqrpc/runtime";
import {
  createDemoServiceClient,
  DemoServiceMqtt,
  registerDemoService,
} from "./gen-js/demo/v1/demo_mqrpc.js";
import type { DemoService } from "./gen-js/demo/v1/demo_pb.js";

export const settings: ServiceSettings<typeof DemoService> = DemoServiceMqtt;
export const create: (
  transport: Parameters<typeof createDemoServiceClient>[0],
) => Client<typeof DemoService> = createDemoServiceClient;
export function register(server: MqttServer): MqttServer {
  return registerDemoService(server, { echo: (req) => ({ text: req.text }) });
}
