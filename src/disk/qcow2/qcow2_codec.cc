// zlib/zstd wrappers for qcow2 clusters (see qcow2_codec.h).
#include "disk/qcow2/qcow2_codec.h"

#include <zlib.h>
#include <zstd.h>

#include <climits>

namespace ferry::qcow2 {
namespace {

// QEMU qcow2-threads.c: deflateInit2(..., -12, 9, ...) to write; any window up to 32 KiB
// (windowBits -15) decodes every raw deflate stream QEMU and other writers produce.
constexpr int kDeflateWindowBits = -12;
constexpr int kInflateWindowBits = -15;
constexpr int kDeflateMemLevel = 9;
constexpr int kZstdLevel = 3;  // ZSTD_CLEVEL_DEFAULT, as QEMU

// Per-thread compression contexts: initializing zlib/zstd state per cluster is costly.
struct DeflateContext {
  z_stream strm{};
  bool ready = false;
  DeflateContext() {
    ready = deflateInit2(&strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED, kDeflateWindowBits,
                         kDeflateMemLevel, Z_DEFAULT_STRATEGY) == Z_OK;
  }
  ~DeflateContext() {
    if (ready) deflateEnd(&strm);
  }
  DeflateContext(const DeflateContext&) = delete;
  DeflateContext& operator=(const DeflateContext&) = delete;
};

struct ZstdContexts {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ~ZstdContexts() { ZSTD_freeCCtx(cctx); }
  ZstdContexts() = default;
  ZstdContexts(const ZstdContexts&) = delete;
  ZstdContexts& operator=(const ZstdContexts&) = delete;
};

Status InflateRaw(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream strm{};
  if (inflateInit2(&strm, kInflateWindowBits) != Z_OK) {
    return Status::Internal("inflateInit2 failed");
  }
  if (in.size() > UINT_MAX || out.size() > UINT_MAX) {
    inflateEnd(&strm);
    return Status::Corrupt("compressed cluster too large");
  }
  strm.next_in = const_cast<Bytef*>(in.data());
  strm.avail_in = static_cast<uInt>(in.size());
  strm.next_out = out.data();
  strm.avail_out = static_cast<uInt>(out.size());
  const int ret = inflate(&strm, Z_FINISH);
  std::string msg = strm.msg ? strm.msg : "";
  const uInt left = strm.avail_out;
  inflateEnd(&strm);
  // As QEMU: Z_BUF_ERROR is fine once the cluster is full (the input is sector-rounded and
  // may carry bytes past the stream's end).
  if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && left == 0) return Status::Ok();
  if (ret == Z_STREAM_END || ret == Z_BUF_ERROR) {
    return Status::Corrupt("deflate stream ends after " + std::to_string(out.size() - left) +
                           " bytes, short of the " + std::to_string(out.size()) +
                           "-byte cluster");
  }
  return Status::Corrupt("inflate error " + std::to_string(ret) + (msg.empty() ? "" : ": " + msg));
}

Status DecompressZstd(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (dctx == nullptr) return Status::Internal("ZSTD_createDCtx failed");
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  ZSTD_outBuffer output{out.data(), out.size(), 0};
  size_t ret = 1;
  Status status;
  // As QEMU's qcow2_zstd_decompress: stream until the cluster is full; no progress or a
  // frame that continues past the cluster is corruption.
  while (output.pos < output.size) {
    const size_t last_in = input.pos;
    const size_t last_out = output.pos;
    ret = ZSTD_decompressStream(dctx, &output, &input);
    if (ZSTD_isError(ret)) {
      status = Status::Corrupt(std::string("zstd: ") + ZSTD_getErrorName(ret));
      break;
    }
    if (input.pos <= last_in && output.pos <= last_out) {
      status = Status::Corrupt("zstd stream ends after " + std::to_string(output.pos) +
                               " bytes, short of the " + std::to_string(out.size()) +
                               "-byte cluster");
      break;
    }
  }
  if (status.ok() && ret > 0) {
    status = Status::Corrupt("zstd frame decompresses to more than the " +
                             std::to_string(out.size()) + "-byte cluster");
  }
  ZSTD_freeDCtx(dctx);
  return status;
}

}  // namespace

Status Decompress(Codec codec, std::span<const uint8_t> in, std::span<uint8_t> out) {
  return codec == Codec::kZstd ? DecompressZstd(in, out) : InflateRaw(in, out);
}

bool Compress(Codec codec, std::span<const uint8_t> in, size_t max_size,
              std::vector<uint8_t>* out) {
  if (codec == Codec::kZstd) {
    thread_local ZstdContexts ctx;
    if (ctx.cctx == nullptr) return false;
    out->resize(ZSTD_compressBound(in.size()));
    const size_t n =
        ZSTD_compressCCtx(ctx.cctx, out->data(), out->size(), in.data(), in.size(), kZstdLevel);
    if (ZSTD_isError(n) || n >= max_size) return false;
    out->resize(n);
    return true;
  }
  thread_local DeflateContext ctx;
  if (!ctx.ready || deflateReset(&ctx.strm) != Z_OK) return false;
  out->resize(max_size);
  ctx.strm.next_in = const_cast<Bytef*>(in.data());
  ctx.strm.avail_in = static_cast<uInt>(in.size());
  ctx.strm.next_out = out->data();
  ctx.strm.avail_out = static_cast<uInt>(out->size());
  // Z_STREAM_END only if everything fit in max_size bytes.
  if (deflate(&ctx.strm, Z_FINISH) != Z_STREAM_END) return false;
  out->resize(out->size() - ctx.strm.avail_out);
  return out->size() < max_size;
}

}  // namespace ferry::qcow2
