// The cluster's znode decoders (broker/policy/cluster_state.h) on hostile values: anyone
// who can write to ZooKeeper reaches them in every broker and manager. The first byte
// picks the decoder, the rest is the value. Invariants: no crash, and what decodes
// encodes to a value that decodes to the same record (no lossy or partial accept).
#include <string>
#include <string_view>

#include "broker/policy/cluster_state.h"
#include "fuzz_target.h"

using namespace gpushare::broker;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string error;
  switch (data[0] % 3) {
    case 0:
      if (auto q = DecodeQuota(text, &error)) {
        auto again = DecodeQuota(EncodeQuota(*q), &error);
        FUZZ_CHECK(again.has_value());
        // Empty entries are dropped on encoding; the totals stay.
        FUZZ_CHECK(again->Total() == q->Total());
        (void)QuotaRefusal(*q, "node", {1, 1}, ClusterTenantQuota{3, 100}, "x");
      }
      break;
    case 1:
      if (auto n = DecodeNode(text, &error)) {
        auto again = DecodeNode(EncodeNode(*n), &error);
        FUZZ_CHECK(again.has_value() && *again == *n);
      }
      break;
    default:
      if (auto m = DecodeMeter(text, &error)) {
        auto again = DecodeMeter(EncodeMeter(*m), &error);
        FUZZ_CHECK(again.has_value() && again->rows.size() == m->rows.size());
        Bill bill = MakeBill(m->rows, BillingConfig{});  // what the manager does with them
        (void)bill;
      }
      break;
  }
  return 0;
}

std::vector<std::vector<uint8_t>> FuzzSeeds() {
  const auto seed = [](uint8_t which, const std::string& text) {
    const std::string bytes = static_cast<char>(which) + text;
    return std::vector<uint8_t>(bytes.begin(), bytes.end());
  };
  NodeRecord node;
  node.name = "node-a";
  node.version = "0.1.0";
  node.health = "ok";
  node.gpus.push_back(NodeGpu{0, "sim0", 100, 10, 50});
  node.free_instances["small"] = 2;
  node.clients = 1;
  node.quota_held["x"] = QuotaAmount{1, 5};
  return {seed(0, EncodeQuota(QuotaRecord{{{"node-a", {2, 0}}, {"node-b", {1, 1 << 30}}}})),
          seed(1, EncodeNode(node)), seed(2, R"({"node":"node-a","since_day":19999,"sessions":[{"id":7,"pid":4,"uid":0,"tenant":"x","job":"",)"
                   R"("profile":"","gpus":"0","start_ns":1,"end_ns":0,"last_ns":9,"held_bytes":0,"fraction":0.5}],)"
                   R"("days":[[7,20000,1000,500.0,3,0,1,0,0]]})"),
          seed(0, R"({"held": {"a": {"instances": 18446744073709551615, "memory": 1}}})"),
          seed(2, R"({"node":"a","since_day":0,"sessions":[],"days":[]})")};
}
