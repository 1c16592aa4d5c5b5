// Containers through CDI, for real (docs/containers.md): Debian's podman with runc runs
// alloc_probe from a local image (a rootfs of this machine's files, found with ldd, and
// `podman import`: no registry) with `--device gpushare.io/vgpu=…` from the spec that
// gpushare-cdi writes; the app sees its cap on simgpu, the broker books it to the
// tenant whose socket the spec mounted, and a tenant forged inside the container is
// refused. Skipped, with the reason, where podman cannot run a container at all.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "test_broker.h"

namespace {

using nlohmann::json;
using testing_support::Child;
using testing_support::Field;
using testing_support::RunResult;
using testing_support::RunToEnd;

const char* kOneGpu = R"({"gpus": [{"name": "sim0", "memory": 17179869184}], "links": []})";
constexpr uint64_t kGiB = 1ull << 30;
// What CI's machine needed of podman (issue 19); harmless elsewhere.
const char* kPodmanRun = "podman run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 ";

RunResult Shell(const std::string& command) { return RunToEnd({"/bin/sh", "-c", command + " 2>&1"}, {}); }

// A rootfs of alloc_probe (and true, to probe podman) and the libraries it and the shim load (not the driver: the
// CDI spec mounts it, as it would a real one), imported as a local image.
class ContainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) {
      skip_ = "needs root (podman's CDI specs in /var/run/cdi; CI runs as root)";
      return;
    }
    if (Shell("command -v podman && command -v runc").exit_code != 0) {
      skip_ = "podman or runc is not installed";
      return;
    }
    root_ = "/tmp/gs-container-" + std::to_string(getpid());
    image_ = "localhost/gpushare-test:" + std::to_string(getpid());
    const std::string rootfs = root_ + "/rootfs";
    std::filesystem::create_directories(rootfs + "/app");
    for (const char* dir : {"/etc", "/run", "/tmp", "/dev/shm"}) std::filesystem::create_directories(rootfs + dir);
    const std::string libs =
        " " ALLOC_PROBE " " GPUSHARE_LIB " " SIMGPU_DIR "/libcuda.so.1 " SIMGPU_DIR "/libnvidia-ml.so.1";
    const RunResult built =
        Shell("set -e; cp " ALLOC_PROBE " /bin/true " + rootfs + "/app/; LD_LIBRARY_PATH=" SIMGPU_DIR " ldd" + libs +
              " | grep -o '/[^ ]*' | grep -v '^" SIMGPU_DIR "' | grep -v ':$' | sort -u | while read l; do mkdir -p " +
              rootfs + "$(dirname $l); cp -L $l " + rootfs + "$l; done; tar -C " + rootfs + " -cf " + root_ +
              "/image.tar .; podman import " + root_ + "/image.tar " + image_);
    if (built.exit_code != 0) {
      skip_ = "cannot build the image: " + built.out;
      return;
    }
    // Can podman run a container here at all?
    const RunResult probe = Shell(std::string("timeout 120 ") + kPodmanRun + image_ + " /app/true");
    if (probe.exit_code != 0) skip_ = "podman cannot run a container here: " + probe.out;
  }
  static void TearDownTestSuite() {
    if (!image_.empty()) Shell("podman rmi -f " + image_);
    std::error_code ec;
    if (!root_.empty()) std::filesystem::remove_all(root_, ec);
  }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    // A tenant name of this test's own: its devices cannot clash with another spec of the kind.
    tenant_ = "ct" + std::to_string(getpid()) + "x" + std::to_string(counter_++);
    dir_ = root_ + "/" + tenant_;
    std::filesystem::create_directories(dir_);
    broker_ = std::make_unique<testing_support::TestBroker>(
        kOneGpu, "[metering]\nenabled = false\n[tenants." + tenant_ + "]\nsocket = true\n[tenants.other]\nweight = 9\n",
        dir_);
    spec_ = "/var/run/cdi/" + tenant_ + ".yaml";
    const RunResult generated =
        Shell(std::string(GPUSHARE_CDI) + " generate --output " + spec_ + " --config " + broker_->config_path() +
              " --socket " + broker_->socket() + " --gpus 1 --cap 1GiB --driver-dir " SIMGPU_DIR " --preload-file " +
              dir_ + "/ld.so.preload");
    ASSERT_EQ(generated.exit_code, 0) << generated.out;
  }
  void TearDown() override {
    if (!spec_.empty()) std::remove(spec_.c_str());
    broker_.reset();
  }

  // `podman run` of alloc_probe with `--device gpushare.io/vgpu=DEVICE`, simgpu's node
  // shared (its state is in shared memory) and `env` set inside.
  std::unique_ptr<Child> Run(const std::string& device, const std::string& env, const std::string& args) {
    const auto& node = broker_->node();
    // A sanitizer build's shim, preloaded ahead of the app's runtime, needs the link-order
    // check off inside too; LeakSanitizer is left to the host's tests.
    std::string sanitizers = " -e ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0";
    if (const char* ubsan = std::getenv("UBSAN_OPTIONS")) sanitizers += std::string(" -e UBSAN_OPTIONS=") + ubsan;
    const std::string command = std::string("exec timeout 120 ") + kPodmanRun + "--device gpushare.io/vgpu=" + device +
                                " -e SIMGPU_CONFIG=/simgpu.json -e SIMGPU_NODE=" + node.name() + " -v " +
                                node.config_path() + ":/simgpu.json:ro -v /dev/shm/" + node.name() + ":/dev/shm/" +
                                node.name() + sanitizers + " " + env + " " + image_ + " /app/alloc_probe " + args +
                                " 2>&1";
    return std::make_unique<Child>(std::vector<std::string>{"/bin/sh", "-c", command},
                                   std::map<std::string, std::string>{});
  }

  // Reads the broker's log until a line containing `text` (or 10 s); returns it.
  std::string BrokerLogLine(const std::string& text) {
    std::string line;
    while ((line = broker_->process().ReadLine(10000)) != "" && line.find(text) == std::string::npos) {
    }
    return line;
  }

  static std::string skip_, root_, image_;
  static int counter_;
  std::string tenant_, dir_, spec_;
  std::unique_ptr<testing_support::TestBroker> broker_;
};

