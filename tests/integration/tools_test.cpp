// The user tools as users run them: gpushare-run composes the environment and
// LD_PRELOAD and execs, with exit 2 for bad arguments, 1 for a missing shim, 127 for a
// command that cannot run; gpushare-smi prints a broker's status (here a stand-in
// broker that answers one status request) and fails clearly when none is reachable.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "common/protocol/protocol.h"
#include "common/protocol/socket_io.h"
#include "subprocess.h"

namespace {

using testing_support::RunToEnd;
namespace proto = gpushare::protocol;

std::string Shim() { return std::filesystem::canonical(GPUSHARE_LIB).string(); }

// The line "NAME=..." of `env` output, or "" when absent.
std::string EnvLine(const std::string& out, const std::string& name) {
  size_t at = out.rfind("\n" + name + "=");
  if (at == std::string::npos && out.rfind(name + "=", 0) == 0)
    at = 0;
  else if (at != std::string::npos)
    ++at;
  else
    return "";
  return out.substr(at, out.find('\n', at) - at);
}

TEST(GpushareRun, SetsTheVariablesAndPreloadsTheShimFirst) {
  auto r = RunToEnd({GPUSHARE_RUN, "--tenant", "t", "--memory", "1GiB", "--weight", "2", "--job", "j", "--devices",
                     "1,0", "--socket", "/tmp/none.sock", "--", "/usr/bin/env"},
                    {{"LD_PRELOAD", "libm.so.6"}, {"GPUSHARE_LIBRARY", ""}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(EnvLine(r.out, "GPUSHARE_TENANT"), "GPUSHARE_TENANT=t") << r.out;
  EXPECT_EQ(EnvLine(r.out, "GPUSHARE_MEMORY_LIMIT"), "GPUSHARE_MEMORY_LIMIT=1GiB");
  EXPECT_EQ(EnvLine(r.out, "GPUSHARE_WEIGHT"), "GPUSHARE_WEIGHT=2");
  EXPECT_EQ(EnvLine(r.out, "GPUSHARE_JOB"), "GPUSHARE_JOB=j");
  EXPECT_EQ(EnvLine(r.out, "GPUSHARE_VISIBLE_DEVICES"), "GPUSHARE_VISIBLE_DEVICES=1,0");
  EXPECT_EQ(EnvLine(r.out, "GPUSHARE_SOCKET"), "GPUSHARE_SOCKET=/tmp/none.sock");
  EXPECT_EQ(EnvLine(r.out, "LD_PRELOAD"), "LD_PRELOAD=" + Shim() + ":libm.so.6");
}

TEST(GpushareRun, DoesNotPreloadTheShimTwiceAndHonoursGpushareLibrary) {
  auto r = RunToEnd({GPUSHARE_RUN, "--", "/usr/bin/env"}, {{"LD_PRELOAD", Shim()}, {"GPUSHARE_LIBRARY", GPUSHARE_LIB}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(EnvLine(r.out, "LD_PRELOAD"), "LD_PRELOAD=" + Shim());
  EXPECT_EQ(EnvLine(r.out, "GPUSHARE_TENANT"), "");
}

TEST(GpushareRun, BadArgumentsExitTwoWithTheReason) {
  auto r = RunToEnd({GPUSHARE_RUN, "--tenant", "t"}, {});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("no command"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("usage: gpushare-run"), std::string::npos) << r.out;

  r = RunToEnd({GPUSHARE_RUN, "--tenant", "t", "--"}, {});
  EXPECT_EQ(r.exit_code, 2) << r.out;

  r = RunToEnd({GPUSHARE_RUN, "--memory", "lots", "--", "/usr/bin/true"}, {});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("--memory: \"lots\" is not a size"), std::string::npos) << r.out;

  r = RunToEnd({GPUSHARE_RUN, "--help"}, {});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("--memory"), std::string::npos) << r.out;
}

TEST(GpushareRun, AMissingShimExitsOneNamingThePath) {
  auto r = RunToEnd({GPUSHARE_RUN, "--", "/usr/bin/true"}, {{"GPUSHARE_LIBRARY", "/nonexistent/libgpushare.so"}});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("/nonexistent/libgpushare.so"), std::string::npos) << r.out;
}

TEST(GpushareRun, ACommandThatCannotRunExits127) {
  auto r = RunToEnd({GPUSHARE_RUN, "--", "/nonexistent/cmd", "arg"}, {{"GPUSHARE_LIBRARY", ""}});
  EXPECT_EQ(r.exit_code, 127) << r.out;
  EXPECT_NE(r.out.find("gpushare-run: cannot run /nonexistent/cmd: No such file or directory"), std::string::npos)
      << r.out;
}

TEST(GpushareSmi, NoBrokerExitsOneNamingTheSocket) {
  auto r = RunToEnd({GPUSHARE_SMI, "--socket", "/nonexistent"}, {});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("/nonexistent"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;

  // The default path comes from GPUSHARE_SOCKET, as for clients.
  r = RunToEnd({GPUSHARE_SMI}, {{"GPUSHARE_SOCKET", "/nonexistent/env.sock"}});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("/nonexistent/env.sock"), std::string::npos) << r.out;
}

TEST(GpushareSmi, BadArgumentsExitTwo) {
  EXPECT_EQ(RunToEnd({GPUSHARE_SMI, "--bogus"}, {}).exit_code, 2);
  EXPECT_EQ(RunToEnd({GPUSHARE_SMI, "--socket"}, {}).exit_code, 2);
  EXPECT_EQ(RunToEnd({GPUSHARE_SMI, "--help"}, {}).exit_code, 0);
}

// A stand-in broker: answers one status request with `status_json`.
class FakeBroker {
 public:
  explicit FakeBroker(std::string status_json) {
    path_ = "/tmp/gs-tools-test-" + std::to_string(getpid()) + "-" + std::to_string(counter_++) + ".sock";
    unlink(path_.c_str());
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 4) != 0)
      std::abort();
    thread_ = std::thread([this, status_json] {
      int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      std::vector<uint8_t> buffer;
      std::string error;
      auto m = proto::Receive(fd, &buffer, 10000, &error);
      if (m && m->type == proto::Type::kStatus)
        proto::SendAll(fd, proto::EncodeText(proto::Type::kStatusReply, status_json));
      if (m && m->type == proto::Type::kUsage) {
        usage_request_ = nlohmann::json::parse(std::string(m->payload.begin(), m->payload.end()));
        proto::SendAll(fd, proto::EncodeText(proto::Type::kUsageReply, status_json));  // the JSON to answer
      }
      if (m && m->type == proto::Type::kSetWeight) {
        set_weight_ = proto::Sanitized(proto::As<proto::SetWeight>(*m));
        proto::SendAll(fd, proto::EncodeText(proto::Type::kToolReply, status_json));  // the text to answer
      }
      close(fd);
    });
  }
  ~FakeBroker() {
    Join();
    close(listen_fd_);
    unlink(path_.c_str());
  }
  // Stops listening and waits for the request in progress: what it received is settled.
  void Join() {
    shutdown(listen_fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }
  const std::string& path() const { return path_; }
  // The set-weight request it received (after the tool exited).
  const std::optional<proto::SetWeight>& set_weight() const { return set_weight_; }
  // The usage or bill request it received.
  const nlohmann::json& usage_request() const { return usage_request_; }

 private:
  nlohmann::json usage_request_;
  std::optional<proto::SetWeight> set_weight_;
  static inline int counter_ = 0;
  std::string path_;
  int listen_fd_ = -1;
  std::thread thread_;
};

const char* kStatus =
    R"({"gpus":[{"index":0,"name":"simgpu H100 0","memory_total":17179869184,"memory_used":1073741824},
  {"index":1,"name":"simgpu H100 1","memory_total":17179869184,"memory_used":0}],
  "clients":[{"id":1,"pid":4242,"uid":1000,"tenant":"alice","job":"","rank":-1,"weight":1.0,"class":"unknown",
  "gpu_share":0.5,"devices":[{"virtual":0,"physical":1,"memory_used":536870912,"memory_cap":4294967296,
  "capped":true,"tenant_memory_used":0,"share":0.5},{"virtual":1,"physical":0,"memory_used":0,
  "memory_cap":17179869184,"capped":false,"share":0.5}]}],"future_key":{"x":1}})";

