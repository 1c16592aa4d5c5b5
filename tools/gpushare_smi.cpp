// gpushare-smi: the node as the broker sees it (GPUs, clients, their shares and caps),
// as a table for people or as JSON for scripts; and what was used and what it costs
// (`usage`, `bill`: the broker's meter, docs/metering.md). It asks the broker once over
// its socket (protocol::Type::kStatus, kUsage) and prints the reply; it keeps no state.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/base/socket_path.h"
#include "common/base/units.h"
#include "common/base/version.h"
#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"

namespace {

// ordered_json: --json keeps the order the broker wrote (gpus before clients).
using json = nlohmann::ordered_json;
namespace proto = gpushare::protocol;

constexpr int kReplyTimeoutMs = 5000;

const char kUsage[] =
    "usage: gpushare-smi [--socket PATH] [--json]\n"
    "       gpushare-smi [--socket PATH] --explain PID\n"
    "       gpushare-smi [--socket PATH] set-weight (--pid PID | --tenant TENANT) WEIGHT\n"
    "       gpushare-smi [--socket PATH] vgpu [-i GPU] [--json]\n"
    "       gpushare-smi [--socket PATH] usage [--tenant T] [--since DATE] [--until DATE]\n"
    "                                          [--by session|tenant|day] [--json|--csv]\n"
    "       gpushare-smi [--socket PATH] bill --period YYYY-MM [--tenant T] [--json|--csv]\n"
    "       gpushare-smi --cluster [--socket PATH] [--json | usage ... | bill ...]\n"
    "Shows the GPUs and the clients of the gpushare broker on this node, or changes a\n"
    "client's (or every client of a tenant's) scheduling weight until the broker's config\n"
    "is reloaded (root or the broker's own user only); or what was used (usage, dates\n"
    "YYYY-MM-DD in UTC, both days included) and its bill for a month, by the formula\n"
    "rate x fraction x duration and by measured GPU time (root and the broker's user see\n"
    "every tenant, a tenant's listed uids that tenant).\n"
    "  --socket PATH  the broker's socket (default: $GPUSHARE_SOCKET, else\n"
    "                 $XDG_RUNTIME_DIR/gpushare/broker.sock, else /run/gpushare/broker.sock)\n"
    "  --json         print the broker's status as JSON\n"
    "  --explain PID  why the client PID landed on its GPUs (the placement's reasoning)\n"
    "  --cluster      ask the cluster's leading gpushare-manager instead (docs/cluster.md):\n"
    "                 every node, tenant quotas across nodes, usage and bills of all nodes;\n"
    "                 its socket: $GPUSHARE_MANAGER_SOCKET, else\n"
    "                 $XDG_RUNTIME_DIR/gpushare/manager.sock, else /run/gpushare/manager.sock\n"
    "  vgpu           the vGPU inventory: per GPU, each profile's instances allocated /\n"
    "                 total (reserved) and who holds them, and the node's pool; -i GPU: that\n"
    "                 GPU only; --json: the broker's \"vgpu\" object (docs/configuration.md)\n"
    "  -h, --help     this text\n"
    "  --version      the version\n";

// Readers that take whatever a newer or older broker sends: a missing key or one of
// another type gives the default, never an exception.
std::string Str(const json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}
double Num(const json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}
uint64_t Bytes(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  const double d = it->get<double>();
  return d > 0 ? static_cast<uint64_t>(d) : 0;
}
bool Bool(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}
const json& Array(const json& j, const char* key) {
  static const json kEmpty = json::array();
  auto it = j.find(key);
  return it != j.end() && it->is_array() ? *it : kEmpty;
}

std::string Printf(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// Left-aligned columns, two blanks apart, each as wide as its widest cell.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], row[c].size());
    }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

void PrintHuman(const json& status, const std::string& socket_path) {
  std::printf("gpushare broker at %s\n\n", socket_path.c_str());
  std::vector<std::vector<std::string>> gpus = {{"GPU", "NAME", "MEMORY USED / TOTAL", "USED"}};
  for (const json& g : Array(status, "gpus")) {
    if (!g.is_object()) continue;
    const uint64_t used = Bytes(g, "memory_used"), total = Bytes(g, "memory_total");
    gpus.push_back(
        {Printf("%.0f", Num(g, "index", -1)), OrDash(Str(g, "name")),
         gpushare::FormatBytes(used) + " / " + gpushare::FormatBytes(total),
         total > 0 ? Printf("%.0f%%", 100.0 * static_cast<double>(used) / static_cast<double>(total)) : "-"});
  }
  PrintTable(gpus);

  std::printf("\n");
  const json& clients = Array(status, "clients");
  // Other tenants' clients are not shown to an unprivileged user (docs/threat-model.md).
  const double hidden = Num(status, "hidden_clients", 0);
  if (hidden > 0) std::printf("%.0f client(s) of other tenants not shown.\n", hidden);
  if (clients.empty()) {
    std::printf("No clients%s.\n", hidden > 0 ? " of yours" : "");
    return;
  }
  // The share is per GPU (a client's weight over the weights of all clients on that
  // GPU), so it goes on each device line; gpu_share stands in when a device lacks it.
  std::vector<std::vector<std::string>> rows = {
      {"PID", "TENANT", "JOB", "RANK", "WEIGHT", "CLASS", "PROFILE", "GPU V->P", "SHARE", "MEMORY USED / CAP", "CUS"}};
  for (const json& c : clients) {
    if (!c.is_object()) continue;
    const double rank = Num(c, "rank", -1), gpu_share = Num(c, "gpu_share", 0);
    // Its vGPU instance's profile, with its ceiling when it has one.
    std::string profile = c.contains("instance") && c["instance"].is_object() ? Str(c["instance"], "profile") : "";
    if (c.contains("max_compute") && c["max_compute"].is_number())
      profile += (profile.empty() ? "" : " ") + Printf("(max %.2f)", Num(c, "max_compute", 1));
    const std::vector<std::string> client = {Printf("%.0f", Num(c, "pid", 0)),
                                             OrDash(Str(c, "tenant")),
                                             OrDash(Str(c, "job")),
                                             rank < 0 ? "-" : Printf("%.0f", rank),
                                             Printf("%g", Num(c, "weight", 1)),
                                             OrDash(Str(c, "class")),
                                             OrDash(profile)};
    // One line per virtual GPU; the client's own columns only on the first.
    bool first = true;
    for (const json& d : Array(c, "devices")) {
      if (!d.is_object()) continue;
      std::vector<std::string> row = first ? client : std::vector<std::string>(client.size(), "");
      row.push_back(Printf("%.0f", Num(d, "virtual", -1)) + "->" + Printf("%.0f", Num(d, "physical", -1)));
      row.push_back(Printf("%.0f%%", 100.0 * Num(d, "share", gpu_share)));
      row.push_back(gpushare::FormatBytes(Bytes(d, "memory_used")) + " / " +
                    gpushare::FormatBytes(Bytes(d, "memory_cap")) + (Bool(d, "capped", true) ? "" : " (no cap)"));
      // Spatial sharing: the compute units a CU mask holds it to (AMD), or its MPS share
      // of the SMs (NVIDIA), else all ("-").
      const std::string mask = Str(d, "cu_mask");
      const double mps_percent = Num(d, "mps_percent", 0);
      row.push_back(!mask.empty()      ? Printf("%.0f", Num(d, "cu_count", 0)) + " (" + mask + ")"
                    : mps_percent > 0 ? Printf("MPS %.0f%%", mps_percent)
                                      : "-");
      rows.push_back(row);
      first = false;
    }
    if (first) {
      std::vector<std::string> row = client;
      row.insert(row.end(), {"-", Printf("%.0f%%", 100.0 * gpu_share), "-", "-"});
      rows.push_back(row);
    }
  }
  PrintTable(rows);

  // Why each client is of its class (the classifier's evidence).
  std::vector<std::vector<std::string>> why = {{"PID", "CLASS", "WHY"}};
  for (const json& c : clients)
    if (c.is_object())
      why.push_back({Printf("%.0f", Num(c, "pid", 0)), OrDash(Str(c, "class")), OrDash(Str(c, "class_why"))});
  std::printf("\n");
  PrintTable(why);

  // Collective communicators (NCCL/RCCL) and where their ranks run.
  const json& comms = Array(status, "communicators");
  if (comms.empty()) return;
  std::vector<std::vector<std::string>> table = {{"COMMUNICATOR", "TENANT", "RANKS", "RANK: PID GPU V->P", "WARNING"}};
  for (const json& c : comms) {
    if (!c.is_object()) continue;
    std::string members;
    for (const json& m : Array(c, "members"))
      if (m.is_object())
        members += (members.empty() ? "" : ", ") + Printf("%.0f", Num(m, "rank", -1)) + ": " +
                   Printf("%.0f", Num(m, "pid", 0)) + " " + Printf("%.0f", Num(m, "virtual", -1)) + "->" +
                   Printf("%.0f", Num(m, "physical", -1));
    table.push_back(
        {OrDash(Str(c, "id")), OrDash(Str(c, "tenant")),
         Printf("%.0f", static_cast<double>(Array(c, "members").size())) + "/" + Printf("%.0f", Num(c, "nranks", 0)),
         OrDash(members), OrDash(Str(c, "warning"))});
  }
  std::printf("\n");
  PrintTable(table);
}

// `--explain PID`: the placement's reasoning for that client, as the broker kept it.
int Explain(const json& status, long pid) {
  for (const json& c : Array(status, "clients")) {
    if (!c.is_object() || static_cast<long>(Num(c, "pid", -1)) != pid) continue;
    std::printf("pid %ld (tenant \"%s\"%s): virtual -> physical", pid, Str(c, "tenant").c_str(),
                Str(c, "job").empty() ? "" : (", job \"" + Str(c, "job") + "\"").c_str());
    for (const json& d : Array(c, "devices"))
      if (d.is_object()) std::printf(" %.0f->%.0f", Num(d, "virtual", -1), Num(d, "physical", -1));
    std::printf("\n");
    for (const json& line : Array(c, "placement"))
      if (line.is_string()) std::printf("  %s\n", line.get<std::string>().c_str());
    const std::string topology = Str(status, "topology");
    if (!topology.empty()) std::printf("\nTopology:\n%s", topology.c_str());
    return 0;
  }
  std::fprintf(stderr, "gpushare-smi: no client with pid %ld is registered with the broker\n", pid);
  return 1;
}

// `vgpu [-i GPU]`: the inventory as nvidia-smi vgpu lays it out, per GPU and profile,
// then the node's pool; `--json` prints the broker's "vgpu" object (GPU filtered).
int PrintVgpu(const json& status, std::optional<int> only, bool as_json) {
  auto it = status.find("vgpu");
  if (it == status.end() || !it->is_object()) {
    std::fprintf(stderr, "gpushare-smi: this broker reports no vGPU inventory (it predates profiles)\n");
    return 1;
  }
  json vgpu = *it;
  if (only) {
    json kept = json::array();
    for (const json& g : Array(vgpu, "gpus"))
      if (g.is_object() && static_cast<int>(Num(g, "index", -1)) == *only) kept.push_back(g);
    if (kept.empty()) {
      std::fprintf(stderr, "gpushare-smi: vgpu: no GPU %d on this node\n", *only);
      return 1;
    }
    vgpu["gpus"] = kept;
  }
  if (as_json) {
    std::printf("%s\n", vgpu.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  const json& profiles = Array(vgpu, "profiles");
  if (profiles.empty()) {
    std::printf("No vGPU profiles in the broker's config.\n");
    return 0;
  }
  std::map<std::string, const json*> by_name;
  for (const json& p : profiles)
    if (p.is_object()) by_name[Str(p, "name")] = &p;
  const json& gpus = Array(status, "gpus");
  for (const json& g : Array(vgpu, "gpus")) {
    if (!g.is_object()) continue;
    const int index = static_cast<int>(Num(g, "index", -1));
    std::string name;
    uint64_t total_bytes = 0;
    for (const json& info : gpus)
      if (info.is_object() && static_cast<int>(Num(info, "index", -2)) == index) {
        name = Str(info, "name");
        total_bytes = Bytes(info, "memory_total");
      }
    std::printf("GPU %d: %s (%s)\n", index, OrDash(name).c_str(), gpushare::FormatBytes(total_bytes).c_str());
    for (const json& row : Array(g, "profiles")) {
      if (!row.is_object()) continue;
      const std::string profile = Str(row, "name");
      const json* p = by_name.count(profile) ? by_name[profile] : nullptr;
      std::string shape;
      if (p != nullptr) {
        shape = gpushare::FormatBytes(Bytes(*p, "memory_bytes")) + ", compute " + Printf("%.2f", Num(*p, "compute", 0));
        if (p->contains("max_compute") && (*p)["max_compute"].is_number())
          shape += ", max " + Printf("%.2f", Num(*p, "max_compute", 1));
      }
      std::printf("    Profile %s (%s)  VGPUs: %.0f/%.0f allocated (%.0f reserved for system), %.0f available\n",
                  profile.c_str(), shape.c_str(), Num(row, "allocated", 0), Num(row, "total", 0),
                  Num(row, "reserved", 0), Num(row, "available", 0));
      for (const json& h : Array(row, "holders"))
        if (h.is_object())
          std::printf("        pid %.0f  tenant %s\n", Num(h, "pid", 0), OrDash(Str(h, "tenant")).c_str());
    }
  }
  std::printf("\n");
  for (const json& line : Array(vgpu, "pool")) {
    if (!line.is_object()) continue;
    const double n = Num(line, "gpus", 0);
    std::printf("Node pool: %.0f GPU%s -> %.0f x %s, %.0f allocated, %.0f reserved, %.0f available\n", n,
                n == 1 ? "" : "s", Num(line, "total", 0), Str(line, "profile").c_str(), Num(line, "allocated", 0),
                Num(line, "reserved", 0), Num(line, "available", 0));
  }
  return 0;
}

// One request, one reply, over a fresh connection; `reached` false: no broker there.
std::optional<proto::Message> Ask(const std::string& socket_path, const std::vector<uint8_t>& request,
                                  std::string* error, bool* reached) {
  const int fd = proto::ConnectUnix(socket_path, error);
  *reached = fd >= 0;
  if (fd < 0) return std::nullopt;
  std::vector<uint8_t> buffer;
  std::optional<proto::Message> reply;
  if (proto::SendAll(fd, request))
    reply = proto::Receive(fd, &buffer, kReplyTimeoutMs, error);
  else
    *error = "cannot send the request";
  close(fd);
  return reply;
}

// set-weight (--pid PID | --tenant TENANT) WEIGHT: 0 done, 1 refused or no broker, 2 usage.
int SetWeight(const std::vector<std::string>& args, const std::string& socket_path) {
  proto::SetWeight request{};
  std::optional<double> weight;
  bool target = false;
  for (size_t i = 0; i < args.size(); ++i) {
    char* end = nullptr;
    if (args[i] == "--pid" && i + 1 < args.size()) {
      const long pid = std::strtol(args[++i].c_str(), &end, 10);
      if (*end != '\0' || pid <= 0 || pid > INT32_MAX) {
        std::fprintf(stderr, "gpushare-smi: set-weight: --pid needs a process id, not \"%s\"\n", args[i].c_str());
        return 2;
      }
      request.pid = static_cast<int32_t>(pid);
      target = true;
    } else if (args[i] == "--tenant" && i + 1 < args.size()) {
      proto::SetString(request.tenant, args[++i]);
      target = true;
    } else if (!weight) {
      const double w = std::strtod(args[i].c_str(), &end);
      if (*end != '\0' || !(w >= proto::kMinWeight && w <= proto::kMaxWeight)) {
        std::fprintf(stderr, "gpushare-smi: set-weight: a weight is a number from 0.001 to 1000, not \"%s\"\n",
                     args[i].c_str());
        return 2;
      }
      weight = w;
    } else {
      std::fprintf(stderr, "gpushare-smi: set-weight: unexpected argument %s\n%s", args[i].c_str(), kUsage);
      return 2;
    }
  }
  if (!target || !weight) {
    std::fprintf(stderr, "gpushare-smi: set-weight needs --pid PID or --tenant TENANT, and a WEIGHT\n%s", kUsage);
    return 2;
  }
  request.weight = *weight;
  std::string error;
  bool reached = false;
  auto reply = Ask(socket_path, proto::Encode(proto::Type::kSetWeight, request), &error, &reached);
  if (!reply || reply->type != proto::Type::kToolReply) {
    std::fprintf(stderr, "gpushare-smi: %s the broker at %s: %s\n", reached ? "no answer from" : "cannot reach",
                 socket_path.c_str(), reply ? "unexpected reply" : error.c_str());
    return 1;
  }
  const std::string text(reply->payload.begin(), reply->payload.end());
  std::printf("%s\n", text.c_str());
  return text.rfind("ok", 0) == 0 ? 0 : 1;
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}
std::string Count(const json& j, const char* key) { return std::to_string(Bytes(j, key)); }

// A table for people, or CSV (a header line, then one line per row; cells with a comma
// or a quote quoted).
void PrintRows(const std::vector<std::vector<std::string>>& rows, bool csv) {
  if (!csv) {
    PrintTable(rows);
    return;
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      std::string cell = row[c];
      if (cell.find_first_of(",\"\n") != std::string::npos) {
        std::string quoted = "\"";
        for (char ch : cell) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
        cell = quoted + "\"";
      }
      line += (c == 0 ? "" : ",") + cell;
    }
    std::printf("%s\n", line.c_str());
  }
}

void PrintUsage(const json& r, bool csv) {
  const std::string by = Str(r, "by", "session");
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head;
  if (by == "session") head = {"SESSION", "TENANT", "PID", "JOB", "PROFILE", "GPUS", "START", "END"};
  if (by == "tenant") head = {"TENANT", "SESSIONS"};
  if (by == "day") head = {"DAY", "TENANT", "SESSIONS"};
  for (const char* h : {"DURATION_S", "FRACTION", "GPU_TIME_S", "MEMORY_GIB_H", "LAUNCHES", "COPIES", "COPIED_BYTES"})
    head.push_back(h);
  rows.push_back(head);
  for (const json& l : Array(r, "lines")) {
    if (!l.is_object()) continue;
    std::vector<std::string> row;
    if (by == "session")
      row = {Str(l, "key"),         Str(l, "tenant"),          Count(l, "pid"),
             OrDash(Str(l, "job")), OrDash(Str(l, "profile")), OrDash(Str(l, "gpus")),
             Str(l, "start"),       Str(l, "end", "open")};
    if (by == "tenant") row = {Str(l, "key"), Count(l, "sessions")};
    if (by == "day") row = {Str(l, "key"), Str(l, "tenant"), Count(l, "sessions")};
    for (const std::string& cell :
         {Fixed(Num(l, "wall_s", 0), 3), Fixed(Num(l, "fraction", 0), 4), Fixed(Num(l, "gpu_s", 0), 3),
          Fixed(Num(l, "memory_gib_h", 0), 6), Count(l, "launches"), Count(l, "copies"), Count(l, "copy_bytes")})
      row.push_back(cell);
    rows.push_back(row);
  }
  if (!csv) {
    const std::string since = Str(r, "since");
    const bool from_start = since == "1970-01-01";  // no --since
    std::printf("Usage from %s to %s (UTC), by %s\n\n", from_start ? "the first record" : since.c_str(),
                Str(r, "until").c_str(), by.c_str());
  }
  if (!csv && rows.size() == 1) {
    std::printf("No usage.\n");
    return;
  }
  PrintRows(rows, csv);
}

void PrintBill(const json& r, bool csv) {
  const std::string currency = Str(r, "currency");
  std::vector<std::vector<std::string>> rows = {{"TENANT", "PROFILE", "RATE", "SESSIONS", "DURATION_H", "FRACTION",
                                                 "ALLOTTED_GPU_H", "BY_FORMULA", "GPU_TIME_H", "BY_GPU_TIME"}};
  for (const json& l : Array(r, "lines")) {
    if (!l.is_object()) continue;
    rows.push_back({Str(l, "tenant"), OrDash(Str(l, "profile")), Str(l, "rate"), Count(l, "sessions"),
                    Fixed(Num(l, "duration_h", 0), 4), Fixed(Num(l, "fraction", 0), 4),
                    Fixed(Num(l, "allotted_gpu_h", 0), 4), Str(l, "formula"), Fixed(Num(l, "gpu_h", 0), 4),
                    Str(l, "measured")});
  }
  const json total = r.contains("total") && r["total"].is_object() ? r["total"] : json::object();
  rows.push_back({"TOTAL", "", "", "", "", "", "", Str(total, "formula", "0"), "", Str(total, "measured", "0")});
  if (!csv)
    std::printf(
        "Bill for %s in %s: rate per GPU per %s; by formula = rate x fraction x duration,\n"
        "by GPU time = rate x measured GPU time\n\n",
        Str(r, "period").c_str(), currency.c_str(), Str(r, "per", "hour").c_str());
  PrintRows(rows, csv);
}

// The cluster view of the leading manager (docs/cluster.md): nodes, then tenants' quotas.
void PrintCluster(const json& view, const std::string& socket_path) {
  std::printf("Cluster %s, manager %s (leader), asked at %s\n", Str(view, "cluster").c_str(),
              Str(view, "leader").c_str(), socket_path.c_str());
  std::vector<std::vector<std::string>> nodes = {{"NODE", "HEALTH", "VERSION", "GPUS", "MEMORY USED", "PROMISED",
                                                  "CLIENTS", "FREE INSTANCES"}};
  for (const json& n : Array(view, "nodes")) {
    uint64_t total = 0, used = 0, promised = 0;
    for (const json& g : Array(n, "gpus")) {
      total += Bytes(g, "memory_total");
      used += Bytes(g, "memory_used");
      promised += Bytes(g, "memory_promised");
    }
    std::string free;
    if (auto f = n.find("free_instances"); f != n.end() && f->is_object())
      for (const auto& [profile, count] : f->items())
        free += (free.empty() ? "" : " ") + profile + ":" + (count.is_number() ? count.dump() : "?");
    nodes.push_back({Str(n, "name"), Str(n, "health"), Str(n, "version"),
                     Printf("%.0f", static_cast<double>(Array(n, "gpus").size())),
                     gpushare::FormatBytes(used) + " / " + gpushare::FormatBytes(total), gpushare::FormatBytes(promised),
                     Printf("%.0f", Num(n, "clients", 0)), OrDash(free)});
  }
  PrintTable(nodes);
  std::vector<std::vector<std::string>> tenants = {{"TENANT", "INSTANCES", "MAX", "MEMORY", "MAX MEMORY", "BY NODE"}};
  for (const json& t : Array(view, "tenants")) {
    std::string by;
    if (auto b = t.find("by_node"); b != t.end() && b->is_object())
      for (const auto& [node, a] : b->items())
        by += (by.empty() ? "" : " ") + node + ":" + Printf("%.0f", Num(a, "instances", 0));
    const auto limit = [&](const char* key, bool bytes) {
      auto it = t.find(key);
      if (it == t.end() || !it->is_number()) return std::string("-");
      return bytes ? gpushare::FormatBytes(it->get<uint64_t>()) : it->dump();
    };
    tenants.push_back({Str(t, "tenant"), Printf("%.0f", Num(t, "instances", 0)), limit("max_instances", false),
                       gpushare::FormatBytes(Bytes(t, "memory")), limit("max_memory", true), OrDash(by)});
  }
  if (tenants.size() > 1) {
    std::printf("\nCluster quotas:\n");
    PrintTable(tenants);
  }
  for (const json& m : Array(view, "malformed"))
    std::printf("warning: %s: malformed, ignored (%s)\n", Str(m, "znode").c_str(), Str(m, "error").c_str());
}

// usage [...] / bill [...]: 0 printed, 1 refused or no broker, 2 usage error.
int UsageOrBill(const std::string& what, const std::vector<std::string>& args, const std::string& socket_path) {
  json request = {{"what", what}};
  bool as_json = false, csv = false;
  const std::vector<std::string> keys = what == "usage" ? std::vector<std::string>{"tenant", "since", "until", "by"}
                                                        : std::vector<std::string>{"tenant", "period"};
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--json") {
      as_json = true;
    } else if (a == "--csv") {
      csv = true;
    } else if (a.rfind("--", 0) == 0 && std::find(keys.begin(), keys.end(), a.substr(2)) != keys.end() &&
               i + 1 < args.size()) {
      request[a.substr(2)] = args[++i];
    } else {
      std::fprintf(stderr, "gpushare-smi: %s: unexpected argument %s\n%s", what.c_str(), a.c_str(), kUsage);
      return 2;
    }
  }
  if (what == "bill" && !request.contains("period")) {
    std::fprintf(stderr, "gpushare-smi: bill needs --period YYYY-MM\n%s", kUsage);
    return 2;
  }
  std::string error;
  bool reached = false;
  auto reply = Ask(socket_path, proto::EncodeText(proto::Type::kUsage, request.dump()), &error, &reached);
  if (!reply || reply->type != proto::Type::kUsageReply) {
    std::fprintf(stderr, "gpushare-smi: %s the broker at %s: %s\n", reached ? "no answer from" : "cannot reach",
                 socket_path.c_str(), reply ? "unexpected reply" : error.c_str());
    return 1;
  }
  const json r = json::parse(reply->payload.begin(), reply->payload.end(), nullptr, false);
  if (r.is_discarded() || !r.is_object()) {
    std::fprintf(stderr, "gpushare-smi: the broker at %s sent a reply that is not a JSON object\n",
                 socket_path.c_str());
    return 1;
  }
  if (r.contains("error")) {
    std::fprintf(stderr, "gpushare-smi: %s: %s\n", what.c_str(), Str(r, "error").c_str());
    return 1;
  }
  if (as_json)
    std::printf("%s\n", r.dump(2, ' ', false, json::error_handler_t::replace).c_str());
  else if (what == "usage")
    PrintUsage(r, csv);
  else
    PrintBill(r, csv);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  bool as_json = false;
  std::optional<long> explain;
  std::optional<std::vector<std::string>> sub_args;
  std::string command;  // set-weight, usage or bill, with sub_args its arguments
  bool vgpu = false;
  bool cluster = false;
  std::optional<int> vgpu_gpu;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (vgpu && arg == "-i") {
      char* end = nullptr;
      const long g = i + 1 < argc ? std::strtol(argv[i + 1], &end, 10) : -1;
      if (i + 1 >= argc || *argv[i + 1] == '\0' || *end != '\0' || g < 0 || g > 1023) {
        std::fprintf(stderr, "gpushare-smi: vgpu -i needs a GPU index\n%s", kUsage);
        return 2;
      }
      vgpu_gpu = static_cast<int>(g);
      ++i;
    } else if (!sub_args && !vgpu && arg == "vgpu") {
      vgpu = true;
    } else if (sub_args) {
      if (arg == "--socket" && i + 1 < argc)
        socket_path = argv[++i];
      else if (arg == "--cluster" && command != "set-weight")
        cluster = true;
      else
        sub_args->push_back(arg);
    } else if (!vgpu && (arg == "set-weight" || arg == "usage" || arg == "bill")) {
      command = arg;
      sub_args.emplace();
    } else if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--version") {
      gpushare::PrintVersion("gpushare-smi");
      return 0;
    } else if (arg == "--json") {
      as_json = true;
    } else if (arg == "--cluster") {
      cluster = true;
    } else if (arg == "--explain" && i + 1 < argc) {
      char* end = nullptr;
      const long pid = std::strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || pid <= 0) {
        std::fprintf(stderr, "gpushare-smi: --explain needs a process id, got '%s'\n%s", argv[i], kUsage);
        return 2;
      }
      explain = pid;
    } else if (arg == "--socket" && i + 1 < argc) {
      socket_path = argv[++i];
    } else if (arg.rfind("--socket=", 0) == 0) {
      socket_path = arg.substr(std::strlen("--socket="));
    } else {
      std::fprintf(stderr, "gpushare-smi: %s\n%s",
                   arg == "--socket"    ? "--socket needs a path"
                   : arg == "--explain" ? "--explain needs a process id"
                                        : ("unknown argument " + arg).c_str(),
                   kUsage);
      return 2;
    }
  }
  if (cluster && (command == "set-weight" || vgpu || explain)) {
    std::fprintf(stderr, "gpushare-smi: --cluster shows the view, usage and bills; set-weight, vgpu and --explain "
                         "ask one node's broker\n%s", kUsage);
    return 2;
  }
  if (socket_path.empty()) socket_path = cluster ? gpushare::DefaultManagerSocketPath() : gpushare::DefaultClientSocketPath();
  if (command == "set-weight") return SetWeight(*sub_args, socket_path);
  if (!command.empty()) return UsageOrBill(command, *sub_args, socket_path);

  std::string error;
  bool reached = false;
  auto reply = Ask(socket_path, proto::EncodeText(proto::Type::kStatus, ""), &error, &reached);
  if (!reached) {
    std::fprintf(stderr, "gpushare-smi: cannot reach the broker at %s: %s\n", socket_path.c_str(), error.c_str());
    return 1;
  }
  if (!reply || reply->type != proto::Type::kStatusReply) {
    std::fprintf(stderr, "gpushare-smi: no status from the broker at %s: %s\n", socket_path.c_str(),
                 reply ? "unexpected reply" : error.c_str());
    return 1;
  }
  const json status = json::parse(reply->payload.begin(), reply->payload.end(), nullptr, false);
  if (status.is_discarded() || !status.is_object()) {
    std::fprintf(stderr, "gpushare-smi: the broker at %s sent a status that is not a JSON object\n",
                 socket_path.c_str());
    return 1;
  }
  if (cluster && status.contains("error")) {
    std::fprintf(stderr, "gpushare-smi: the manager at %s: %s\n", socket_path.c_str(), Str(status, "error").c_str());
    return 1;
  }
  if (explain) return Explain(status, *explain);
  if (vgpu) return PrintVgpu(status, vgpu_gpu, as_json);
  if (as_json)
    std::printf("%s\n", status.dump(2, ' ', false, json::error_handler_t::replace).c_str());
  else if (cluster)
    PrintCluster(status, socket_path);
  else
    PrintHuman(status, socket_path);
  return 0;
}
