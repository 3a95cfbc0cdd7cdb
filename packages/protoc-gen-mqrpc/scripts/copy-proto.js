// Run by `npm pack` (prepack): copies the options proto from the repository's
// proto/ into this package's proto/, the buf module users point their
// buf.yaml at (node_modules/@mqrpc/protoc-gen-mqrpc/proto). The repository's
// copy is the source; this one is not committed.
import { copyFileSync, mkdirSync } from "node:fs";

const from = new URL("../../../proto/mqrpc/v1/options.proto", import.meta.url);
const to = new URL("../proto/mqrpc/v1/", import.meta.url);
mkdirSync(to, { recursive: true });
copyFileSync(from, new URL("options.proto", to));
