/**
 * @mqrpc/net-bridge: flow-controlled byte streams over MQTT, so that
 * unmodified gRPC, HTTP and TCP programs talk through a broker. A
 * connection is an mqrpc bidi call of `mqrpc.v1.Tunnel/Port{port}`
 * (docs/PROTOCOL.md section 23): ordered, exactly once, flow-controlled,
 * reset with an error the application sees. Node.js only.
 */

export type { ConnectMqttOptions } from "./connect.js";
export { connectMqtt } from "./connect.js";
export type { ListenMqttOptions, MqttListener } from "./listener.js";
export { listenMqtt } from "./listener.js";
export { MqttSocket } from "./mqtt-socket.js";
export type {
  ExposedPort,
  ExposePortOptions,
  ForwardPortOptions,
  PortForward,
} from "./port-forwarding.js";
export { exposePort, forwardPort } from "./port-forwarding.js";
export type { MqttSocketErrorCode } from "./socket-error.js";
export { MqttSocketError } from "./socket-error.js";
export { portMethod, TUNNEL_SERVICE } from "./tunnel-message.js";
