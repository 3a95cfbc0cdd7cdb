/**
 * Free TCP ports on 127.0.0.1, found by binding port 0 and reading what the
 * kernel picked. The port is released before the caller binds it, so another
 * process can take it in between: the broker starters detect "address already
 * in use" and retry on fresh ports.
 */
import { createServer, type Server } from "node:net";

/** A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read, close). */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

/** `count` distinct free ports: all are held open at once, then released. */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => {
            const address = server.address();
            if (typeof address === "object" && address !== null) resolve(address.port);
            else reject(new Error(`unexpected server address ${String(address)}`));
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(
      servers.map(
        (s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve())),
      ),
    );
  }
}
