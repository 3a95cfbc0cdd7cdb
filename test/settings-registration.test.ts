/**
 * Generated settings reach the wire without being passed: loading a
 * generated `*_mqrpc.ts` module registers them (registerServiceSettings), so
 * `server.service(Service, impl)`, Connect's `createClient` and
 * `createMqttClient` batch as `register<Service>` and `create<Service>Client`
 * do, even though test/gen's `_pb.ts` files were generated with
 * `exclude_types: [mqrpc.v1]`, which strips the mqrpc options from the
 * embedded descriptors (issue 12: 2,000 stream messages took 2,065
 * publishes instead of 4).
 */
import { hasOption } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createMqttClient } from "@mqrpc/runtime";
import { file_options, method_options } from "@mqrpc/runtime/proto";
import { afterEach, describe, expect, it } from "vitest";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forEachBroker } from "./brokers/targets.js";
// Loaded for its registration only: nothing below uses its exports.
import "./gen/mqrpc/test/v1/settings_mqrpc.js";
import { FileLevelService, ServiceLevelService } from "./gen/mqrpc/test/v1/settings_pb.js";
import { Closer } from "./support/rpc-fixture.js";
import {
  fileLevelHandlers,
  serviceLevelHandlers,
  startSettingsPair,
  ticks,
} from "./support/settings-fixture.js";

const N = 2000;

async function drain(stream: AsyncIterable<unknown>): Promise<number> {
  let n = 0;
  for await (const _ of stream) n++;
  return n;
}

describe("test/gen descriptors", () => {
  it("carry no mqrpc options (exclude_types stripped them)", () => {
    expect(hasOption(FileLevelService.file, file_options)).toBe(false);
    expect(hasOption(ServiceLevelService.method.batchedTicks, method_options)).toBe(false);
  });
});

forEachBroker((target) => {
  describe("registered generated settings, with neither settings nor options passed", () => {
    const closer = new Closer();
    // The server's warnings go here instead of the console; none is
    // expected, through teardown included.
    const warnings: string[] = [];
    afterEach(async () => {
      await closer.closeAll();
      expect(warnings.splice(0)).toEqual([]);
    });

    const setup = () =>
      startSettingsPair(
        closer,
        target,
        "registered",
        (server) => {
          server.service(FileLevelService, fileLevelHandlers);
          server.service(ServiceLevelService, serviceLevelHandlers);
        },
        { logger: { warn: (message) => warnings.push(message) } },
      );

    it("server.service batches a server stream the generated settings batch, and not one they do not", async () => {
      const { serverId, clientId, transport, countPublishes } = await setup();
      const replies = new TopicScheme().replyTopic(clientId, serverId);
      let received = 0;
      const batched = await countPublishes(replies, "end", async () => {
        received = await drain(createClient(FileLevelService, transport).ticks({ count: N }));
      });
      expect(received).toBe(N);
      const unbatched = await countPublishes(replies, "end", async () => {
        received = await drain(createClient(ServiceLevelService, transport).ticks({ count: N }));
      });
      expect(received).toBe(N);
      expect(unbatched).toBeGreaterThanOrEqual(N);
      expect(batched * 20).toBeLessThan(unbatched);
    });

    it("createMqttClient and Connect's createClient batch a client stream", async () => {
      const { serverId, transport, countPublishes } = await setup();
      const requests = `${new TopicScheme().requestBase(serverId)}#`;
      for (const client of [
        createMqttClient(ServiceLevelService, transport),
        createClient(ServiceLevelService, transport),
      ]) {
        let res = { count: 0 };
        const publishes = await countPublishes(requests, "halfClose", async () => {
          res = await client.upload(ticks(N));
        });
        expect(res.count).toBe(N);
        expect(publishes * 20).toBeLessThan(N);
      }
    });
  });
});