const char* kUsageByDay =
    R"({"by":"day","since":"2026-12-01","until":"2026-12-31","lines":[{"key":"2026-12-01","tenant":"a","sessions":2,
  "wall_ns":7200000000000,"wall_s":7200.0,"allotted_ns":3600000000000,"fraction":0.5,"gpu_ns":1800000000000,
  "gpu_s":1800.0,"memory_gib_h":4.0,"launches":12,"copies":3,"copy_bytes":4096}]})";
const char* kBill =
    R"({"period":"2026-12","currency":"USD","per":"hour","minor_digits":2,"lines":[{"tenant":"a","profile":"",
  "rate":"2","rate_micro":2000000,"sessions":2,"wall_ns":7200000000000,"duration_h":2.0,"fraction":0.5,
  "allotted_ns":3600000000000,"allotted_gpu_h":1.0,"formula":"2.00","formula_minor":200,"gpu_ns":1800000000000,
  "gpu_h":0.5,"measured":"1.00","measured_minor":100}],"tenants":[],"total":{"formula":"2.00","formula_minor":200,
  "measured":"1.00","measured_minor":100}})";

TEST(GpushareSmi, UsageSendsItsFiltersAndPrintsCsv) {
  FakeBroker broker(kUsageByDay);
  auto r = RunToEnd({GPUSHARE_SMI, "--socket", broker.path(), "usage", "--tenant", "a", "--since", "2026-12-01",
                     "--until", "2026-12-31", "--by", "day", "--csv"},
                    {});
  broker.Join();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(broker.usage_request(),
            nlohmann::json(
                {{"what", "usage"}, {"tenant", "a"}, {"since", "2026-12-01"}, {"until", "2026-12-31"}, {"by", "day"}}));
  EXPECT_EQ(r.out,
            "DAY,TENANT,SESSIONS,DURATION_S,FRACTION,GPU_TIME_S,MEMORY_GIB_H,LAUNCHES,COPIES,COPIED_BYTES\n"
            "2026-12-01,a,2,7200.000,0.5000,1800.000,4.000000,12,3,4096\n");
}

