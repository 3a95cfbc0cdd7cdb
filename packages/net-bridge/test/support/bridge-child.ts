/**
 * One end of a bridged connection in a child process, so that a test can
 * kill it with SIGKILL (no DISCONNECT, no reset sent: what a crash does).
 * Started by bridge-process.ts as `node --import tsx bridge-child.ts
 * <config>`. `listen` serves an echo on a virtual port; `connect` opens a
 * connection, sends "hello" and keeps it open. Events are JSON lines on
 * stdout; the end of stdin (the parent is gone) exits at once.
 */
import { connectMqtt, listenMqtt } from "../../src/index.js";

/** What the parent passes as the one argument, JSON-encoded. */
export interface BridgeChildConfig {
  readonly role: "listen" | "connect";
  readonly url: string;
  readonly protocolVersion: 4 | 5;
  readonly serverId: string;
  readonly port: number;
  readonly clientId?: string;
  readonly heartbeatMs?: number;
}

/** One line of the child's stdout. */
export type BridgeChildEvent =
  | { readonly event: "ready" }
  | { readonly event: "connection" }
  | { readonly event: "connected" }
  | { readonly event: "error"; readonly code: string };

function emit(e: BridgeChildEvent): void {
  process.stdout.write(`${JSON.stringify(e)}\n`);
}

process.stdin.resume();
process.stdin.on("end", () => process.exit(0));

const config = JSON.parse(process.argv[2] ?? "{}") as BridgeChildConfig;
const mqtt = {
  url: config.url,
  protocolVersion: config.protocolVersion,
  reconnectPeriod: 200,
  ...(config.clientId !== undefined ? { clientId: config.clientId } : {}),
};

if (config.role === "listen") {
  const listener = await listenMqtt({ mqtt, serverId: config.serverId, port: config.port });
  listener.on("connection", (socket) => {
    emit({ event: "connection" });
    socket.on("error", (e: Error & { code?: string }) =>
      emit({ event: "error", code: e.code ?? "" }),
    );
    socket.pipe(socket);
  });
  emit({ event: "ready" });
} else {
  const socket = connectMqtt({
    mqtt,
    serverId: config.serverId,
    port: config.port,
    ...(config.heartbeatMs !== undefined ? { heartbeatMs: config.heartbeatMs } : {}),
  });
  socket.on("error", (e: Error & { code?: string }) =>
    emit({ event: "error", code: e.code ?? "" }),
  );
  socket.on("connect", () => emit({ event: "connected" }));
  socket.write("hello");
  socket.resume();
}
