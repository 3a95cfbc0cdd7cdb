/** Types for the untyped mqtt-json-rpc package, as far as the benchmark uses it. */
declare module "mqtt-json-rpc" {
  import type { MqttClient } from "mqtt";
  export default class MqttJsonRpc {
    constructor(mqtt: MqttClient, encoding?: "json" | "msgpack" | "cbor");
    register(method: string, callback: (...args: never[]) => unknown): Promise<void>;
    call(method: string, ...params: unknown[]): Promise<unknown>;
  }
}