TEST(GpushareSmi, BillPrintsBothPricesAndNeedsAPeriod) {
  {
    FakeBroker broker(kBill);
    auto r = RunToEnd({GPUSHARE_SMI, "--socket", broker.path(), "bill", "--period", "2026-12"}, {});
    broker.Join();
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_EQ(broker.usage_request(), nlohmann::json({{"what", "bill"}, {"period", "2026-12"}}));
    EXPECT_NE(
        r.out.find(
            "a       -        2     2         2.0000      0.5000    1.0000          2.00        0.5000      1.00"),
        std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("TOTAL"), std::string::npos) << r.out;
  }
  auto r = RunToEnd({GPUSHARE_SMI, "--socket", "/tmp/none.sock", "bill"}, {});
  EXPECT_EQ(r.exit_code, 2) << r.out;
}

TEST(GpushareSmi, UsageReportsTheBrokersRefusal) {
  FakeBroker broker(R"({"error":"uid 1002 may not read tenant \"a\"'s usage"})");
  auto r = RunToEnd({GPUSHARE_SMI, "--socket", broker.path(), "usage", "--tenant", "a"}, {});
  broker.Join();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("may not read tenant"), std::string::npos) << r.out;
}

TEST(GpushareSmi, SetWeightSendsTheTargetAndPrintsTheBrokersAnswer) {
  {
    FakeBroker broker("ok: weight 3 for 1 client(s)");
    auto r = RunToEnd({GPUSHARE_SMI, "--socket", broker.path(), "set-weight", "--pid", "77", "3"}, {});
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("ok: weight 3 for 1 client(s)"), std::string::npos) << r.out;
    broker.Join();
    ASSERT_TRUE(broker.set_weight().has_value());
    EXPECT_EQ(broker.set_weight()->pid, 77);
    EXPECT_DOUBLE_EQ(broker.set_weight()->weight, 3.0);
  }
  FakeBroker refused("refused: only root or the broker's user (uid 0) may change weights");
  auto r = RunToEnd({GPUSHARE_SMI, "set-weight", "--tenant", "team-a", "2.5", "--socket", refused.path()}, {});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("refused: only root"), std::string::npos) << r.out;
  refused.Join();
  ASSERT_TRUE(refused.set_weight().has_value());
  EXPECT_STREQ(refused.set_weight()->tenant, "team-a");
  EXPECT_EQ(refused.set_weight()->pid, 0);
}

TEST(GpushareSmi, SetWeightWithBadArgumentsExitsTwo) {
  for (std::vector<std::string> args : {std::vector<std::string>{"set-weight", "3"},
                                        {"set-weight", "--pid", "x", "3"},
                                        {"set-weight", "--tenant", "a", "-1"},
                                        {"set-weight", "--tenant", "a"},
                                        {"set-weight", "--tenant", "a", "2", "9"}}) {
    args.insert(args.begin(), GPUSHARE_SMI);
    auto r = RunToEnd(args, {});
    EXPECT_EQ(r.exit_code, 2) << args[2] << "\n" << r.out;
  }
}

TEST(GpushareSmi, PrintsGpusAndClientsAsATable) {
  FakeBroker broker(kStatus);
  auto r = RunToEnd({GPUSHARE_SMI, "--socket", broker.path()}, {});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* expected : {"simgpu H100 0", "1.00 GiB / 16.00 GiB", "simgpu H100 1", "4242", "alice", "50%", "0->1",
                               "512.0 MiB / 4.00 GiB", "1->0", "0 B / 16.00 GiB (no cap)", "WHY"})
    EXPECT_NE(r.out.find(expected), std::string::npos) << expected << " in\n" << r.out;
}

TEST(GpushareSmi, JsonIsTheBrokersStatusPretty) {
  FakeBroker broker(kStatus);
  auto r = RunToEnd({GPUSHARE_SMI, "--json", "--socket", broker.path()}, {});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::parse(kStatus));
  EXPECT_NE(r.out.find("\n  \"clients\": ["), std::string::npos) << r.out;
}

TEST(GpushareSmi, ToleratesMissingAndOddlyTypedFields) {
  FakeBroker broker(R"({"gpus":[{"index":"zero"},{}],"clients":[{"pid":7,"devices":"none"},{"tenant":5}]})");
  auto r = RunToEnd({GPUSHARE_SMI, "--socket", broker.path()}, {});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("7"), std::string::npos) << r.out;
}

TEST(GpushareSmi, AReplyThatIsNotJsonExitsOne) {
  FakeBroker broker("not json");
  auto r = RunToEnd({GPUSHARE_SMI, "--socket", broker.path()}, {});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find(broker.path()), std::string::npos) << r.out;
}

}  // namespace
