/**
 * A small static web server for the built dashboard (node:http): serves
 * the files of one directory, and `/config.json` with the broker URL the
 * page connects to. Loopback only by default.
 */
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { extname, join, normalize, sep } from "node:path";

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
};

/** Options of {@link serveDashboard}. */
export interface DashboardServerOptions {
  /** The directory of the built dashboard. */
  readonly root: string;
  /** The broker URL the page connects to (`ws://…` or `wss://…`), handed out as /config.json. */
  readonly brokerUrl: string;
  /** Interface to listen on; default 127.0.0.1. */
  readonly host?: string;
  /** Port; default 0 (a free one). */
  readonly port?: number;
}

/** A running dashboard server. */
export interface DashboardServer {
  /** `http://host:port/` */
  readonly url: string;
  close(): Promise<void>;
}

/** Serves the dashboard in `root` until closed. */
export async function serveDashboard(options: DashboardServerOptions): Promise<DashboardServer> {
  const root = normalize(options.root);
  const config = JSON.stringify({ brokerUrl: options.brokerUrl });
  const sockets = new Set<Socket>();
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname);
    if (path === "/config.json") {
      response.writeHead(200, {
        "content-type": CONTENT_TYPES[".json"],
        "cache-control": "no-store",
      });
      response.end(config);
      return;
    }
    const file = normalize(join(root, path === "/" ? "index.html" : path));
    const type = CONTENT_TYPES[extname(file)];
    if (!file.startsWith(root + sep) || type === undefined) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    readFile(file).then(
      (body) => {
        response.writeHead(200, { "content-type": type, "cache-control": "no-cache" });
        response.end(body);
      },
      () => response.writeHead(404, { "content-type": "text/plain" }).end("not found\n"),
    );
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
