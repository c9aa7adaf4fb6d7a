// ParsePlan and PlanToJson (see plan.h; the document is described in docs/plans.md).
//
// Two stages. First the text becomes a small tree of our own (mappings, lists, scalars), from
// yaml-cpp's event parser for YAML or nlohmann's SAX parser for JSON, so that both read the
// same way and every safety cap lives in one place: the text's size, nesting depth, scalar
// size, the number of values with YAML aliases expanded (an alias "bomb" of nested references
// stops at the cap instead of exhausting memory or time), duplicate keys. Then a walker reads
// the tree field by field against the schema, naming the path of anything wrong. No
// third-party type or exception leaves this file.
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <utility>

#include "common/units.h"
#include "plan/plan.h"

namespace ferry::plan {
namespace {

// --- Caps and ranges (docs/plans.md, "The plan document") ----------------------------------

constexpr size_t kMaxPlanBytes = 1 << 20;
constexpr size_t kMaxScalarBytes = 64 << 10;
constexpr uint64_t kMaxValues = 100'000;  // in the whole document, aliases expanded
constexpr size_t kMaxDepth = 32;
constexpr size_t kMaxVms = 1000;
constexpr size_t kMaxMappings = 1000;  // network and storage rules each
constexpr size_t kMaxNameChars = 64;
constexpr size_t kMaxHostChars = 128;
constexpr size_t kMaxSourceNameChars = 256;  // source VM and network names, datastores
constexpr size_t kMaxIdChars = 1024;         // share VM ids (relative paths), storage keys
constexpr size_t kMaxMarkerChars = 256;
constexpr int64_t kMaxVcpus = 4096;
constexpr uint64_t kMinMemory = kMiB;
constexpr uint64_t kMaxMemory = 16 * kTiB;
constexpr uint64_t kMinCheckpoint = kMiB;
constexpr uint64_t kMaxCheckpoint = kTiB;
constexpr int64_t kMaxDurationMs = 7ll * 24 * 3600 * 1000;
constexpr int64_t kMinBootTimeoutMs = 1000;
constexpr int64_t kMaxPriority = 1'000'000;

// --- The tree -----------------------------------------------------------------------------

enum class Kind { kNull, kScalar, kList, kMap };
// kNumber and kBool come only from JSON; YAML scalars are kPlain or kQuoted (as written).
enum class Style { kPlain, kQuoted, kNumber, kBool };

struct Node {
  Kind kind = Kind::kNull;
  Style style = Style::kPlain;
  std::string text;
  std::vector<size_t> items;                            // kList
  std::vector<std::pair<std::string, size_t>> entries;  // kMap, in document order
  uint64_t weight = 1;                                  // values in this subtree, aliases expanded
  bool open = false;  // a list or mapping whose end has not been seen yet
};

struct Tree {
  std::vector<Node> nodes;
  size_t root = 0;
};

// Makes untrusted text safe to quote in a message: control characters become '?', long text
// is cut.
std::string Quote(std::string_view text, size_t max = 40) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < max; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    out += (c < 0x20 || c == 0x7f || c == '"') ? '?' : static_cast<char>(c);
  }
  if (text.size() > max) out += "...";
  return out + "\"";
}

std::string Join(const std::string& path, std::string_view key) {
  std::string k;
  for (unsigned char c : key.substr(0, 64)) k += (c < 0x20 || c == 0x7f) ? '?' : char(c);
  return path.empty() ? k : path + "." + k;
}

std::string Index(const std::string& path, size_t i) {
  return (path.empty() ? "plan" : path) + "[" + std::to_string(i) + "]";
}

// Builds a Tree from parse events, enforcing the caps. The first error sticks; every event
// after it returns false.
class TreeBuilder {
 public:
  bool Scalar(std::string text, Style style, size_t anchor) {
    if (!status_.ok()) return false;
    if (text.size() > kMaxScalarBytes) {
      return Fail(ChildPath(), "a value longer than " + std::to_string(kMaxScalarBytes) + " bytes");
    }
    if (!stack_.empty() && Top().kind == Kind::kMap && !stack_.back().have_key) {
      return Key(std::move(text), style);
    }
    Node n;
    n.kind = Kind::kScalar;
    n.style = style;
    n.text = std::move(text);
    return Attach(NewNode(std::move(n)), anchor);
  }

  bool Null(size_t anchor) {
    if (!status_.ok()) return false;
    if (!stack_.empty() && Top().kind == Kind::kMap && !stack_.back().have_key) {
      return Fail(stack_.back().path, "a key must be a string, not empty");
    }
    return Attach(NewNode(Node{}), anchor);
  }

