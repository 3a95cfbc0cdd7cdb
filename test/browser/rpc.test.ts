/**
 * mqrpc's client in a real browser: the bundled client runs in headless
 * Chromium and calls the example device, served from Node, through MQTT on
 * WebSockets: the embedded broker's WebSocket listener (Aedes, MQTT 3.1.1)
 * and Mosquitto's `protocol websockets` listener (MQTT 5, with a 100 kB
 * `max_packet_size`, so large messages must be chunked to pass).
 *
 * Every RPC kind, an error with details, a deadline, a cancel from an
 * AbortController, a 4 MiB upload in chunks, and a WebSocket dropped
 * mid-stream (reconnect and completion) or gone for good (a clear status),
 * through the fault proxy between page and broker. One Chromium for the
 * file and one page, loaded once.
 */
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  createMqttServer,
  DEFAULT_MAX_PUBLISH_BYTES,
  type MqttServer,
  startEmbeddedBroker,
} from "@mqrpc/runtime";
import type { Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { registerDeviceService } from "../../packages/example-device/src/gen/mqrpc/example/device/v1/device_mqrpc.js";
import { mosquittoAvailable, startMosquitto } from "../brokers/mosquitto.js";
import { kindSelected } from "../brokers/selection.js";
import { FaultProxy } from "../support/fault-proxy.js";
import { uniqueServerId } from "../support/rpc-fixture.js";
import { bundleForBrowser } from "./bundle.js";
import {
  chromiumForSuite,
  type HeadlessChromium,
  launchChromium,
  type TrackedPage,
} from "./chromium.js";
import type * as RpcPage from "./page/rpc-page.js";
import { type PageServer, servePages } from "./page-server.js";
import { browserTestDevice, HandlerAborts } from "./test-device.js";

type PageApi = typeof RpcPage;
type PageFunction = {
  [K in keyof PageApi]: PageApi[K] extends (...args: never[]) => unknown ? K : never;
}[keyof PageApi];

/** Runs `rpcPage[name](...args)` in the page and returns its result. */
function inPage<K extends PageFunction>(
  page: Page,
  name: K,
  ...args: Parameters<PageApi[K]>
): Promise<Awaited<ReturnType<PageApi[K]>>> {
  return page.evaluate(
    ([fn, fnArgs]) =>
      (globalThis as unknown as { rpcPage: Record<string, (...a: unknown[]) => unknown> }).rpcPage[
        fn
      ]!(...fnArgs),
    [name, args] as const,
  ) as Promise<Awaited<ReturnType<PageApi[K]>>>;
}

/** Resolves once the page's stream `name` has received `count` messages. */
async function untilProgress(page: Page, name: string, count: number): Promise<void> {
  await page.waitForFunction(
    ([n, c]) =>
      ((globalThis as unknown as { rpcPage: { progress: Record<string, number> } }).rpcPage
        .progress[n] ?? 0) >= c,
    [name, count] as const,
  );
}

/** A broker with a WebSocket listener, as one describe block uses it. */
interface WsBroker {
  /** For the device (Node, TCP). */
  readonly url: string;
  /** For the page. */
  readonly wsUrl: string;
  readonly protocolVersion: 4 | 5;
  /** The largest PUBLISH payload the broker saw, where it can tell. */
  readonly largestPublish: (() => number) | undefined;
  stop(): Promise<void>;
}

const brokers: Array<{ name: string; start: () => Promise<WsBroker> }> = [];
if (kindSelected("aedes")) {
  brokers.push({
    name: "the embedded broker's WebSocket listener (Aedes, MQTT 3.1.1)",
    async start() {
      let largest = 0;
      const broker = await startEmbeddedBroker({
        websocket: true,
        authorizePublish: (_client, publish) => {
          largest = Math.max(largest, publish.payload.byteLength);
          return true;
        },
      });
      return {
        url: broker.url,
        wsUrl: broker.wsUrl!,
        protocolVersion: 4,
        largestPublish: () => largest,
        stop: () => broker.close(),
      };
    },
  });
}
if (mosquittoAvailable()) {
  brokers.push({
    name: "Mosquitto's websockets listener (MQTT 5)",
    async start() {
      const broker = await startMosquitto({
        websockets: true,
        extraConfig: "max_packet_size 100000",
      });
      return {
        url: broker.url,
        wsUrl: broker.wsUrl!,
        protocolVersion: 5,
        largestPublish: undefined,
        stop: () => broker.stop(),
      };
    },
  });
}

const chromiumBinary = chromiumForSuite();

if (chromiumBinary !== undefined) {
  describe("mqrpc in Chromium", () => {
    let chromium: HeadlessChromium;
    let pages: PageServer;
    let tracked: TrackedPage;
    let page: Page;

    beforeAll(async () => {
      const bundle = await bundleForBrowser(
        fileURLToPath(new URL("page/rpc-page.ts", import.meta.url)),
        {
          globalName: "rpcPage",
        },
      );
      pages = await servePages(
        new Map([
          [
            "/index.html",
            {
              type: "text/html",
              body: '<!doctype html><meta charset="utf-8"><title>mqrpc browser tests</title><script src="/rpc-page.js"></script>',
            },
          ],
          ["/rpc-page.js", { type: "text/javascript", body: bundle.code }],
        ]),
      );
      chromium = await launchChromium(chromiumBinary);
      tracked = await chromium.newPage();
      page = tracked.page;
      await page.goto(pages.origin);
    });

    afterAll(async () => {
      await chromium?.close();
      await pages?.close();
    });

    afterEach(() => {
      // An uncaught error or unhandled rejection in the page fails the test.
      expect(tracked.errors.splice(0)).toEqual([]);
    });

    it("the page is a plain browser page: no Node globals, a secure context", async () => {
      expect(await inPage(page, "environment")).toEqual({
        process: "undefined",
        buffer: "undefined",
        secureContext: true,
        webSocket: "function",
      });
    });

    for (const { name, start } of brokers) {
      describe(`over ${name}`, () => {
        let broker: WsBroker;
        let server: MqttServer;
        let target: RpcPage.Target;
        const aborts = new HandlerAborts();
        const serverId = uniqueServerId("browser-device");

        beforeAll(async () => {
          broker = await start();
          server = await createMqttServer({
            mqtt: { url: broker.url, protocolVersion: broker.protocolVersion },
            serverId,
            // The caller of the "gone for good" test never comes back to
            // acknowledge its call's End, and close() would give that call
            // the default 5 s to finish although its handler is done.
            shutdownTimeoutMs: 200,
            routes: (s) => registerDeviceService(s, browserTestDevice(serverId, aborts)),
          });
          target = { url: broker.wsUrl, serverId, protocolVersion: broker.protocolVersion };
        });

        afterAll(async () => {
          await server?.close();
          await broker?.stop();
        });

        it("unary: GetInfo and SetLed", async () => {
          expect(await inPage(page, "unary", target)).toEqual({
            deviceId: serverId,
            model: "mqrpc-sim-1",
            led: { brightness: 42, color: "teal" },
          });
        });

        it("server streaming: 200 telemetry samples, batched, in order", async () => {
          expect(await inPage(page, "serverStream", target, 200)).toEqual({
            received: 200,
            ordered: true,
          });
        });

        it("client streaming: a 4 MiB upload in 1 MiB messages, each chunked", async () => {
          const result = await inPage(page, "upload", target, 4 * 1024 * 1024, 1024 * 1024);
          expect(result).toEqual({
            bytesReceived: 4 * 1024 * 1024,
            sha256Matches: true,
            piecesTaken: 4,
            slot: "b",
          });
          // A 1 MiB message crossed the broker only in pieces: Aedes saw no
          // publish over the default limit; Mosquitto refuses any over
          // max_packet_size (100 kB) and would have closed the connection.
          const largest = broker.largestPublish?.();
          if (largest !== undefined) {
            expect(largest).toBeGreaterThan(0);
            expect(largest).toBeLessThanOrEqual(DEFAULT_MAX_PUBLISH_BYTES);
          }
        });

        it("bidi streaming: the device console", async () => {
          expect(await inPage(page, "bidi", target, ["echo hi from chromium", "led"])).toEqual([
            `${serverId} console ready`,
            "hi from chromium",
            expect.stringMatching(/^led \d+% \w+$/),
          ]);
        });

        it("an error with code, message, details and trailer", async () => {
          expect(await inPage(page, "errorWithDetails", target)).toEqual({
            code: "InvalidArgument",
            message: "brightness must be 0..100, got 150",
            details: [{ brightness: 100, color: "red" }],
            maxBrightness: "100",
          });
        });

        it("a deadline: DEADLINE_EXCEEDED in the page, the handler's signal fired", async () => {
          const call = `${serverId}-deadline`;
          const result = await inPage(page, "deadline", target, call, 500);
          expect(result.failure?.code).toBe("DeadlineExceeded");
          // The first sample comes at once, the next one only after a second.
          expect(result.received).toBeLessThanOrEqual(1);
          expect(ConnectError.from(await aborts.of(call)).code).toBe(Code.DeadlineExceeded);
        });

        it("a cancel from an AbortController: CANCELED in the page and on the device", async () => {
          const call = `${serverId}-cancel`;
          const result = await inPage(page, "cancel", target, call, 3);
          expect(result).toEqual({
            received: 3,
            failure: expect.objectContaining({ code: "Canceled" }),
          });
          expect(ConnectError.from(await aborts.of(call)).code).toBe(Code.Canceled);
        });

        it("a WebSocket dropped mid-stream: reconnects and the stream completes", async () => {
          const proxy = await FaultProxy.start(broker.wsUrl);
          try {
            const name = `${serverId}-drop`;
            const streamed = inPage(
              page,
              "watchedStream",
              {
                ...target,
                url: `ws://127.0.0.1:${proxy.port}/mqtt`,
                clientId: `browser-drop-${process.pid}`,
              },
              name,
              { count: 50, intervalMs: 25, timeoutMs: 20_000 },
            );
            // A second of stream left after the drop, so it happens mid-stream.
            await untilProgress(page, name, 10);
            proxy.resetAll();
            expect(await streamed).toEqual({ received: 50, ordered: true, failure: undefined });
            expect(proxy.connections).toBeGreaterThanOrEqual(2);
          } finally {
            await proxy.close();
          }
        });

        it("a WebSocket gone for good mid-stream: the call ends with a clear status", async () => {
          const proxy = await FaultProxy.start(broker.wsUrl);
          try {
            const name = `${serverId}-outage`;
            const streamed = inPage(
              page,
              "watchedStream",
              {
                ...target,
                url: `ws://127.0.0.1:${proxy.port}/mqtt`,
                clientId: `browser-outage-${process.pid}`,
              },
              name,
              { count: 0, intervalMs: 20, timeoutMs: 1500 },
            );
            await untilProgress(page, name, 3);
            proxy.refuse(true);
            proxy.resetAll();
            const result = await streamed;
            expect(result.received).toBeGreaterThanOrEqual(3);
            expect(["DeadlineExceeded", "Unavailable"]).toContain(result.failure?.code);
          } finally {
            await proxy.close();
          }
        });
      });
    }
  });
}
