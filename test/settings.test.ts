/**
 * The generated per-method settings reach the wire: batching follows the
 * proto options at file, service and method level, in both directions.
 */
import { afterEach, describe, expect, it } from "vitest";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forEachBroker } from "./brokers/targets.js";
import {
  createFileLevelServiceClient,
  createServiceLevelServiceClient,
  registerFileLevelService,
  registerServiceLevelService,
} from "./gen/mqrpc/test/v1/settings_mqrpc.js";
import { Closer } from "./support/rpc-fixture.js";
import {
  fileLevelHandlers,
  serviceLevelHandlers,
  startSettingsPair,
  ticks,
} from "./support/settings-fixture.js";

const N = 2000;

forEachBroker((target) => {
  describe("generated settings on the wire", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    const setup = () =>
      startSettingsPair(closer, target, "settings", (server) => {
        registerFileLevelService(server, fileLevelHandlers);
        registerServiceLevelService(server, serviceLevelHandlers);
      });

    it("file-level batched_stream batches, a service-level override does not, a method override does", async () => {
      const { serverId, clientId, transport, countPublishes } = await setup();
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
      const { serverId, transport, countPublishes } = await setup();
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