std::string ContainerTest::skip_, ContainerTest::root_, ContainerTest::image_;
int ContainerTest::counter_ = 0;

TEST_F(ContainerTest, TheAppSeesItsCapAndTheBrokerBooksItToTheSocketsTenant) {
  auto app = Run(tenant_ + "-1GiB", "", "--limit 512MiB --chunk 256MiB --hold 5");
  // While it holds its memory: the broker has it as a client of the tenant, by its host pid.
  json client;
  for (int i = 0; i < 600 && client.is_null(); ++i) {
    const json status = broker_->Status();
    for (const json& c : status["clients"])
      if (c["devices"][0]["memory_used"].get<uint64_t>() >= 512ull << 20) client = c;
    if (client.is_null()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(client.is_null()) << broker_->Status().dump();
  EXPECT_EQ(client["tenant"], tenant_);
  EXPECT_EQ(client["devices"][0]["memory_cap"], kGiB);
  EXPECT_NE(BrokerLogLine("joined as tenant").find("via tenants/" + tenant_ + ".sock"), std::string::npos);
  const std::string out = app->ReadAll();
  EXPECT_EQ(Field(out, "total_bytes"), kGiB) << out;  // the cap, seen from inside on simgpu
  EXPECT_EQ(Field(out, "allocated_bytes"), 512ull << 20) << out;
  // Its channel came over the socket: the container's own IPC namespace has no broker segment.
  EXPECT_EQ(out.find("cannot map the broker channel"), std::string::npos) << out;
}

TEST_F(ContainerTest, ATenantForgedInsideTheContainerIsRefusedAndNothingIsBookedToIt) {
  auto app = Run(tenant_, "-e GPUSHARE_TENANT=other", "--chunk 256MiB");
  const std::string out = app->ReadAll();
  EXPECT_NE(out.find("refused this process"), std::string::npos) << out;
  EXPECT_NE(out.find("the socket decides the tenant"), std::string::npos) << out;
  const std::string logged = BrokerLogLine("registration refused");
  EXPECT_NE(logged.find("GPUSHARE_TENANT=\"other\""), std::string::npos) << logged;
  EXPECT_EQ(Field(out, "allocated_bytes"), UINT64_MAX) << out;  // a refused process sees no GPU
  const json status = broker_->Status();
  for (const json& c : status["clients"]) EXPECT_NE(c["tenant"], "other");
}

}  // namespace
