/**
 * The caller side of the user-path test: starts the embedded broker
 * (counting the publishes each client makes), runs src/server.ts in a
 * child process, and calls it: a unary call, then N stream messages of the
 * batched method through the generated client and through Connect's
 * createClient, and of the unbatched method as the control. Prints one
 * JSON line of counts; exits non-zero on a failed expectation.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { createClient } from "@connectrpc/connect";
import { createMqttTransport, startEmbeddedBroker } from "@mqrpc/runtime";
import { createDemoServiceClient } from "./gen/demo/v1/demo_mqrpc.js";
import { DemoService } from "./gen/demo/v1/demo_pb.js";

const N = 2000;
const CALLER = "user-path-caller";

function check(ok: boolean, what: string): void {
  if (!ok) {
    process.exitCode = 1;
    console.error(`user-path: FAILED: ${what}`);
  }
}

const published = new Map<string, number>();
const broker = await startEmbeddedBroker({
  authorizePublish: (client) => {
    published.set(client.clientId, (published.get(client.clientId) ?? 0) + 1);
    return true;
  },
});
/** Publishes so far by every client but the caller: the server's. */
const serverPublishes = () =>
  [...published].reduce((sum, [id, n]) => (id === CALLER ? sum : sum + n), 0);

const child = spawn(
  process.execPath,
  [new URL("./server.js", import.meta.url).pathname, broker.url, "demo-device"],
  { stdio: ["pipe", "pipe", "inherit"] },
);
const exited = once(child, "exit");
const lines = createInterface({ input: child.stdout });
const [first] = (await once(lines, "line")) as [string];
check(first === "ready", `the server process said ${JSON.stringify(first)}, not "ready"`);

const transport = createMqttTransport({
  mqtt: { url: broker.url, clientId: CALLER },
  serverId: "demo-device",
});
const generated = createDemoServiceClient(transport);
const plain = createClient(DemoService, transport);

const echo = await generated.echo({ text: "hello" }, { timeoutMs: 5000 });
check(echo.text === "hello", `echo answered ${JSON.stringify(echo.text)}`);

/** Messages received and the server's publishes during one stream call. */
async function stream(messages: AsyncIterable<{ n: number }>) {
  const before = serverPublishes();
  let received = 0;
  for await (const tick of messages) {
    check(tick.n === received, `tick ${tick.n} arrived as message ${received}`);
    received++;
  }
  return { received, publishes: serverPublishes() - before };
}

const counts = {
  generatedBatched: await stream(generated.ticks({ count: N }, { timeoutMs: 30_000 })),
  plainBatched: await stream(plain.ticks({ count: N }, { timeoutMs: 30_000 })),
  unbatched: await stream(generated.unbatchedTicks({ count: N }, { timeoutMs: 30_000 })),
};
console.log(JSON.stringify({ messages: N, ...counts }));
for (const [name, { received, publishes }] of Object.entries(counts)) {
  check(received === N, `${name}: received ${received} of ${N} messages`);
  if (name === "unbatched") {
    check(publishes >= N, `${name}: ${publishes} publishes for ${N} unbatched messages`);
  } else {
    // Batches flush on size, linger, end of stream and when the producer
    // pauses: a handful of publishes, far from one per message.
    check(publishes <= N / 20, `${name}: ${publishes} publishes for ${N} batched messages`);
  }
}

await transport.close();
child.stdin.end();
const [code] = (await exited) as [number | null];
check(code === 0, `the server process exited with ${code}`);
await broker.close();
