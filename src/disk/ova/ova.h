// OVA packages (a tar of an OVF descriptor, disks and a manifest), read in place: disks are
// read through a slice of the .ova file, never extracted.
//
// The tar index, the OVF and the manifest are parsed from untrusted bytes with caps (see
// docs/formats/ova.md). Plain structs; the functions are thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/file.h"
#include "common/status.h"
#include "disk/block_source.h"
#include "disk/image.h"

namespace ferry {

// One disk as the OVF describes it.
struct OvfDisk {
  std::string disk_id;          // ovf:diskId
  std::string file_ref;         // ovf:fileRef (an ovf:id in References)
  std::string file_href;        // the tar member holding it (resolved through References)
  uint64_t capacity = 0;        // bytes (ovf:capacity x capacityAllocationUnits)
  uint64_t populated_size = 0;  // ovf:populatedSize, 0 if absent
  std::string format_uri;       // ovf:format, e.g. ...#streamOptimized
};

// A References/File entry.
struct OvfFile {
  std::string id;           // ovf:id
  std::string href;         // ovf:href
  uint64_t size = 0;        // ovf:size, 0 if absent
  std::string compression;  // ovf:compression ("" or "gzip")
  uint64_t chunk_size = 0;  // ovf:chunkSize, 0 if not chunked
};

struct OvfNic {
  std::string name;     // rasd:ElementName
  std::string network;  // rasd:Connection
  std::string adapter;  // rasd:ResourceSubType (E1000, VmxNet3 ...)
  std::string mac;      // rasd:Address
};

// A manifest (.mf) line: "SHA256(disk1.vmdk)= 3a5f...".
struct ManifestEntry {
  std::string algorithm;  // SHA1, SHA256, SHA512
  std::string file;
  std::string digest_hex;  // lower case
};

struct OvfDescriptor {
  std::string vm_name;         // VirtualSystem/Name (or ovf:id when there is no Name)
  std::string vm_id;           // VirtualSystem ovf:id
  std::vector<OvfDisk> disks;  // in the order the OVF lists them
  std::vector<OvfFile> files;
  uint32_t vcpus = 0;                   // ResourceType 3, 0 if absent
  uint64_t memory_mb = 0;               // ResourceType 4, 0 if absent
  std::vector<OvfNic> nics;             // ResourceType 10
  std::string firmware;                 // vmw:Config firmware ("efi", "bios"), "" if absent
  std::vector<ManifestEntry> manifest;  // from the .mf member, if any (not verified here)
};

// A regular file inside the tar.
struct OvaMember {
  std::string name;
  uint64_t offset = 0;  // of the member's data in the .ova
  uint64_t size = 0;
};

struct OvaPackage {
  std::vector<OvaMember> members;  // in tar order
  std::string ovf_member;
  OvfDescriptor ovf;
  std::vector<std::string> problems;  // deviations from the OVF spec that do not stop reading
};

// Parses an OVF envelope (untrusted). `where` names it for messages.
Result<OvfDescriptor> ParseOvf(std::string_view xml, const std::string& where);
// Parses a manifest (untrusted); lines that are not digests are errors.
Result<std::vector<ManifestEntry>> ParseManifest(std::string_view text, const std::string& where);
// Indexes the tar `file` (ustar, pax, GNU long names) and parses its OVF and manifest.
Result<OvaPackage> ReadOvaPackage(const File& file);
Result<OvfDescriptor> ReadOvaDescriptor(const File& file);

// Opens disk number ctx.options().ova_disk_index of the OVA `file` (untrusted).
Result<std::unique_ptr<BlockSource>> OpenOva(const OpenContext& ctx, std::unique_ptr<File> file);

}  // namespace ferry
