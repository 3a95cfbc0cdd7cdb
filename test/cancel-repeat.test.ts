/**
 * A Cancel the broker drops (as Mosquitto drops QoS 1 messages past a
 * subscriber's max_queued_messages in a burst) still reaches the server:
 * the client sends it once more a second later (PROTOCOL.md 13), instead
 * of leaving the handler running until the caller's heartbeat silence
 * ends it (3 intervals and a second: 31 s by default).
 */
import { createServer, type Server, type Socket } from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport } from "@mqrpc/runtime";
import { Aedes, type AedesPublishPacket, type Client } from "aedes";
import { afterEach, describe, expect, it } from "vitest";
import { decodeCallFrames } from "../packages/runtime/src/wire/frame-codec.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { Closer, deferred, uniqueServerId } from "./support/rpc-fixture.js";

/** An Aedes broker on a free port that drops the first `drops.cancels` deliveries carrying a Cancel. */
async function brokerDroppingCancels(closer: Closer) {
  const drops = { cancels: 1, dropped: 0 };
  const aedes = await Aedes.createBroker({
    authorizeForward: (_client: Client, packet: AedesPublishPacket) => {
      if (drops.cancels === 0) return packet;
      let frames: ReturnType<typeof decodeCallFrames>;
      try {
        frames = decodeCallFrames(packet.payload as Buffer);
      } catch {
        return packet;
      }
      if (!frames.some((f) => f.kind.case === "cancel")) return packet;
      drops.cancels--;
      drops.dropped++;
      return null;
    },
  });
  const server: Server = createServer(aedes.handle);
  const sockets = new Set<Socket>();
  server.on("connection", (socket) => sockets.add(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closer.add(server, (s) => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => aedes.close(() => s.close(() => resolve())));
  });
  const port = (server.address() as { port: number }).port;
  return { url: `mqtt://127.0.0.1:${port}`, drops };
}

describe("a Cancel the broker drops", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  it("is sent again, and the server's handler ends within seconds, not at the heartbeat timeout", async () => {
    const { url, drops } = await brokerDroppingCancels(closer);
    const serverId = uniqueServerId("cancel");
    const started = deferred<void>();
    const aborted = deferred<unknown>();
    const server = await createMqttServer({
      mqtt: url,
      serverId,
      routes: (s) =>
        s.service(TestService, {
          async *streamingOutputCall(_req, ctx) {
            started.resolve();
            await new Promise<void>((resolve) => {
              ctx.signal.addEventListener(
                "abort",
                () => {
                  aborted.resolve(ctx.signal.reason);
                  resolve();
                },
                { once: true },
              );
            });
            yield {};
          },
        }),
    });
    closer.add(server, (s) => s.close());
    const transport = closer.add(createMqttTransport({ mqtt: url, serverId }), (t) => t.close());
    const client = createClient(TestService, transport);
    const giveUp = new AbortController();
    const call = (async () => {
      for await (const _ of client.streamingOutputCall({}, { signal: giveUp.signal })) {
        // Nothing comes.
      }
    })();
    await started.promise;
    giveUp.abort();
    await expect(call).rejects.toMatchObject({ code: Code.Canceled });
    const reason = ConnectError.from(await aborted.promise);
    expect(reason.code).toBe(Code.Canceled);
    expect(drops.dropped).toBe(1);
  });
});
