// NBD client: a BlockSource and a BlockSink over an NBD export (qemu-nbd, nbdkit, a VMware
// or oVirt NBD endpoint, Ferry's own NbdServer), built on libnbd. No libnbd type appears here.
//
// Both open several connections (`connections`, when the server advertises multi-conn) and
// spread calls across them, so Read/Extents (source) and Write/WriteZeroes (sink) may be
// called from several threads at once and run in parallel.
//
// Errors carry the URI and the offset: "nbd://host:10809/disk: read at 0x10000 (65536 bytes):
// server error: Input/output error". Thread-safety: as BlockSource/BlockSink require.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "disk/block_sink.h"
#include "disk/block_source.h"

namespace ferry {

// nbd://, nbds://, nbd+unix://, nbds+unix://, nbd+vsock://, nbds+vsock:// URIs.
bool IsNbdUri(std::string_view s);

struct NbdSourceOptions {
  // Which metadata context Extents() reports:
  //   ""                         base:allocation: holes -> kHole, zero -> kZero, else kData
  //                              (a server without it: everything is kData);
  //   "qemu:dirty-bitmap:NAME"   dirty ranges -> kData, clean ranges -> kSkip (incremental
  //                              copies); kNotFound if the server does not offer it.
  std::string meta_context;
  // Connections to open when the server allows multi-conn (otherwise 1).
  int connections = 4;
};

// URIs as libnbd understands them: nbd://host[:port]/export, nbd+unix:///export?socket=PATH.
Result<std::unique_ptr<BlockSource>> OpenNbdSource(const std::string& uri,
                                                   const NbdSourceOptions& options = {});

struct NbdSinkOptions {
  // Connections to open when the server allows multi-conn (otherwise 1).
  int connections = 4;
};

// Writes into an existing export (size() is the export's size). zero_initialized() is false:
// an NBD export has no reliable "reads as zeros" flag, so the engine sends WriteZeroes
// (NBD_CMD_WRITE_ZEROES, trimming allowed; plain zero writes if the server lacks it).
// granularity(): the server's preferred block size if that is a power of two above 64 KiB,
// else 64 KiB. Checkpoint() flushes every connection and returns an empty blob; Finalize()
// flushes. kPermissionDenied for a read-only export.
Result<std::unique_ptr<BlockSink>> OpenNbdSink(const std::string& uri,
                                               const NbdSinkOptions& options = {});

}  // namespace ferry
