/**
 * The device side of the user-path test, in its own process: serves
 * DemoService on the broker at argv[2] as server id argv[3], registered the
 * plain way (`server.service(Desc, impl)`), prints "ready" once it is
 * announced, and closes when its standard input ends.
 */
import { createMqttServer } from "@mqrpc/runtime";
import { DemoService } from "./gen/demo/v1/demo_pb.js";

const [url, serverId] = process.argv.slice(2);
if (url === undefined || serverId === undefined) {
  throw new Error("usage: node dist/server.js <broker url> <server id>");
}

async function* ticks(count: number) {
  for (let n = 0; n < count; n++) yield { n };
}

const server = await createMqttServer({
  mqtt: url,
  serverId,
  routes: (s) =>
    s.service(DemoService, {
      echo: (req) => ({ text: req.text }),
      ticks: (req) => ticks(req.count),
      unbatchedTicks: (req) => ticks(req.count),
    }),
});
process.stdout.write("ready\n");
process.stdin.resume();
process.stdin.on("end", () => {
  void server.close().then(() => process.exit(0));
});
