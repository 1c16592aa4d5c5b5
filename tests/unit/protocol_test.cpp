// The wire protocol as messages.def declares it: every type is described with its
// route, fixed payloads must arrive at their exact size, text payloads at any size.
#include <gtest/gtest.h>

#include "common/protocol/protocol.h"

namespace {

namespace proto = gpushare::protocol;

TEST(Protocol, EveryDeclaredTypeIsDescribedWithItsRoute) {
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kHello))->route, proto::Route::kRegister);
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kTake))->route, proto::Route::kRegistered);
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kStatus))->route, proto::Route::kAnyone);
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kWelcome))->route, proto::Route::kReply);
  EXPECT_STREQ(proto::Describe(static_cast<uint16_t>(proto::Type::kComm))->name, "Comm");
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kGive))->payload_bytes, sizeof(proto::Give));
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kToolReply))->payload_bytes, 0u);
  EXPECT_EQ(proto::Describe(0), nullptr);
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kUsage))->route, proto::Route::kAnyone);
  EXPECT_EQ(proto::Describe(static_cast<uint16_t>(proto::Type::kSocketAdmin))->route, proto::Route::kAnyone);
  EXPECT_EQ(proto::Describe(999), nullptr);
}

TEST(Protocol, SplitTakesAFixedPayloadOnlyAtItsSize) {
  std::vector<uint8_t> bytes = proto::Encode(proto::Type::kGive, proto::Give{1, 42});
  std::string error;
  auto m = proto::Split(&bytes, &error);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->type, proto::Type::kGive);
  EXPECT_EQ(proto::Decode<proto::Give>(*m).bytes, 42u);
  EXPECT_TRUE(bytes.empty());

  proto::Header h{proto::kMagic, proto::kVersion, static_cast<uint16_t>(proto::Type::kGive), sizeof(proto::Give) + 1};
  bytes.assign(reinterpret_cast<uint8_t*>(&h), reinterpret_cast<uint8_t*>(&h) + sizeof h);
  EXPECT_FALSE(proto::Split(&bytes, &error));
  EXPECT_NE(error.find("with a payload of"), std::string::npos);
}

TEST(Protocol, AHelloArrivesWholeOrInItsOlderFormWithoutAProfile) {
  proto::Hello h{};
  proto::SetString(h.tenant, "t");
  proto::SetString(h.profile, "q8g");
  std::string error;
  std::vector<uint8_t> whole = proto::EncodeHello(h);
  EXPECT_EQ(whole.size(), sizeof(proto::Header) + sizeof(proto::Hello));
  auto m = proto::Split(&whole, &error);
  ASSERT_TRUE(m) << error;
  EXPECT_STREQ(proto::Decode<proto::Hello>(*m).profile, "q8g");
  // Without a profile the client sends what a broker before profiles takes: 544 bytes.
  proto::SetString(h.profile, "");
  std::vector<uint8_t> older = proto::EncodeHello(h);
  EXPECT_EQ(older.size(), sizeof(proto::Header) + 544);
  m = proto::Split(&older, &error);
  ASSERT_TRUE(m) << error;
  proto::Hello read = proto::Decode<proto::Hello>(*m);
  EXPECT_STREQ(read.tenant, "t");
  EXPECT_STREQ(read.profile, "");
  // Any other size is still refused.
  std::vector<uint8_t> cut = proto::Encode(proto::Type::kHello, h);
  cut.resize(cut.size() - 8);
  const uint32_t length = 568;
  std::memcpy(cut.data() + 8, &length, sizeof length);
  EXPECT_FALSE(proto::Split(&cut, &error));
  EXPECT_NE(error, "");
}

TEST(Protocol, SplitTakesATextPayloadOfAnySize) {
  std::vector<uint8_t> bytes = proto::EncodeText(proto::Type::kToolReply, "ok: weight 2 for 1 client(s)");
  std::string error;
  auto m = proto::Split(&bytes, &error);
  ASSERT_TRUE(m);
  EXPECT_EQ(proto::Decode<proto::Text>(*m), "ok: weight 2 for 1 client(s)");
}

TEST(Protocol, WeightsOutsideTheRangeAreFlooredDefaultedOrRefused) {
  proto::Hello h{};
  h.weight = 5e-324;
  EXPECT_EQ(proto::Sanitized(h).weight, proto::kMinWeight);
  h.weight = -1;
  EXPECT_EQ(proto::Sanitized(h).weight, 1.0);
  h.weight = proto::kMaxWeight * 2;
  EXPECT_EQ(proto::Sanitized(h).weight, 1.0);
  h.weight = 0.5;
  EXPECT_EQ(proto::Sanitized(h).weight, 0.5);
  proto::SetWeight s{};
  s.weight = 0.0005;
  EXPECT_EQ(proto::Sanitized(s).weight, 0.0);  // refused
  s.weight = proto::kMinWeight;
  EXPECT_EQ(proto::Sanitized(s).weight, proto::kMinWeight);
}

}  // namespace
