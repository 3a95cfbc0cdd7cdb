import { afterEach, describe, expect, it, vi } from "vitest";
import { serverEventLogger } from "./output.js";

describe("serverEventLogger", () => {
  afterEach(() => vi.restoreAllMocks());

  it("writes a server's warnings as event lines, but not its broker notes the command reports itself", () => {
    const lines: string[] = [];
    vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
      lines.push(String(chunk));
      return true;
    });
    const logger = serverEventLogger();
    logger.warn(
      'mqrpc server "g": cannot reach the MQTT broker at mqtt://h:1 (ECONNREFUSED); waiting',
    );
    logger.info('mqrpc server "g": reached the MQTT broker at mqtt://h:1');
    logger.warn('mqrpc server "g": dropped a malformed frame');
    logger.info("gateway: upstream http://u is reachable again");
    expect(lines.map((l) => l.replace(/^\S+ /, ""))).toEqual([
      'warn mqrpc server "g": dropped a malformed frame\n',
      "info gateway: upstream http://u is reachable again\n",
    ]);
  });
});
