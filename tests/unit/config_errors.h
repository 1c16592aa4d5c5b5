// The config tests of every section ask the same thing of a malformed broker config:
// the error it gets (FILE:LINE: what).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "broker/policy/config.h"

namespace gpushare::broker::config_test {

// The error ParseBrokerConfig gives `text`; a failure of the calling test if it parses.
inline std::string ErrorOf(const std::string& text) {
  std::string error;
  EXPECT_FALSE(ParseBrokerConfig(text, "broker.toml", &error).has_value()) << text;
  return error;
}

}  // namespace gpushare::broker::config_test
