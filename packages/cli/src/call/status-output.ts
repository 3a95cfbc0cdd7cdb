/**
 * A failed call's status as `mqrpc call` prints it on stderr: Connect's
 * JSON error shape (what `buf curl` prints), with each detail's type, its
 * bytes in base64, and `debug`, the detail as JSON, when the schema knows
 * its type.
 */
import { fromBinary, type Registry, toJson } from "@bufbuild/protobuf";
import type { ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";

/** The JSON of a failed call's status. */
export function statusJson(error: ConnectError, registry: Registry | undefined): unknown {
  const details = error.details.map((detail) => {
    if ("desc" in detail) {
      return { type: detail.desc.typeName, debug: detail.value };
    }
    const out: Record<string, unknown> = {
      type: detail.type,
      value: Buffer.from(detail.value).toString("base64"),
    };
    const desc = registry?.getMessage(detail.type);
    if (desc !== undefined) {
      try {
        out.debug = toJson(desc, fromBinary(desc, detail.value), { registry });
      } catch {
        // Shown as bytes only.
      }
    } else if (detail.debug !== undefined) {
      out.debug = detail.debug;
    }
    return out;
  });
  return {
    code: codeToString(error.code),
    message: error.rawMessage,
    ...(details.length > 0 ? { details } : {}),
  };
}