  bool Alias(size_t anchor) {
    if (!status_.ok()) return false;
    if (!stack_.empty() && Top().kind == Kind::kMap && !stack_.back().have_key) {
      return Fail(stack_.back().path, "a key must be a plain string, not an alias");
    }
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) return Fail(ChildPath(), "alias to an unknown anchor");
    if (nodes_[it->second].open) {
      return Fail(ChildPath(), "alias to an anchor that contains it (a cycle)");
    }
    return Attach(it->second, 0);
  }

  bool Begin(Kind kind, size_t anchor) {
    if (!status_.ok()) return false;
    if (!stack_.empty() && Top().kind == Kind::kMap && !stack_.back().have_key) {
      return Fail(stack_.back().path, "a key must be a string, not a list or mapping");
    }
    if (stack_.size() >= kMaxDepth) {
      return Fail(ChildPath(), "nested more than " + std::to_string(kMaxDepth) + " levels deep");
    }
    Node n;
    n.kind = kind;
    n.open = true;
    std::string path = ChildPath();
    size_t index = NewNode(std::move(n));
    if (!Attach(index, anchor)) return false;
    stack_.push_back(Open{index, std::move(path), false, ""});
    return true;
  }

  bool End() {
    if (!status_.ok()) return false;
    if (stack_.empty()) return Fail("plan", "unbalanced end of a list or mapping");
    Node& closed = nodes_[stack_.back().node];
    closed.open = false;
    const uint64_t weight = closed.weight;
    stack_.pop_back();
    if (!stack_.empty()) return AddWeight(Top(), weight);
    return true;
  }

  // Fails at the place of the value that comes next.
  bool Reject(const std::string& what) { return Fail(ChildPath(), what); }

  const Status& status() const { return status_; }

  Result<Tree> Finish() && {
    if (!status_.ok()) return status_;
    if (!root_.has_value() || !stack_.empty()) {
      return Status::InvalidArgument("plan: the document is empty or incomplete");
    }
    Tree t;
    t.nodes = std::move(nodes_);
    t.root = *root_;
    return t;
  }

 private:
  struct Open {
    size_t node;
    std::string path;
    bool have_key;  // mappings: a key was read, its value comes next
    std::string key;
  };

  Node& Top() { return nodes_[stack_.back().node]; }

  bool Fail(const std::string& path, const std::string& what) {
    if (status_.ok())
      status_ = Status::InvalidArgument((path.empty() ? "plan" : path) + ": " + what);
    return false;
  }

  // The path of the value that comes next.
  std::string ChildPath() const {
    if (stack_.empty()) return "";
    const Open& o = stack_.back();
    const Node& n = nodes_[o.node];
    if (n.kind == Kind::kMap) return o.have_key ? Join(o.path, o.key) : o.path;
    return Index(o.path, n.items.size());
  }

  bool Key(std::string text, Style style) {
    Open& o = stack_.back();
    if (style == Style::kNumber || style == Style::kBool) {
      return Fail(o.path, "a key must be a string, not " + Quote(text));
    }
    for (const auto& [k, v] : Top().entries) {
      if (k == text) return Fail(Join(o.path, text), "given twice");
    }
    o.have_key = true;
    o.key = std::move(text);
    return true;
  }

  size_t NewNode(Node n) {
    nodes_.push_back(std::move(n));
    return nodes_.size() - 1;
  }

  bool AddWeight(Node& parent, uint64_t weight) {
    parent.weight = std::min(parent.weight + weight, kMaxValues + 1);
    if (parent.weight > kMaxValues) {
      return Fail("plan", "more than " + std::to_string(kMaxValues) +
                              " values (YAML aliases counted each time they are used)");
    }
    return true;
  }

  // Puts node `index` where the next value goes, and registers its anchor.
  bool Attach(size_t index, size_t anchor) {
    if (anchor != 0) anchors_[anchor] = index;
    if (stack_.empty()) {
      if (root_.has_value()) return Fail("plan", "more than one top-level value");
      root_ = index;
      return true;
    }
    Open& o = stack_.back();
    Node& parent = nodes_[o.node];
    if (parent.kind == Kind::kMap) {
      parent.entries.emplace_back(std::move(o.key), index);
      o.have_key = false;
      o.key.clear();
    } else {
      parent.items.push_back(index);
    }
    // An open container's weight is added to its parent when it ends.
    return nodes_[index].open ? true : AddWeight(nodes_[o.node], nodes_[index].weight);
  }

  std::vector<Node> nodes_;
  std::vector<Open> stack_;
  std::map<size_t, size_t> anchors_;
  std::optional<size_t> root_;
  Status status_;
};

// --- YAML and JSON into the tree ----------------------------------------------------------

struct StopParsing {};  // thrown by the YAML handler to stop yaml-cpp after our own error

class YamlHandler final : public YAML::EventHandler {
 public:
  explicit YamlHandler(TreeBuilder* b) : b_(b) {}

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t anchor) override { Check(b_->Null(anchor)); }
  void OnAlias(const YAML::Mark&, YAML::anchor_t anchor) override { Check(b_->Alias(anchor)); }
  void OnScalar(const YAML::Mark&, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    // yaml-cpp tags plain scalars "?" and quoted ones "!"; `!!str x` is a string too. Other
    // explicit tags (!!binary, custom ones) have no meaning in a plan.
    Style style = Style::kPlain;
    if (tag == "!" || tag == "tag:yaml.org,2002:str") {
      style = Style::kQuoted;
    } else if (tag != "?") {
      Check(b_->Reject("YAML tag " + Quote(tag) + " is not supported"));
    }
    if (style == Style::kPlain && IsYamlNull(value)) {
      Check(b_->Null(anchor));
      return;
    }
    Check(b_->Scalar(value, style, anchor));
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Check(b_->Begin(Kind::kList, anchor));
  }
  void OnSequenceEnd() override { Check(b_->End()); }
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    Check(b_->Begin(Kind::kMap, anchor));
  }
  void OnMapEnd() override { Check(b_->End()); }

 private:
  static bool IsYamlNull(const std::string& v) {
    return v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL";
  }
  static void Check(bool ok) {
    if (!ok) throw StopParsing{};
  }
  TreeBuilder* b_;
};

// Stops at the start of a second document.
class SecondDocument final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override { throw StopParsing{}; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

std::string YamlError(const YAML::Exception& e) {
  std::string msg = e.msg.empty() ? std::string(e.what()) : e.msg;
  if (e.mark.is_null()) return "plan: YAML syntax error: " + msg;
  return "plan: YAML syntax error at line " + std::to_string(e.mark.line + 1) + ", column " +
         std::to_string(e.mark.column + 1) + ": " + msg;
}

Result<Tree> ParseYaml(std::string_view text) {
  TreeBuilder builder;
  try {
    std::istringstream in{std::string(text)};
    YAML::Parser parser(in);
    YamlHandler handler(&builder);
    if (!parser.HandleNextDocument(handler)) {
      return Status::InvalidArgument("plan: the document is empty");
    }
    SecondDocument second;
    bool more = false;
    try {
      more = parser.HandleNextDocument(second);
    } catch (const StopParsing&) {
      more = true;
    }
    if (more) return Status::InvalidArgument("plan: more than one YAML document (---)");
  } catch (const StopParsing&) {
    if (builder.status().ok()) return Status::InvalidArgument("plan: unsupported YAML tag");
    return builder.status();
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(YamlError(e));
  } catch (const std::bad_alloc&) {
    return Status::TooLarge("plan: out of memory reading the YAML document");
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("plan: YAML: ") + e.what());
  }
  return std::move(builder).Finish();
}

class JsonHandler {
 public:
  using Json = nlohmann::json;
  explicit JsonHandler(TreeBuilder* b) : b_(b) {}

