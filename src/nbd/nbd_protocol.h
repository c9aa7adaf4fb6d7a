// NBD wire constants, from the NBD protocol specification (NetworkBlockDevice/nbd doc/proto.md,
// "Values" section and the INFO, STRUCTURED_REPLY and BLOCK_STATUS extensions, now merged).
// Every field on the wire is big-endian.
//
// Only constants live here; the server (nbd_session.cc) and the raw-socket tests use them.
// Thread-safety: constants only.
#pragma once

#include <cstdint>

namespace ferry::nbd {

// Handshake (proto.md "Newstyle negotiation").
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943;   // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454F5054;   // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x3e889045565a9;  // option reply magic

// Handshake flags (server, 16 bits).
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;
// Client flags (32 bits).
inline constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// Transmission flags (16 bits).
inline constexpr uint16_t kFlagHasFlags = 1 << 0;
inline constexpr uint16_t kFlagReadOnly = 1 << 1;
inline constexpr uint16_t kFlagSendFlush = 1 << 2;
inline constexpr uint16_t kFlagSendFua = 1 << 3;
inline constexpr uint16_t kFlagRotational = 1 << 4;
inline constexpr uint16_t kFlagSendTrim = 1 << 5;
inline constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kFlagSendDf = 1 << 7;
inline constexpr uint16_t kFlagCanMultiConn = 1 << 8;
inline constexpr uint16_t kFlagSendCache = 1 << 10;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;

// Option replies; errors have bit 31 set.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;
inline constexpr uint32_t kRepErrUnsup = 0x80000000u | 1;
inline constexpr uint32_t kRepErrPolicy = 0x80000000u | 2;
inline constexpr uint32_t kRepErrInvalid = 0x80000000u | 3;
inline constexpr uint32_t kRepErrPlatform = 0x80000000u | 4;
inline constexpr uint32_t kRepErrTlsReqd = 0x80000000u | 5;
inline constexpr uint32_t kRepErrUnknown = 0x80000000u | 6;
inline constexpr uint32_t kRepErrShutdown = 0x80000000u | 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = 0x80000000u | 8;
inline constexpr uint32_t kRepErrTooBig = 0x80000000u | 9;

// NBD_REP_INFO types (INFO extension).
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Transmission phase.
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
inline constexpr size_t kRequestHeaderSize = 28;          // magic flags type handle offset length
inline constexpr size_t kSimpleReplyHeaderSize = 16;      // magic error handle
inline constexpr size_t kStructuredReplyHeaderSize = 20;  // magic flags type handle length

// Commands.
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;

// Command flags.
inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;
inline constexpr uint16_t kCmdFlagDf = 1 << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1 << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Structured reply flags and chunk types.
inline constexpr uint16_t kReplyFlagDone = 1 << 0;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;
inline constexpr uint16_t kReplyTypeOffsetHole = 2;
inline constexpr uint16_t kReplyTypeBlockStatus = 5;
inline constexpr uint16_t kReplyTypeError = (1 << 15) | 1;
inline constexpr uint16_t kReplyTypeErrorOffset = (1 << 15) | 2;

// Error values ("Error values"): fixed numbers, not the host's errno.
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;

// base:allocation flags ("Metadata contexts").
inline constexpr uint32_t kStateHole = 1 << 0;
inline constexpr uint32_t kStateZero = 1 << 1;

inline constexpr char kBaseAllocation[] = "base:allocation";

// proto.md "Conventions": strings MUST be no longer than 4096 bytes.
inline constexpr uint32_t kMaxString = 4096;

}  // namespace ferry::nbd
