/**
 * Serves a few in-memory files to the browser on a free loopback port, so
 * that test pages load from an http://127.0.0.1 origin (a secure context,
 * as `crypto.subtle` needs) like a real web app, not from about:blank.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** A running page server. */
export interface PageServer {
  /** `http://127.0.0.1:<port>` */
  readonly origin: string;
  /** Stops listening and ends open connections. */
  close(): Promise<void>;
}

/** One file: its body and content type. */
export interface PageFile {
  readonly body: string | Uint8Array;
  readonly type: string;
}

/** Serves `files` (path → file, e.g. `/index.html`) on a free port; `/` is `/index.html`. */
export async function servePages(files: ReadonlyMap<string, PageFile>): Promise<PageServer> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    const file = files.get(path === "/" ? "/index.html" : path);
    if (file === undefined) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    response.writeHead(200, { "content-type": file.type, "cache-control": "no-store" });
    response.end(file.body);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
