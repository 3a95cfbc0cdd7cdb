/**
 * An mqrpc server in a child process, so that a test can kill it with
 * SIGKILL: no DISCONNECT, no OFFLINE announcement, no cleanup, exactly what
 * a crashed device does (the broker publishes its last will). Started by
 * child-server-process.ts as `node --import tsx child-server.ts <config>`.
 *
 * It serves TestService.UnaryCall: a request with `responseSize` 0 answers
 * at once (a probe); any other runs for `handlerMs` (or until cancelled)
 * and answers with `responseSize` bytes. Every start, end and cancellation
 * is a JSON line on stdout (synchronous on a pipe, so a line written
 * before a SIGKILL is never lost). Stdin: `start` starts a deferred server
 * (config `deferred`), `close` closes the server gracefully; the end of
 * stdin (the parent is gone) exits at once.
 */
import { ConnectError } from "@connectrpc/connect";
import { createMqttServer } from "../../packages/runtime/src/index.js";
import { TestService } from "../gen/mqrpc/interop/v1/test_pb.js";

/** What the parent passes as the one argument, JSON-encoded. */
export interface ChildServerConfig {
  readonly url: string;
  readonly protocolVersion: 4 | 5;
  readonly serverId: string;
  /** The MQTT client id (and so the instance id); generated when absent. */
  readonly clientId?: string;
  /** How long a non-probe UnaryCall runs, in ms. */
  readonly handlerMs: number;
  readonly shutdownTimeoutMs?: number;
  /** Serve as a replica through a shared subscription (`shared: true`). */
  readonly shared?: boolean;
  /**
   * Load, say `loaded`, and wait for `start` on stdin before connecting: a
   * test spawns a replacement early and starts it when its subject needs it,
   * without paying the process start then.
   */
  readonly deferred?: boolean;
}

/** One line of the child's stdout. */
export type ChildEvent =
  | { readonly event: "loaded"; readonly pid: number }
  | { readonly event: "ready"; readonly instanceId: string; readonly pid: number }
  | { readonly event: "started"; readonly id: number; readonly pid: number }
  | { readonly event: "finished"; readonly id: number; readonly pid: number }
  | { readonly event: "aborted"; readonly id: number; readonly pid: number; readonly code: number }
  | { readonly event: "warn"; readonly message: string }
  | { readonly event: "taken-over"; readonly message: string }
  | { readonly event: "closed" };

function emit(e: ChildEvent): void {
  process.stdout.write(`${JSON.stringify(e)}\n`);
}

// Stdin carries commands, one a line; its end (the parent is gone) exits at once.
let input = "";
const lineWaiters = new Map<string, () => void>();
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk: string) => {
  input += chunk;
  for (const [line, wake] of lineWaiters) {
    if (input.includes(`${line}\n`)) {
      lineWaiters.delete(line);
      wake();
    }
  }
});
process.stdin.on("end", () => process.exit(0));

/** Resolves once stdin has carried `line`. */
function untilLine(line: string): Promise<void> {
  if (input.includes(`${line}\n`)) return Promise.resolve();
  return new Promise((resolve) => lineWaiters.set(line, resolve));
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "{}") as ChildServerConfig;
  if (config.deferred === true) {
    emit({ event: "loaded", pid: process.pid });
    await untilLine("start");
  }
  const server = await createMqttServer({
    serverId: config.serverId,
    mqtt: {
      url: config.url,
      protocolVersion: config.protocolVersion,
      reconnectPeriod: 200,
      ...(config.clientId !== undefined ? { clientId: config.clientId } : {}),
    },
    shutdownTimeoutMs: config.shutdownTimeoutMs ?? 0,
    ...(config.shared !== undefined ? { shared: config.shared } : {}),
    logger: { warn: (message) => emit({ event: "warn", message }) },
  });
  server.service(TestService, {
    async unaryCall(req, ctx) {
      const id = req.responseSize;
      if (id === 0) return {};
      emit({ event: "started", id, pid: process.pid });
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(resolve, config.handlerMs);
          ctx.signal.addEventListener("abort", () => {
            clearTimeout(timer);
            reject(ctx.signal.reason);
          });
        });
      } catch (e) {
        emit({ event: "aborted", id, pid: process.pid, code: ConnectError.from(e).code });
        throw e;
      }
      emit({ event: "finished", id, pid: process.pid });
      return { payload: { body: new Uint8Array(id) } };
    },
    emptyCall() {
      return {};
    },
  });
  void server.takenOver().then((reason) => emit({ event: "taken-over", message: reason.message }));
  await server.announced();
  emit({ event: "ready", instanceId: server.instanceId, pid: process.pid });
  await untilLine("close");
  await server.close();
  emit({ event: "closed" });
  process.exit(0);
}

main().catch((e: unknown) => {
  process.stderr.write(`child server failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
