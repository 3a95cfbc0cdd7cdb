/**
 * One caller cancelling many calls at once must not end other callers'
 * calls: the gateway puts every call to an upstream on one HTTP/2
 * connection, and Node's HTTP/2 server (grpc-js and Connect-node
 * upstreams) closes a connection that resets about 1,000 streams in a
 * burst (rapid-reset protection). The gateway paces its resets
 * (reset-pacer.ts): beyond the budget, new calls go out on a new
 * connection, and the old one closes (cancelling what is left on it at
 * once) when its running calls are over (upstream-connection.ts).
 */
import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { MqttTransport } from "@mqrpc/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startTransport,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { createGrpcGateway } from "../src/index.js";
import { envelope, fakeUpstream } from "./support/fake-upstream.js";

const SERVICE = "storm.v1.Svc";
/** More than Node's burst of about 1,000 resets. */
const STORM = 1_200;

/** A raw call of one request message: its message count, or its error. */
async function call(
  transport: MqttTransport,
  method: string,
  signal?: AbortSignal,
): Promise<number | ConnectError> {
  try {
    const response = await transport.rawStream({
      service: SERVICE,
      method,
      message: (async function* () {
        yield new Uint8Array([8, 1]);
      })(),
      ...(signal !== undefined ? { signal } : {}),
    });
    let messages = 0;
    for await (const _ of response.message) messages++;
    return messages;
  } catch (e) {
    return ConnectError.from(e);
  }
}

/** Answers `stream` with one message and OK. */
function answer(stream: http2.ServerHttp2Stream): void {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(envelope(new Uint8Array([8, 1])));
}

forBrokersWhere(
  (t) => t.name === "mosquitto-5",
  (target) => {
    describe("a cancel storm through the gateway", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it(`${STORM} calls cancelled at once leave another caller's calls on the same upstream connection alive`, async () => {
        let held = 0;
        let cancelled = 0;
        let closedHeld = 0;
        let sessions = 0;
        const allHeld = deferred<void>();
        const burstSeen = deferred<void>();
        const allClosed = deferred<void>();
        const firstSessionClosed = deferred<void>();
        const bystanderArrived = deferred<http2.ServerHttp2Stream>();
        const url = await fakeUpstream(closer, (stream, headers) => {
          const session = stream.session;
          if (session !== undefined && !(session as { counted?: true }).counted) {
            (session as { counted?: true }).counted = true;
            if (++sessions === 1) session.once("close", () => firstSessionClosed.resolve());
          }
          stream.resume();
          const path = headers[":path"];
          if (path === `/${SERVICE}/Bystander`) {
            bystanderArrived.resolve(stream);
            return;
          }
          if (path === `/${SERVICE}/Now`) {
            stream.once("end", () => answer(stream));
            return;
          }
          // Hold: answered never; the caller cancels.
          stream.respond({ ":status": 200, "content-type": "application/grpc" });
          stream.on("close", () => {
            if (stream.rstCode === http2.constants.NGHTTP2_CANCEL && ++cancelled === 800) {
              burstSeen.resolve();
            }
            if (++closedHeld === STORM) allClosed.resolve();
          });
          if (++held === STORM) allHeld.resolve();
        });
        const serverId = uniqueServerId("storm");
        closer.add(
          await createGrpcGateway({
            mqtt: mqttOptions(target),
            serverId,
            upstreams: [{ url, services: [SERVICE] }],
            maxConcurrentCalls: 2 * STORM,
            maxCallsPerClient: 2 * STORM,
          }),
          (g) => g.close(),
        );
        const bystanders = startTransport(closer, target, { serverId });
        const storm = startTransport(closer, target, { serverId });

        const bystander = call(bystanders, "Bystander");
        const bystanderStream = await bystanderArrived.promise;
        const giveUp = new AbortController();
        const stormCalls = Array.from({ length: STORM }, () => call(storm, "Hold", giveUp.signal));
        await allHeld.promise;
        giveUp.abort();
        for (const outcome of await Promise.all(stormCalls)) {
          expect((outcome as ConnectError).code).toBe(Code.Canceled);
        }
        await burstSeen.promise;
        // Cancels beyond the budget waited: new calls go out on a new
        // connection, and the bystander's call runs on where it was.
        expect(await call(bystanders, "Now")).toBe(1);
        expect(sessions).toBe(2);
        answer(bystanderStream);
        expect(await bystander).toBe(1);
        // With the bystander's call over, the old connection carries only
        // calls waiting to be cancelled: it closes, which cancels them all.
        await firstSessionClosed.promise;
        await allClosed.promise;
        expect(held).toBe(STORM);
      });
    });
  },
);