  bool null() { return b_->Null(0); }
  bool boolean(bool v) { return b_->Scalar(v ? "true" : "false", Style::kBool, 0); }
  bool number_integer(Json::number_integer_t v) {
    return b_->Scalar(std::to_string(v), Style::kNumber, 0);
  }
  bool number_unsigned(Json::number_unsigned_t v) {
    return b_->Scalar(std::to_string(v), Style::kNumber, 0);
  }
  bool number_float(Json::number_float_t, const Json::string_t& raw) {
    return b_->Scalar(raw, Style::kNumber, 0);
  }
  bool string(Json::string_t& v) { return b_->Scalar(std::move(v), Style::kQuoted, 0); }
  bool binary(Json::binary_t&) { return b_->Null(0); }
  bool start_object(size_t) { return b_->Begin(Kind::kMap, 0); }
  bool key(Json::string_t& k) { return b_->Scalar(std::move(k), Style::kQuoted, 0); }
  bool end_object() { return b_->End(); }
  bool start_array(size_t) { return b_->Begin(Kind::kList, 0); }
  bool end_array() { return b_->End(); }
  bool parse_error(size_t, const std::string&, const nlohmann::json::exception& e) {
    syntax_error = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, ..." -> "parse error at ...".
    if (size_t close = syntax_error.find("] "); close != std::string::npos) {
      syntax_error = syntax_error.substr(close + 2);
    }
    return false;
  }

  std::string syntax_error;

 private:
  TreeBuilder* b_;
};

// JSON through nlohmann's SAX parser. `syntax` is set when the text is not JSON (as opposed
// to JSON that breaks a cap).
Result<Tree> ParseJson(std::string_view text, bool* syntax) {
  *syntax = false;
  TreeBuilder builder;
  JsonHandler handler(&builder);
  try {
    nlohmann::json::sax_parse(text.data(), text.data() + text.size(), &handler);
  } catch (const std::bad_alloc&) {
    return Status::TooLarge("plan: out of memory reading the JSON document");
  } catch (const std::exception& e) {
    handler.syntax_error = e.what();
  }
  if (!builder.status().ok()) return builder.status();
  if (!handler.syntax_error.empty()) {
    *syntax = true;
    return Status::InvalidArgument("plan: not valid JSON: " + handler.syntax_error);
  }
  return std::move(builder).Finish();
}

Result<Tree> ParseTree(std::string_view text) {
  if (text.size() > kMaxPlanBytes) {
    return Status::TooLarge("plan: the document is " + std::to_string(text.size()) +
                            " bytes; at most " + std::to_string(kMaxPlanBytes) + " are read");
  }
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 byte order mark
  if (text.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument("plan: the document contains a NUL byte (not text)");
  }
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && (text[first] == '{' || text[first] == '[')) {
    bool syntax = false;
    Result<Tree> json = ParseJson(text, &syntax);
    if (json.ok() || !syntax) return json;
    // A YAML flow mapping ({name: a, ...}) starts the same way; a quoted first key says the
    // author wrote JSON, and JSON's error is the one that helps.
    size_t second = text.find_first_not_of(" \t\r\n", first + 1);
    if (second != std::string_view::npos && text[second] == '"') return json;
    Result<Tree> yaml = ParseYaml(text);
    if (yaml.ok()) return yaml;
    std::string yaml_error = yaml.status().message();
    if (yaml_error.rfind("plan: ", 0) == 0) yaml_error = yaml_error.substr(6);
    return Status::InvalidArgument(json.status().message() + " (nor YAML: " + yaml_error + ")");
  }
  return ParseYaml(text);
}

// --- Reading the tree against the schema --------------------------------------------------

std::string Describe(const Node& n) {
  switch (n.kind) {
    case Kind::kNull: return "nothing";
    case Kind::kList: return "a list";
    case Kind::kMap: return "a mapping";
    case Kind::kScalar: break;
  }
  if (n.style == Style::kNumber || n.style == Style::kBool) return n.text.substr(0, 40);
  return Quote(n.text);
}

Status Bad(const std::string& path, const std::string& what) {
  return Status::InvalidArgument((path.empty() ? "plan" : path) + ": " + what);
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// Strict UTF-8 (no overlongs, no surrogates); returns the number of characters or -1.
int64_t Utf8Length(std::string_view s) {
  int64_t chars = 0;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xe  ? 3
                 : (c >> 3) == 0x1e ? 4
                                    : 0;
    if (len == 0 || i + len > s.size()) return -1;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return -1;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
    i += len;
    ++chars;
  }
  return chars;
}

