// The example config installed as /etc/gpushare/broker.toml (deploy/config/broker.toml):
// as shipped it is the empty config, and every setting it shows, uncommented, is one the
// broker accepts, so the example cannot drift from the parser.
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "broker/policy/config.h"

namespace gpushare::broker {
namespace {

std::string ExampleText() {
  std::ifstream in(EXAMPLE_CONFIG);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// "#key = value" and "#[section]" are settings; "# text" and a lone "#" are notes.
std::string Uncommented(const std::string& text) {
  return std::regex_replace(text, std::regex("^#([^ #\n])", std::regex::multiline), "$1");
}

TEST(ExampleConfig, AsShippedIsTheEmptyConfig) {
  std::string error;
  const auto config = ParseBrokerConfig(ExampleText(), EXAMPLE_CONFIG, &error);
  ASSERT_TRUE(config) << error;
  const BrokerConfig defaults;
  EXPECT_TRUE(config->tenants.empty());
  EXPECT_TRUE(config->profiles.empty());
  EXPECT_EQ(config->placement, defaults.placement);
  EXPECT_EQ(config->quantum_us, defaults.quantum_us);
  EXPECT_EQ(config->scheduling, defaults.scheduling);
  EXPECT_EQ(config->metering.enabled, defaults.metering.enabled);
  EXPECT_EQ(config->metrics.listen, "");  // no TCP port unless the admin asks for one
  EXPECT_EQ(config->billing.base_rate_micro, defaults.billing.base_rate_micro);
}

TEST(ExampleConfig, EverySettingItShowsIsAccepted) {
  const std::string text = Uncommented(ExampleText());
  for (const char* section : {"[node]", "[class_weights]", "[scheduler]", "[classifier]", "[profiles.q8g]",
                              "[tenants.team-a]", "[limits]", "[metering]", "[billing]", "[metrics]"})
    EXPECT_NE(text.find(std::string("\n") + section + "\n"), std::string::npos) << section << " is not shown";
  std::string error;
  const auto config = ParseBrokerConfig(text, "broker.toml, uncommented", &error);
  ASSERT_TRUE(config) << error;
  EXPECT_EQ(config->tenants.count("team-a"), 1u);
  EXPECT_EQ(config->tenants.at("render").profile, "q8g");
  EXPECT_EQ(config->profiles.count("q8g"), 1u);
  EXPECT_EQ(config->metrics.listen, "127.0.0.1:9400");
  EXPECT_EQ(config->billing.tenant_rate_micro.at("team-a"), 1'500'000);
  EXPECT_EQ(config->limits.handshake_timeout_ms, 3000u);
}

TEST(ExampleConfig, UncommentingLeavesNotesAlone) {
  EXPECT_EQ(Uncommented("# a note\n#key = 1\n#\n##x\n"), "# a note\nkey = 1\n#\n##x\n");
}

}  // namespace
}  // namespace gpushare::broker
