/** What `mqrpc list` does (its options: list.ts). */
import { Code, ConnectError } from "@connectrpc/connect";
import { logBrokerChanges } from "../broker-changes.js";
import { connectMqtt, endMqtt, resolveConnection } from "../connection.js";
import { EXIT_OK } from "../exit-codes.js";
import { warn, writeOut } from "../output.js";
import { type InstanceRecord, PresenceTable, type ServerRecord } from "../presence-table.js";
import { listenForStop, untilAborted } from "../stop-signal.js";
import type { ListFlags } from "./list.js";

/**
 * Prints the servers of the retained presence, then with `--watch` each
 * change (and the broker connection's) until SIGINT or SIGTERM; resolves
 * to the exit code.
 *
 * @throws ConnectError when the broker refuses the client or the presence subscription.
 */
export async function list(flags: ListFlags): Promise<number> {
  const connection = resolveConnection(flags);
  const stop = listenForStop();
  try {
    const client = await connectMqtt(connection, stop.signal).catch((e: unknown) => {
      if (stop.signal.aborted) return undefined;
      throw e;
    });
    if (client === undefined) return EXIT_OK;
    if (flags.watch) {
      // JSON lines on stdout are presence events only: the broker's go to stderr.
      logBrokerChanges(client, connection.url, flags.format === "json" ? warn : undefined);
    }
    try {
      const table = new PresenceTable(connection.topicPrefix);
      let settled = false;
      let lastMessage = Date.now();
      const events: InstanceRecord[] = [];
      client.on("message", (topic, payload, packet) => {
        const record = table.update(topic, payload, packet.retain);
        lastMessage = Date.now();
        if (record === undefined || !flags.watch) return;
        if (settled) printEvent(record, flags.format, packet.retain);
        else events.push(record);
      });
      const granted = await client.subscribeAsync(table.filter, { qos: 1 });
      if (granted.some((g) => g.qos === 128)) {
        throw new ConnectError(
          `the broker refused the subscription to ${table.filter} (no read access to presence)`,
          Code.PermissionDenied,
        );
      }
      // Retained announcements follow the SUBACK: wait for a quiet spell.
      lastMessage = Date.now();
      while (!stop.signal.aborted) {
        const wait = lastMessage + flags.settle - Date.now();
        if (wait <= 0) break;
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
      settled = true;
      const rows = table.snapshot().filter((r) => flags.all === true || r.state === "online");
      if (flags.watch && flags.format === "json") {
        const shown = new Set(rows.map((r) => r.serverId));
        for (const row of rows) for (const i of row.instances) printEvent(i, "json", i.retained);
        // Changes that arrived while settling, of servers the snapshot leaves out.
        for (const e of events) if (!shown.has(e.serverId)) printEvent(e, "json", e.retained);
      } else if (flags.format === "json") {
        await writeOut(`${JSON.stringify(rows.map(serverJson), null, 2)}\n`);
      } else {
        await writeOut(formatTable(rows));
      }
      if (flags.watch) await untilAborted(stop.signal);
    } finally {
      await endMqtt(client);
    }
    return EXIT_OK;
  } finally {
    stop.dispose();
  }
}

function serverJson(row: ServerRecord) {
  return {
    serverId: row.serverId,
    state: row.state,
    since: row.since?.toISOString() ?? null,
    instances: row.instances.map((i) => ({
      instance: i.instance,
      state: i.state,
      shared: i.shared,
      incarnation: i.incarnation,
      since: i.since?.toISOString() ?? null,
    })),
  };
}

function printEvent(record: InstanceRecord, format: "table" | "json", retained: boolean): void {
  const time = (record.since ?? new Date()).toISOString();
  if (format === "json") {
    process.stdout.write(
      `${JSON.stringify({
        time,
        serverId: record.serverId,
        instance: record.instance,
        state: record.state,
        shared: record.shared,
        incarnation: record.incarnation,
        retained,
      })}\n`,
    );
    return;
  }
  const shared = record.shared ? ", shared" : "";
  const old = retained ? ", retained" : "";
  process.stdout.write(
    `${time} ${record.state} ${record.serverId} (instance ${record.instance}, incarnation ${record.incarnation}${shared}${old})\n`,
  );
}

/** Columns padded to their widest cell, as `docker ps` and `kubectl get` print them. */
export function formatTable(rows: readonly ServerRecord[]): string {
  const cells = [
    ["SERVER ID", "STATE", "INSTANCES", "SINCE"],
    ...rows.map((r) => {
      const online = r.instances.filter((i) => i.state === "online").length;
      const shared = r.instances.some((i) => i.shared) ? " shared" : "";
      return [
        r.serverId,
        r.state,
        `${online}/${r.instances.length}${shared}`,
        r.since?.toISOString() ?? "-",
      ];
    }),
  ];
  const widths =
    cells[0]?.map((_, c) => Math.max(...cells.map((row) => (row[c] ?? "").length))) ?? [];
  return cells
    .map(
      (row) =>
        `${row
          .map((cell, c) => cell.padEnd(widths[c] ?? 0))
          .join("  ")
          .trimEnd()}\n`,
    )
    .join("");
}