// Digits with an optional fraction: "12", "1.5". Returns false if `s` is not one.
bool SplitDecimal(std::string_view s, std::string_view* whole, std::string_view* frac) {
  size_t dot = s.find('.');
  *whole = s.substr(0, dot);
  *frac = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  if (whole->empty() || whole->size() > 19) return false;
  if (dot != std::string_view::npos && (frac->empty() || frac->size() > 9)) return false;
  auto digits = [](std::string_view d) {
    return std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return digits(*whole) && digits(*frac);
}

// whole.frac * unit, exactly; nullopt if it overflows or is not a whole number.
std::optional<uint64_t> ScaleDecimal(std::string_view whole, std::string_view frac, uint64_t unit) {
  unsigned __int128 w = 0;
  for (char c : whole) w = w * 10 + static_cast<unsigned>(c - '0');
  unsigned __int128 f = 0, denom = 1;
  for (char c : frac) {
    f = f * 10 + static_cast<unsigned>(c - '0');
    denom *= 10;
  }
  unsigned __int128 v = w * unit;
  unsigned __int128 fv = f * unit;
  if (fv % denom != 0) return std::nullopt;
  v += fv / denom;
  if (v > static_cast<unsigned __int128>(INT64_MAX)) return std::nullopt;
  return static_cast<uint64_t>(v);
}

// "4GiB", "512MiB", "4G", "1.5T", "1048576" (binary multiples; KB = KiB as elsewhere in Ferry).
std::optional<uint64_t> ParseSizeText(std::string_view s) {
  size_t unit_at = 0;
  while (unit_at < s.size() && ((s[unit_at] >= '0' && s[unit_at] <= '9') || s[unit_at] == '.')) {
    ++unit_at;
  }
  std::string_view number = s.substr(0, unit_at);
  std::string_view unit = s.substr(unit_at);
  if (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  std::string u;
  for (char c : unit) u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  uint64_t mult = 0;
  if (u.empty() || u == "B") {
    mult = 1;
  } else if (u == "K" || u == "KB" || u == "KIB") {
    mult = kKiB;
  } else if (u == "M" || u == "MB" || u == "MIB") {
    mult = kMiB;
  } else if (u == "G" || u == "GB" || u == "GIB") {
    mult = kGiB;
  } else if (u == "T" || u == "TB" || u == "TIB") {
    mult = kTiB;
  } else {
    return std::nullopt;
  }
  std::string_view whole, frac;
  if (!SplitDecimal(number, &whole, &frac)) return std::nullopt;
  return ScaleDecimal(whole, frac, mult);
}

// "90s", "5m", "1500ms", "1h", "1m30s", "2.5s", or a number of milliseconds.
std::optional<int64_t> ParseDurationText(std::string_view s) {
  if (s.empty()) return std::nullopt;
  if (std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (s.size() > 15) return std::nullopt;
    return static_cast<int64_t>(std::stoll(std::string(s)));
  }
  uint64_t total = 0;
  while (!s.empty()) {
    size_t unit_at = 0;
    while (unit_at < s.size() && ((s[unit_at] >= '0' && s[unit_at] <= '9') || s[unit_at] == '.')) {
      ++unit_at;
    }
    size_t unit_end = unit_at;
    while (unit_end < s.size() && std::isalpha(static_cast<unsigned char>(s[unit_end]))) {
      ++unit_end;
    }
    std::string_view unit = s.substr(unit_at, unit_end - unit_at);
    uint64_t ms = 0;
    if (unit == "ms") {
      ms = 1;
    } else if (unit == "s") {
      ms = 1000;
    } else if (unit == "m") {
      ms = 60'000;
    } else if (unit == "h") {
      ms = 3'600'000;
    } else if (unit == "d") {
      ms = 86'400'000;
    } else {
      return std::nullopt;
    }
    std::string_view whole, frac;
    if (!SplitDecimal(s.substr(0, unit_at), &whole, &frac)) return std::nullopt;
    auto part = ScaleDecimal(whole, frac, ms);
    if (!part) return std::nullopt;
    total += *part;
    if (total > static_cast<uint64_t>(INT64_MAX / 2)) return std::nullopt;
    s.remove_prefix(unit_end);
  }
  return static_cast<int64_t>(total);
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

// RFC 3339: 2026-12-03T22:00:00Z, 2026-12-03t22:00:00.5+01:00, "2026-12-03 22:00:00Z".
// Returns Unix epoch milliseconds (fractions below a millisecond are dropped).
std::optional<int64_t> ParseRfc3339(std::string_view s) {
  auto num = [&](size_t at, size_t len, unsigned* out) {
    if (at + len > s.size()) return false;
    unsigned v = 0;
    for (size_t i = at; i < at + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + static_cast<unsigned>(s[i] - '0');
    }
    *out = v;
    return true;
  };
  unsigned year, month, day, hour, minute, second;
  if (s.size() < 20 || !num(0, 4, &year) || s[4] != '-' || !num(5, 2, &month) || s[7] != '-' ||
      !num(8, 2, &day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !num(11, 2, &hour) ||
      s[13] != ':' || !num(14, 2, &minute) || s[16] != ':' || !num(17, 2, &second)) {
    return std::nullopt;
  }
  size_t at = 19;
  int64_t millis = 0;
  if (s[at] == '.') {
    size_t digits = 0;
    ++at;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9') {
      if (digits < 3) millis = millis * 10 + (s[at] - '0');
      ++digits;
      ++at;
    }
    if (digits == 0 || digits > 9) return std::nullopt;
    for (size_t k = digits; k < 3; ++k) millis *= 10;
  }
  int64_t offset_min = 0;
  if (at < s.size() && (s[at] == 'Z' || s[at] == 'z')) {
    ++at;
  } else if (at < s.size() && (s[at] == '+' || s[at] == '-')) {
    unsigned oh, om;
    if (!num(at + 1, 2, &oh) || at + 3 >= s.size() || s[at + 3] != ':' || !num(at + 4, 2, &om) ||
        oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_min = (s[at] == '+' ? 1 : -1) * static_cast<int64_t>(oh * 60 + om);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != s.size()) return std::nullopt;
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (year < 1970 || month < 1 || month > 12 || day < 1 ||
      day > kDays[month - 1] + (month == 2 && leap ? 1 : 0) || hour > 23 || minute > 59 ||
      second > 60) {
    return std::nullopt;
  }
  if (second == 60) second = 59;  // a leap second: the instant before the next minute
  const int64_t days = DaysFromCivil(year, month, day);
  const int64_t secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_min * 60;
  if (secs < 0) return std::nullopt;
  return secs * 1000 + millis;
}

std::string FormatRfc3339(int64_t ms) {
  const int64_t secs = ms / 1000;
  const int64_t days = secs / 86400;
  const int64_t rem = secs % 86400;
  int64_t y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  char buf[48];
  if (ms % 1000 == 0) {
    std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lldZ",
                  static_cast<long long>(y), m, d, static_cast<long long>(rem / 3600),
                  static_cast<long long>(rem / 60 % 60), static_cast<long long>(rem % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
                  static_cast<long long>(y), m, d, static_cast<long long>(rem / 3600),
                  static_cast<long long>(rem / 60 % 60), static_cast<long long>(rem % 60),
                  static_cast<long long>(ms % 1000));
  }
  return buf;
}

std::string FormatDuration(int64_t ms) {
  if (ms % 60'000 == 0 && ms > 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0 && ms > 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

// Reads the tree; every method returns the first problem as kInvalidArgument naming the path.
class Reader {
 public:
  explicit Reader(const Tree& t) : t_(t) {}

  const Node& At(size_t i) const { return t_.nodes[i]; }

  // A mapping's values by key; a key outside `known` is an error.
  using Fields = std::map<std::string, size_t, std::less<>>;
  Status Map(size_t node, const std::string& path, std::initializer_list<std::string_view> known,
             Fields* out) const {
    const Node& n = At(node);
    if (n.kind != Kind::kMap) return Bad(path, "expected a mapping, got " + Describe(n));
    out->clear();
    for (const auto& [key, value] : n.entries) {
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        if (key == "<<") {
          return Bad(Join(path, key),
                     "YAML merge keys are not supported (repeat the keys, or alias the whole "
                     "value)");
        }
        std::string list;
        for (std::string_view k : known) list += (list.empty() ? "" : ", ") + std::string(k);
        return Bad(Join(path, key), "unknown key (expected one of: " + list + ")");
      }
      (*out)[key] = value;
    }
    return Status::Ok();
  }

  Status List(size_t node, const std::string& path, size_t max, const Node** out) const {
    const Node& n = At(node);
    if (n.kind != Kind::kList) return Bad(path, "expected a list, got " + Describe(n));
    if (n.items.size() > max) {
      return Bad(path, "more than " + std::to_string(max) + " entries (" +
                           std::to_string(n.items.size()) + ")");
    }
    *out = &n;
    return Status::Ok();
  }

  // Any text (YAML plain or quoted, a JSON string), printable UTF-8 of 1..max characters
  // (0..max with allow_empty).
  Status String(size_t node, const std::string& path, size_t max, bool allow_empty,
                std::string* out) const {
    const Node& n = At(node);
    if (n.kind != Kind::kScalar || n.style == Style::kNumber || n.style == Style::kBool) {
      return Bad(path, "expected a string, got " + Describe(n));
    }
    const int64_t chars = Utf8Length(n.text);
    if (chars < 0) return Bad(path, "not valid UTF-8");
    for (unsigned char c : n.text) {
      if (c < 0x20 || c == 0x7f) return Bad(path, "must not contain control characters");
    }
    if (chars == 0 && !allow_empty) return Bad(path, "must not be empty");
    if (static_cast<size_t>(chars) > max) {
      return Bad(path, "longer than " + std::to_string(max) + " characters");
    }
    *out = n.text;
    return Status::Ok();
  }

  // A name of 1..64 of [A-Za-z0-9._-]; `leading` says whether '.' and '-' may start it.
  Status Name(size_t node, const std::string& path, bool dot_or_dash_first,
              std::string* out) const {
    FERRY_TRY(String(node, path, kMaxNameChars, false, out));
    if (!std::all_of(out->begin(), out->end(), IsNameChar)) {
      return Bad(path, Quote(*out) + ": use only letters, digits, '.', '_' and '-'");
    }
    if (!dot_or_dash_first && (out->front() == '.' || out->front() == '-')) {
      return Bad(path, Quote(*out) + ": must not start with '.' or '-'");
    }
    return Status::Ok();
  }

  // stream | readback | off, or a boolean (true: stream, false: off).
  Status Verify(size_t node, const std::string& path, VerifyMode* out) const {
    const Node& n = At(node);
    if (n.kind == Kind::kScalar && n.style != Style::kNumber) {
      if (std::optional<VerifyMode> m = VerifyModeFromName(n.text)) {
        *out = *m;
        return Status::Ok();
      }
    }
    return Bad(path, "expected stream, readback, off, true or false, got " + Describe(n));
  }

  Status OneOf(size_t node, const std::string& path,
               std::initializer_list<std::string_view> allowed, std::string* out) const {
    const Node& n = At(node);
    std::string list;
    for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    if (n.kind != Kind::kScalar || n.style == Style::kNumber || n.style == Style::kBool) {
      return Bad(path, "expected one of " + list + ", got " + Describe(n));
    }
    for (std::string_view a : allowed) {
      if (n.text == a) {
        *out = n.text;
        return Status::Ok();
      }
    }
    return Bad(path, "expected one of " + list + ", got " + Describe(n));
  }

  Status Bool(size_t node, const std::string& path, bool* out) const {
    const Node& n = At(node);
    if (n.kind == Kind::kScalar && (n.style == Style::kBool || n.style == Style::kPlain)) {
      if (n.text == "true" || n.text == "True" || n.text == "TRUE") {
        *out = true;
        return Status::Ok();
      }
      if (n.text == "false" || n.text == "False" || n.text == "FALSE") {
        *out = false;
        return Status::Ok();
      }
    }
    return Bad(path, "expected true or false, got " + Describe(n));
  }

  Status Integer(size_t node, const std::string& path, int64_t min, int64_t max,
                 int64_t* out) const {
    const Node& n = At(node);
    bool ok = n.kind == Kind::kScalar && (n.style == Style::kNumber || n.style == Style::kPlain);
    std::string_view s = n.text;
    bool negative = false;
    if (ok && !s.empty() && (s.front() == '-' || s.front() == '+')) {
      negative = s.front() == '-';
      s.remove_prefix(1);
    }
    std::string_view whole, frac;
    ok = ok && SplitDecimal(s, &whole, &frac) && frac.empty();
    std::optional<uint64_t> v = ok ? ScaleDecimal(whole, "", 1) : std::nullopt;
    if (!v) return Bad(path, "expected an integer, got " + Describe(n));
    const int64_t value = negative ? -static_cast<int64_t>(*v) : static_cast<int64_t>(*v);
    if (value < min || value > max) {
      return Bad(path, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                           ", got " + std::to_string(value));
    }
    *out = value;
    return Status::Ok();
  }

  Status Size(size_t node, const std::string& path, uint64_t min, uint64_t max,
              uint64_t* out) const {
    const Node& n = At(node);
    std::optional<uint64_t> v;
    if (n.kind == Kind::kScalar && n.style != Style::kBool) v = ParseSizeText(n.text);
    if (!v) return Bad(path, "expected a size such as 2GiB, got " + Describe(n));
    if (*v < min || *v > max) {
      return Bad(path, "must be between " + FormatBytes(min) + " and " + FormatBytes(max) +
                           ", got " + FormatBytes(*v));
    }
    *out = *v;
    return Status::Ok();
  }

  Status Duration(size_t node, const std::string& path, int64_t min, int64_t max,
                  int64_t* out) const {
    const Node& n = At(node);
    std::optional<int64_t> v;
    if (n.kind == Kind::kScalar && n.style != Style::kBool) v = ParseDurationText(n.text);
    if (!v) {
      return Bad(path, "expected a duration such as 90s, 5m or 1500ms, got " + Describe(n));
    }
    if (*v < min || *v > max) {
      return Bad(path, "must be between " + FormatDuration(min) + " and " + FormatDuration(max) +
                           ", got " + FormatDuration(*v));
    }
    *out = *v;
    return Status::Ok();
  }

 private:
  const Tree& t_;
};

// --- The document -------------------------------------------------------------------------

Status ReadBootCheck(const Reader& r, size_t node, const std::string& path, BootCheck* out) {
  Reader::Fields f;
  FERRY_TRY(r.Map(node, path, {"marker", "timeout"}, &f));
  auto marker = f.find("marker");
  if (marker == f.end()) {
    return Bad(Join(path, "marker"), "missing (the console text to wait for; \"\" = no check)");
  }
  FERRY_TRY(r.String(marker->second, Join(path, "marker"), kMaxMarkerChars, true, &out->marker));
  out->timeout_ms = BootCheck{}.timeout_ms;
  if (auto t = f.find("timeout"); t != f.end()) {
    FERRY_TRY(r.Duration(t->second, Join(path, "timeout"), kMinBootTimeoutMs, kMaxDurationMs,
                         &out->timeout_ms));
  }
  return Status::Ok();
}

// per_vm: the vms[].target form (with name and preserve_mac), else target_defaults.
Status ReadTargetOptions(const Reader& r, size_t node, const std::string& path, bool per_vm,
                         TargetOptions* out) {
  Reader::Fields f;
  if (per_vm) {
    FERRY_TRY(r.Map(node, path,
                    {"name", "vcpus", "memory", "disk_bus", "machine", "firmware", "start",
                     "delete_disks_with_vm", "boot_check", "preserve_mac"},
                    &f));
  } else {
    const Node& n = r.At(node);
    for (const auto& [key, value] : n.entries) {
      if (key == "name") return Bad(Join(path, key), "a per-VM key (vms[].target.name)");
      if (key == "preserve_mac") {
        return Bad(Join(path, key), "use the top-level preserve_mac (or vms[].target's)");
      }
    }
    FERRY_TRY(r.Map(node, path,
                    {"vcpus", "memory", "disk_bus", "machine", "firmware", "start",
                     "delete_disks_with_vm", "boot_check"},
                    &f));
  }
  for (const auto& [key, value] : f) {
    const std::string p = Join(path, key);
    if (key == "name") {
      std::string name;
      FERRY_TRY(r.Name(value, p, false, &name));
      out->name = name;
    } else if (key == "vcpus") {
      int64_t v;
      FERRY_TRY(r.Integer(value, p, 1, kMaxVcpus, &v));
      out->vcpus = static_cast<int>(v);
    } else if (key == "memory") {
      uint64_t v;
      FERRY_TRY(r.Size(value, p, kMinMemory, kMaxMemory, &v));
      if (v % kKiB != 0) return Bad(p, "must be a whole number of KiB, got " + std::to_string(v));
      out->memory_bytes = v;
    } else if (key == "disk_bus") {
      std::string v;
      FERRY_TRY(r.OneOf(value, p, {"virtio", "scsi", "sata", "ide"}, &v));
      out->disk_bus = v;
    } else if (key == "machine") {
      std::string v;
      FERRY_TRY(r.Name(value, p, false, &v));
      out->machine = v;
    } else if (key == "firmware") {
      std::string v;
      FERRY_TRY(r.OneOf(value, p, {"bios", "uefi"}, &v));
      out->firmware = v;
    } else if (key == "start" || key == "delete_disks_with_vm" || key == "preserve_mac") {
      bool v;
      FERRY_TRY(r.Bool(value, p, &v));
      (key == "start"          ? out->start
       : key == "preserve_mac" ? out->preserve_mac
                               : out->delete_disks_with_vm) = v;
    } else if (key == "boot_check") {
      BootCheck b;
      FERRY_TRY(ReadBootCheck(r, value, p, &b));
      out->boot_check = b;
    }
  }
  return Status::Ok();
}

EndpointType TypeOf(const std::string& s) {
  return s == "share" ? EndpointType::kShare : EndpointType::kKvm;
}

Status ReadSource(const Reader& r, size_t node, PlanSource* out) {
  Reader::Fields f;
  FERRY_TRY(r.Map(node, "source", {"type", "host", "share"}, &f));
  std::string type = "kvm";
  if (auto t = f.find("type"); t != f.end()) {
    FERRY_TRY(r.OneOf(t->second, "source.type", {"kvm", "share"}, &type));
  }
  out->type = TypeOf(type);
  auto host = f.find("host");
  if (host == f.end()) return Bad("source.host", "missing (the agent host the VMs are on)");
  FERRY_TRY(r.String(host->second, "source.host", kMaxHostChars, false, &out->host));
  auto share = f.find("share");
  if (out->type == EndpointType::kShare) {
    if (share == f.end()) return Bad("source.share", "missing (the share's name on the host)");
    FERRY_TRY(r.String(share->second, "source.share", kMaxHostChars, false, &out->share));
  } else if (share != f.end()) {
    return Bad("source.share", "only for type share");
  }
  return Status::Ok();
}

Status ReadTarget(const Reader& r, size_t node, PlanTarget* out) {
  Reader::Fields f;
  FERRY_TRY(r.Map(node, "target", {"type", "host", "share", "format"}, &f));
  std::string type = "kvm";
  if (auto t = f.find("type"); t != f.end()) {
    FERRY_TRY(r.OneOf(t->second, "target.type", {"kvm", "share"}, &type));
  }
  out->type = TypeOf(type);
  auto host = f.find("host");
  if (host == f.end()) return Bad("target.host", "missing (the agent host to move the VMs to)");
  FERRY_TRY(r.String(host->second, "target.host", kMaxHostChars, false, &out->host));
  auto share = f.find("share");
  auto format = f.find("format");
  if (out->type == EndpointType::kShare) {
    if (share == f.end()) return Bad("target.share", "missing (the share's name on the host)");
    FERRY_TRY(r.String(share->second, "target.share", kMaxHostChars, false, &out->share));
    out->format = "vhdx";
    if (format != f.end()) {
      FERRY_TRY(r.OneOf(format->second, "target.format", {"vhdx", "vhd"}, &out->format));
    }
  } else {
    if (share != f.end()) return Bad("target.share", "only for type share");
    if (format != f.end()) {
      return Bad("target.format", "only for type share (kvm targets: storage[].format)");
    }
  }
  return Status::Ok();
}

Status ReadVms(const Reader& r, size_t node, const PlanSource& source, std::vector<PlanVm>* out) {
  const Node* list = nullptr;
  FERRY_TRY(r.List(node, "vms", kMaxVms, &list));
  if (list->items.empty()) return Bad("vms", "lists no VM");
  std::map<std::string, size_t> seen_source, seen_target;
  for (size_t i = 0; i < list->items.size(); ++i) {
    const std::string path = Index("vms", i);
    Reader::Fields f;
    FERRY_TRY(r.Map(list->items[i], path, {"name", "id", "target"}, &f));
    PlanVm vm;
    auto name = f.find("name");
    auto id = f.find("id");
    if ((name == f.end()) == (id == f.end())) {
      return Bad(path, "give the VM's name or (share sources) its id, not both");
    }
    std::string key;
    if (name != f.end()) {
      FERRY_TRY(r.String(name->second, Join(path, "name"), kMaxSourceNameChars, false, &vm.name));
      key = "name " + Quote(vm.name, kMaxSourceNameChars);
    } else {
      if (source.type != EndpointType::kShare) {
        return Bad(Join(path, "id"), "only for share sources (name a KVM host's VMs by name)");
      }
      FERRY_TRY(r.String(id->second, Join(path, "id"), kMaxIdChars, false, &vm.id));
      key = "id " + Quote(vm.id, kMaxIdChars);
    }
    if (auto it = seen_source.find(key); it != seen_source.end()) {
      return Bad(path,
                 "the VM with " + key + " is listed twice (also " + Index("vms", it->second) + ")");
    }
    seen_source[key] = i;
    if (auto t = f.find("target"); t != f.end()) {
      FERRY_TRY(ReadTargetOptions(r, t->second, Join(path, "target"), true, &vm.target));
    }
    if (vm.target.name) {
      if (auto it = seen_target.find(*vm.target.name); it != seen_target.end()) {
        return Bad(Join(path, "target.name"), Quote(*vm.target.name) + " is also the name of " +
                                                  Index("vms", it->second) + "'s target");
      }
      seen_target[*vm.target.name] = i;
    }
    out->push_back(std::move(vm));
  }
  return Status::Ok();
}

Status ReadNetworks(const Reader& r, size_t node, std::vector<NetworkMapping>* out) {
  const Node* list = nullptr;
  FERRY_TRY(r.List(node, "networks", kMaxMappings, &list));
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < list->items.size(); ++i) {
    const std::string path = Index("networks", i);
    Reader::Fields f;
    FERRY_TRY(r.Map(list->items[i], path, {"source", "target"}, &f));
    NetworkMapping m;
    for (const char* key : {"source", "target"}) {
      auto it = f.find(key);
      if (it == f.end()) return Bad(Join(path, key), "missing");
      FERRY_TRY(r.String(it->second, Join(path, key), kMaxSourceNameChars, false,
                         key[0] == 's' ? &m.source : &m.target));
    }
    if (auto it = seen.find(m.source); it != seen.end()) {
      return Bad(Join(path, "source"),
                 Quote(m.source) + " is mapped twice (also " + Index("networks", it->second) + ")");
    }
    seen[m.source] = i;
    out->push_back(std::move(m));
  }
  return Status::Ok();
}

Status ReadStorage(const Reader& r, size_t node, const PlanTarget& target,
                   std::vector<StorageMapping>* out) {
  const Node* list = nullptr;
  FERRY_TRY(r.List(node, "storage", kMaxMappings, &list));
  if (target.type == EndpointType::kShare && !list->items.empty()) {
    return Bad("storage",
               "a share target takes no storage rules (its disks go into the share "
               "as target.format)");
  }
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < list->items.size(); ++i) {
    const std::string path = Index("storage", i);
    Reader::Fields f;
    FERRY_TRY(r.Map(list->items[i], path, {"source", "pool", "format"}, &f));
    StorageMapping m;
    auto source = f.find("source");
    if (source == f.end()) return Bad(Join(path, "source"), "missing (a datastore, VM/DISK or *)");
    FERRY_TRY(r.String(source->second, Join(path, "source"), kMaxIdChars, false, &m.source));
    auto pool = f.find("pool");
    if (pool == f.end()) return Bad(Join(path, "pool"), "missing (the target host's pool)");
    FERRY_TRY(r.String(pool->second, Join(path, "pool"), kMaxSourceNameChars, false, &m.pool));
    if (auto fmt = f.find("format"); fmt != f.end()) {
      FERRY_TRY(r.OneOf(fmt->second, Join(path, "format"), {"qcow2", "raw"}, &m.format));
    }
    if (auto it = seen.find(m.source); it != seen.end()) {
      return Bad(Join(path, "source"),
                 Quote(m.source) + " has a rule already (" + Index("storage", it->second) + ")");
    }
    seen[m.source] = i;
    out->push_back(std::move(m));
  }
  return Status::Ok();
}

Status ReadOptions(const Reader& r, size_t node, MigrationOptions* out) {
  Reader::Fields f;
  FERRY_TRY(r.Map(node, "options",
                  {"start", "shutdown_source", "shutdown_timeout", "force_shutdown", "deploy",
                   "priority", "verify", "verify_hash", "checkpoint_interval"},
                  &f));
  for (const auto& [key, value] : f) {
    const std::string p = Join("options", key);
    if (key == "start") {
      const Node& n = r.At(value);
      std::string s;
      Status st = r.String(value, p, 64, false, &s);
      if (st.ok() && s == "now") {
        out->start = StartMode::kNow;
      } else if (st.ok() && s == "later") {
        out->start = StartMode::kLater;
      } else if (auto at = st.ok() ? ParseRfc3339(s) : std::nullopt) {
        out->start = StartMode::kAt;
        out->start_at_ms = *at;
      } else {
        return Bad(p,
                   "expected now, later or an RFC 3339 time such as 2026-12-03T22:00:00Z, "
                   "got " +
                       Describe(n));
      }
    } else if (key == "shutdown_source") {
      FERRY_TRY(r.Bool(value, p, &out->shutdown_source));
    } else if (key == "force_shutdown") {
      FERRY_TRY(r.Bool(value, p, &out->force_shutdown));
    } else if (key == "verify") {
      FERRY_TRY(r.Verify(value, p, &out->verify));
    } else if (key == "verify_hash") {
      std::string v;
      FERRY_TRY(r.OneOf(value, p, {"xxh3-128", "sha256"}, &v));
      ChunkHashAlgorithmFromName(v, &out->verify_hash);
    } else if (key == "shutdown_timeout") {
      FERRY_TRY(r.Duration(value, p, 0, kMaxDurationMs, &out->shutdown_timeout_ms));
    } else if (key == "deploy") {
      std::string v;
      FERRY_TRY(r.OneOf(value, p, {"auto", "manual"}, &v));
      out->deploy = v == "manual" ? DeployMode::kManual : DeployMode::kAuto;
    } else if (key == "priority") {
      int64_t v;
      FERRY_TRY(r.Integer(value, p, -kMaxPriority, kMaxPriority, &v));
      out->priority = static_cast<int>(v);
    } else if (key == "checkpoint_interval") {
      FERRY_TRY(r.Size(value, p, kMinCheckpoint, kMaxCheckpoint, &out->checkpoint_bytes));
    }
  }
  return Status::Ok();
}

Status ReadDocument(const Tree& t, PlanDocument* p) {
  Reader r(t);
  Reader::Fields f;
  if (r.At(t.root).kind != Kind::kMap) {
    return Bad("plan", "expected a mapping (name, source, target, vms, ...), got " +
                           Describe(r.At(t.root)));
  }
  FERRY_TRY(r.Map(t.root, "",
                  {"name", "source", "target", "vms", "networks", "preserve_mac", "target_defaults",
                   "storage", "options"},
                  &f));
  for (const char* key : {"name", "source", "target", "vms"}) {
    if (f.find(key) == f.end()) return Bad(key, "missing");
  }
  FERRY_TRY(r.Name(f["name"], "name", true, &p->name));
  FERRY_TRY(ReadSource(r, f["source"], &p->source));
  FERRY_TRY(ReadTarget(r, f["target"], &p->target));
  FERRY_TRY(ReadVms(r, f["vms"], p->source, &p->vms));
  if (auto it = f.find("networks"); it != f.end()) {
    FERRY_TRY(ReadNetworks(r, it->second, &p->networks));
  }
  if (auto it = f.find("preserve_mac"); it != f.end()) {
    FERRY_TRY(r.Bool(it->second, "preserve_mac", &p->preserve_mac));
  }
  if (auto it = f.find("target_defaults"); it != f.end()) {
    if (r.At(it->second).kind != Kind::kMap) {
      return Bad("target_defaults", "expected a mapping, got " + Describe(r.At(it->second)));
    }
    FERRY_TRY(ReadTargetOptions(r, it->second, "target_defaults", false, &p->defaults));
  }
  if (auto it = f.find("storage"); it != f.end()) {
    FERRY_TRY(ReadStorage(r, it->second, p->target, &p->storage));
  }
  if (auto it = f.find("options"); it != f.end()) {
    FERRY_TRY(ReadOptions(r, it->second, &p->options));
  }
  return Status::Ok();
}

// --- Canonical JSON -----------------------------------------------------------------------

using OrderedJson = nlohmann::ordered_json;

OrderedJson TargetOptionsJson(const TargetOptions& o) {
  OrderedJson j = OrderedJson::object();
  if (o.name) j["name"] = *o.name;
  if (o.vcpus) j["vcpus"] = *o.vcpus;
  if (o.memory_bytes) j["memory"] = *o.memory_bytes;
  if (o.disk_bus) j["disk_bus"] = *o.disk_bus;
  if (o.machine) j["machine"] = *o.machine;
  if (o.firmware) j["firmware"] = *o.firmware;
  if (o.start) j["start"] = *o.start;
  if (o.delete_disks_with_vm) j["delete_disks_with_vm"] = *o.delete_disks_with_vm;
  if (o.boot_check) {
    j["boot_check"] = {{"marker", o.boot_check->marker}, {"timeout", o.boot_check->timeout_ms}};
  }
  if (o.preserve_mac) j["preserve_mac"] = *o.preserve_mac;
  return j;
}

std::string_view TypeName(EndpointType t) { return t == EndpointType::kShare ? "share" : "kvm"; }

}  // namespace

Result<PlanDocument> ParsePlan(std::string_view text) {
  FERRY_ASSIGN_OR_RETURN(Tree tree, ParseTree(text));
  PlanDocument plan;
  FERRY_TRY(ReadDocument(tree, &plan));
  return plan;
}

std::string PlanToJson(const PlanDocument& plan) {
  OrderedJson j = OrderedJson::object();
  j["name"] = plan.name;
  OrderedJson source = {{"type", TypeName(plan.source.type)}, {"host", plan.source.host}};
  if (plan.source.type == EndpointType::kShare) source["share"] = plan.source.share;
  j["source"] = source;
  OrderedJson target = {{"type", TypeName(plan.target.type)}, {"host", plan.target.host}};
  if (plan.target.type == EndpointType::kShare) {
    target["share"] = plan.target.share;
    target["format"] = plan.target.format;
  }
  j["target"] = target;
  OrderedJson vms = OrderedJson::array();
  for (const PlanVm& vm : plan.vms) {
    OrderedJson v = OrderedJson::object();
    if (!vm.id.empty()) {
      v["id"] = vm.id;
    } else {
      v["name"] = vm.name;
    }
    OrderedJson t = TargetOptionsJson(vm.target);
    if (!t.empty()) v["target"] = t;
    vms.push_back(v);
  }
  j["vms"] = vms;
  OrderedJson networks = OrderedJson::array();
  for (const NetworkMapping& n : plan.networks) {
    networks.push_back({{"source", n.source}, {"target", n.target}});
  }
  j["networks"] = networks;
  j["preserve_mac"] = plan.preserve_mac;
  j["target_defaults"] = TargetOptionsJson(plan.defaults);
  OrderedJson storage = OrderedJson::array();
  for (const StorageMapping& s : plan.storage) {
    OrderedJson rule = {{"source", s.source}, {"pool", s.pool}};
    if (!s.format.empty()) rule["format"] = s.format;
    storage.push_back(rule);
  }
  j["storage"] = storage;
  const MigrationOptions& o = plan.options;
  OrderedJson options = OrderedJson::object();
  options["start"] = o.start == StartMode::kNow     ? "now"
                     : o.start == StartMode::kLater ? "later"
                                                    : FormatRfc3339(o.start_at_ms);
  options["shutdown_source"] = o.shutdown_source;
  options["shutdown_timeout"] = o.shutdown_timeout_ms;
  options["force_shutdown"] = o.force_shutdown;
  options["deploy"] = o.deploy == DeployMode::kManual ? "manual" : "auto";
  options["priority"] = o.priority;
  options["verify"] = std::string(VerifyModeName(o.verify));
  options["verify_hash"] = std::string(ChunkHashAlgorithmName(o.verify_hash));
  options["checkpoint_interval"] = o.checkpoint_bytes;
  j["options"] = options;
  return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

}  // namespace ferry::plan
