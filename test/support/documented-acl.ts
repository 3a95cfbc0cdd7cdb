/**
 * The documented Mosquitto ACL (docs/mosquitto-acl.conf) as the ACL tests
 * use it, on Mosquitto (acl.test.ts) and on the embedded broker
 * (embedded-auth.test.ts), the accounts it names, and the frame those
 * tests try to get past it.
 */
import { readFileSync } from "node:fs";
import { encodeFrame } from "../../packages/runtime/src/wire/frame-codec.js";

const shippedAcl = readFileSync(new URL("../../docs/mosquitto-acl.conf", import.meta.url), "utf8");

/** The shipped ACL with a second server's block (dev-43), made from dev-42's as the file says. */
export const documentedAcl = `${shippedAcl}\n${shippedAcl
  .slice(shippedAcl.indexOf("user dev-42"))
  .replaceAll("dev-42", "dev-43")}`;

/** {@link documentedAcl} with callers allowed to call TestService's EmptyCall on dev-42 only. */
export const emptyCallOnlyAcl = documentedAcl
  .replace(
    "pattern write mqrpc/s/+/+/+/%c\n",
    "pattern write mqrpc/s/dev-42/mqrpc~interop~v1~TestService/EmptyCall/%c\n",
  )
  .replace("pattern write mqrpc/s/+/+/+/%c/+\n", "");

/** The accounts, username to password: two servers (dev-42, dev-43) and two callers. */
export const users = {
  "dev-42": "server-secret",
  "dev-43": "other-server-secret",
  alice: "alice-secret",
  bob: "bob-secret",
};

/** A username of {@link users}. */
export type Account = keyof typeof users;

/** A forged End frame (PERMISSION_DENIED, "forged") for call `callId`: the most damaging thing to inject into a call. */
export const forgedEnd = (callId: number) =>
  Buffer.from(
    encodeFrame({
      callId,
      seq: 0,
      kind: { case: "end", value: { status: { code: 7, message: "forged" } } },
    }),
  );
