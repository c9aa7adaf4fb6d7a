// Small edits and lookups on a libvirt domain XML that the migration jobs need: where the
// guest's serial console is logged (to measure guest-observed downtime), which file each disk
// uses, and the same XML with some disks pointed at new files (live-storage's persistent
// definition after the pivot, live-vsm's destination XML).
//
// The XML comes from libvirtd (and originally from users): size-capped and parsed with
// checks; errors are Status::Corrupt naming the element.
//
// Thread-safety: pure functions.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ferry::agent {

// The file the guest's first serial port (or console) is logged to: <serial type='file'>
// <source path=.../>, or a <log file=.../> of any serial/console. "" if there is none.
Result<std::string> SerialLogPath(std::string_view domain_xml);

// Disk target ("vda") -> the file it reads (<source file=...>), for disks of type file.
Result<std::map<std::string, std::string>> DiskFileSources(std::string_view domain_xml);

struct NewDiskSource {
  std::string path;    // the new file
  std::string format;  // its <driver type=...>: "qcow2", "raw"
};

// `domain_xml` with each disk named in `changes` (by target dev) turned into
// <disk type='file'> with <source file=path/> and driver type `format`; every other element
// and attribute is kept. kNotFound if a target in `changes` is not a disk of the domain.
Result<std::string> ReplaceDiskSources(std::string_view domain_xml,
                                       const std::map<std::string, NewDiskSource>& changes);

}  // namespace ferry::agent
