/** What `mqrpc describe` does (its options: describe.ts). */
import { writeFile } from "node:fs/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createMqttTransport, type MqttTransport } from "@mqrpc/runtime";
import type { MqttClient } from "mqtt";
import { connectMqtt, endMqtt, resolveConnection } from "../connection.js";
import { CliError, EXIT_OK } from "../exit-codes.js";
import { writeOut } from "../output.js";
import { describeJson, servicesText, symbolText } from "../schema/describe-text.js";
import { obtainSchema } from "../schema/obtain-schema.js";
import { findSymbol, REFLECTION_SERVICES } from "../schema/schema.js";
import { needsReflection } from "../schema/schema-options.js";
import { listenForStop } from "../stop-signal.js";
import type { DescribeFlags } from "./describe.js";

/**
 * Gets the schema (reflection or `--schema`) and prints the services or one
 * symbol; resolves to the exit code.
 *
 * @throws CliError for an unknown symbol or unusable `--schema`; ConnectError
 *   when the broker or reflection fails.
 */
export async function describe(
  serverId: string,
  symbolName: string | undefined,
  flags: DescribeFlags,
): Promise<number> {
  const stop = listenForStop();
  let client: MqttClient | undefined;
  let transport: MqttTransport | undefined;
  try {
    if (needsReflection(flags)) {
      const connection = resolveConnection(flags);
      client = await connectMqtt(connection, stop.signal);
      transport = createMqttTransport({
        mqtt: client,
        serverId,
        topicPrefix: connection.topicPrefix,
      });
    }
    const obtained = await obtainSchema(flags, transport, {
      timeoutMs: flags.timeout,
      signal: stop.signal,
      includeReflection: flags.includeReflection === true,
    });
    // Reflection leaves its own services out of the list; so does a --schema listing.
    const schema =
      flags.includeReflection === true
        ? obtained
        : {
            ...obtained,
            services: obtained.services.filter((s) => !REFLECTION_SERVICES.has(s.typeName)),
          };
    const symbol = symbolName === undefined ? undefined : findSymbol(schema, symbolName);
    if (symbolName !== undefined && symbol === undefined) {
      throw new CliError(
        `no symbol ${symbolName} in the schema (from ${schema.source}); services: ${
          schema.services.map((s) => s.typeName).join(", ") || "none"
        }`,
      );
    }
    if (flags.descriptorSetOut !== undefined) {
      const set = create(FileDescriptorSetSchema, { file: [...schema.files] });
      await writeFile(flags.descriptorSetOut, toBinary(FileDescriptorSetSchema, set)).catch(
        (e: unknown) => {
          throw new CliError(
            `--descriptor-set-out: cannot write ${flags.descriptorSetOut}: ${(e as Error).message}`,
          );
        },
      );
    }
    if (flags.format === "json") {
      await writeOut(`${JSON.stringify(describeJson(schema, symbol), null, 2)}\n`);
    } else {
      await writeOut(symbol === undefined ? servicesText(schema) : symbolText(symbol));
    }
    return EXIT_OK;
  } catch (e) {
    if (stop.received() !== undefined) return EXIT_OK;
    throw e;
  } finally {
    await transport?.close();
    if (client !== undefined) await endMqtt(client);
    stop.dispose();
  }
}
