/**
 * How many header fields an HTTP/2 header block may carry on the gateway's
 * and the ingress's connections (Node's `maxHeaderListPairs`, pseudo-headers
 * included). Node's default, 128, refuses metadata gRPC peers accept (a few
 * hundred small entries fit grpc-go's and grpc-js's size limits) with a bare
 * ENHANCE_YOUR_CALM reset; the byte size of a block stays bounded by the
 * SETTINGS_MAX_HEADER_LIST_SIZE Node announces (64 KiB).
 */
export const MAX_HEADER_LIST_PAIRS = 2048;
