import { describe, expect, it } from "vitest";
import { DropLog, quoted } from "./drop-log.js";

describe("DropLog", () => {
  it("logs at most perSecond lines a second, then counts what it left out", () => {
    const lines: string[] = [];
    let now = 10_000;
    const log = new DropLog({ warn: (m) => lines.push(m) }, "srv", 3, () => now);
    for (let i = 0; i < 50; i++) log.drop(`frame ${i}`);
    expect(lines).toEqual(["srv: frame 0", "srv: frame 1", "srv: frame 2"]);
    now += 1000;
    log.drop("frame 50");
    expect(lines.slice(3)).toEqual([
      "srv: 47 more dropped frames not logged in the last second",
      "srv: frame 50",
    ]);
  });

  it("quotes names from the wire so they cannot forge log lines", () => {
    expect(quoted("mqrpc/s/x\nmqrpc server: fake line")).toBe(
      '"mqrpc/s/x\\nmqrpc server: fake line"',
    );
  });
});
