/**
 * A TCP listener standing in for the broker, for tests of what the CLI
 * refuses before any broker contact: it counts the connections it accepts
 * and never answers MQTT (or TLS), so a command that got past its checks
 * waits on it instead of exiting.
 */
import { createConnection, createServer, type Socket } from "node:net";
import type { TestContext } from "vitest";

/** A TCP listener standing in for the broker: it counts the connections it accepts. */
export async function countingBroker(context: TestContext) {
  const sockets = new Set<Socket>();
  const waiters = new Set<() => void>();
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => sockets.delete(socket));
    for (const wake of [...waiters]) wake();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  context.onTestFinished(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  /** Resolves once `n` connections were accepted in all. */
  const untilAccepted = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (accepted < n) return;
        waiters.delete(check);
        resolve();
      };
      waiters.add(check);
      check();
    });
  return {
    url: `mqtt://127.0.0.1:${port}`,
    /** The same listener as a TLS broker URL (it never answers the handshake). */
    tlsUrl: `mqtts://127.0.0.1:${port}`,
    untilAccepted,
    /**
     * The connections accepted so far, after every connection made before
     * this call was accepted: it connects once itself and waits for that
     * connection (the listener accepts in order), then leaves it out.
     */
    async settledCount(): Promise<number> {
      const before = accepted;
      const own = createConnection({ host: "127.0.0.1", port });
      own.on("error", () => {});
      await new Promise<void>((resolve) => own.once("connect", () => resolve()));
      await untilAccepted(before + 1);
      own.destroy();
      return accepted - 1;
    },
  };
}
