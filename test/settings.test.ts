/**
 * The generated per-method settings reach the wire: batching follows the
 * proto options at file, service and method level, in both directions.
 */
import { connectAsync } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { decodeFrame } from "../packages/runtime/src/wire/frame-codec.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forEachBroker } from "./brokers/targets.js";
import {
  createFileLevelServiceClient,
  createServiceLevelServiceClient,
  registerFileLevelService,
  registerServiceLevelService,
} from "./gen/mqrpc/test/v1/settings_mqrpc.js";
import {
  Closer,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

const N = 2000;

async function* ticks(count: number) {
  for (let n = 0; n < count; n++) yield { n };
}

forEachBroker((target) => {
  describe("generated settings on the wire", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    /**
     * Counts the publishes on `topicFilter` while `run` runs, up to and
     * including the call's last frame (`last`), which the observer may see
     * after `run` returned.
     */
    async function countPublishes(
      topicFilter: string,
      last: "end" | "halfClose",
      run: () => Promise<void>,
    ): Promise<number> {
      const observer = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
        c.endAsync(),
      );
      let count = 0;
      let sawLast = false;
      observer.on("message", (_topic, payload) => {
        count++;
        if (decodeFrame(payload).kind.case === last) sawLast = true;
      });
      await observer.subscribeAsync(topicFilter, { qos: 1 });
      await run();
      await expect.poll(() => sawLast).toBe(true);
      await observer.endAsync();
      return count;
    }

    async function setup() {
      const serverId = uniqueServerId("settings");
      const server = await startServer(closer, target, { serverId });
      const impl = {
        async *ticks(req: { count: number }) {
          yield* ticks(req.count);
        },
      };
      registerFileLevelService(server, impl);
      registerServiceLevelService(server, {
        ...impl,
        async *batchedTicks(req: { count: number }) {
          yield* ticks(req.count);
        },
        async upload(requests: AsyncIterable<{ n: number }>) {
          let count = 0;
          for await (const _ of requests) count++;
          return { count };
        },
      });
      const clientId = `settings-${Math.random().toString(36).slice(2, 10)}`;
      const transport = startTransport(closer, target, {
        serverId,
        mqtt: mqttOptions(target, clientId),
      });
      return { serverId, clientId, transport };
    }

    it("file-level batched_stream batches, a service-level override does not, a method override does", async () => {
      const { serverId, clientId, transport } = await setup();
      const replies = new TopicScheme().replyTopic(clientId, serverId);
      const fileLevel = createFileLevelServiceClient(transport);
      const serviceLevel = createServiceLevelServiceClient(transport);
      const drain = async (stream: AsyncIterable<unknown>) => {
        let n = 0;
        for await (const _ of stream) n++;
        expect(n).toBe(N);
      };
      const batchedByFile = await countPublishes(replies, "end", () =>
        drain(fileLevel.ticks({ count: N })),
      );
      const unbatchedByService = await countPublishes(replies, "end", () =>
        drain(serviceLevel.ticks({ count: N })),
      );
      const batchedByMethod = await countPublishes(replies, "end", () =>
        drain(serviceLevel.batchedTicks({ count: N })),
      );
      expect(unbatchedByService).toBeGreaterThanOrEqual(N);
      expect(batchedByFile * 20).toBeLessThan(unbatchedByService);
      expect(batchedByMethod * 20).toBeLessThan(unbatchedByService);
    });

    it("the client batches a client stream when the method says so, and options.settings overrides it", async () => {
      const { serverId, transport } = await setup();
      const requests = `${new TopicScheme().requestBase(serverId)}#`;
      const batched = createServiceLevelServiceClient(transport);
      const unbatched = createServiceLevelServiceClient(transport, {
        settings: { upload: { batchedStream: false } },
      });
      let res = { count: 0 };
      const batchedCount = await countPublishes(requests, "halfClose", async () => {
        res = await batched.upload(ticks(N));
      });
      expect(res.count).toBe(N);
      const unbatchedCount = await countPublishes(requests, "halfClose", async () => {
        res = await unbatched.upload(ticks(N));
      });
      expect(res.count).toBe(N);
      expect(unbatchedCount).toBeGreaterThanOrEqual(N);
      expect(batchedCount * 20).toBeLessThan(unbatchedCount);
    });
  });
});
