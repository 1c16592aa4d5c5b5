// Bills and usage reports from meter rows: exact money in minor units, rounding once per
// line, rates by tenant and profile, dates, and the [metering]/[billing] config.
#include "broker/policy/billing.h"

#include <gtest/gtest.h>

#include "broker/policy/config.h"

namespace gpushare::broker {
namespace {

constexpr uint64_t kS = 1'000'000'000;
constexpr uint64_t kHour = 3600 * kS;

UsageRow Row(uint64_t id, const std::string& tenant, const std::string& profile, int64_t day, uint64_t wall_ns,
             double allotted_ns, uint64_t gpu_ns) {
  UsageRow r;
  r.session.id = id;
  r.session.tenant = tenant;
  r.session.profile = profile;
  r.day.session_id = id;
  r.day.day = day;
  r.day.wall_ns = wall_ns;
  r.day.allotted_ns = allotted_ns;
  r.day.gpu_ns = gpu_ns;
  return r;
}

TEST(Billing, TheFormulaIsRateTimesFractionTimesDuration) {
  // The issue's example: 2.0 USD per GPU-hour, a quarter of a GPU for 3 hours: 1.50 USD.
  BillingConfig c;
  c.base_rate_micro = *RateMicro(2.0);
  Bill b = MakeBill({Row(1, "alice", "", 20788, 3 * kHour, 0.25 * 3 * kHour, kHour / 2)}, c);
  ASSERT_EQ(b.lines.size(), 1u);
  EXPECT_EQ(b.lines[0].formula_minor, 150);
  EXPECT_EQ(b.lines[0].measured_minor, 100);  // half an hour measured
  EXPECT_DOUBLE_EQ(b.lines[0].fraction(), 0.25);
  EXPECT_EQ(b.total_formula_minor, 150);
}

TEST(Billing, TheWorkedExampleOfDocsMetering) {
  // a: 3 h, alone 2 of them, 1 h at 2/3; b: 1 h at 1/3. 2.00 USD per GPU-hour.
  BillingConfig c;
  c.base_rate_micro = *RateMicro(2.0);
  Bill b = MakeBill({Row(1, "a", "", 20788, 3 * kHour, (1 + 2.0 / 3 + 1) * kHour, kHour * 5 / 2),
                     Row(2, "b", "", 20788, kHour, kHour / 3.0, kHour * 3 / 10)},
                    c);
  ASSERT_EQ(b.lines.size(), 2u);
  EXPECT_NEAR(b.lines[0].fraction(), 0.8889, 5e-5);
  EXPECT_EQ(FormatMinor(b.lines[0].formula_minor, 2), "5.33");
  EXPECT_EQ(FormatMinor(b.lines[0].measured_minor, 2), "5.00");
  EXPECT_EQ(FormatMinor(b.lines[1].formula_minor, 2), "0.67");
  EXPECT_EQ(FormatMinor(b.lines[1].measured_minor, 2), "0.60");
  EXPECT_EQ(b.total_formula_minor, 600);
}

TEST(Billing, MoneyIsRoundedHalfUpOncePerLine) {
  BillingConfig c;
  c.base_rate_micro = *RateMicro(1.0);  // 1.00 per hour: 1 cent per 36 s
  // 18 s is half a cent: rounds up; three rows of 6 s each are summed before rounding.
  EXPECT_EQ(AmountMinor(18 * kS, c.base_rate_micro, c.per_ns, 2), 1);
  EXPECT_EQ(AmountMinor(18 * kS - 1, c.base_rate_micro, c.per_ns, 2), 0);
  Bill b = MakeBill({Row(1, "t", "", 1, 6 * kS, 6.0 * kS, 0), Row(2, "t", "", 1, 6 * kS, 6.0 * kS, 0),
                     Row(3, "t", "", 2, 6 * kS, 6.0 * kS, 0)},
                    c);
  ASSERT_EQ(b.lines.size(), 1u);
  EXPECT_EQ(b.lines[0].sessions, 3u);
  EXPECT_EQ(b.lines[0].formula_minor, 1);  // 18 s, not three times 0
}

TEST(Billing, LargeSumsStayExact) {
  // A year of a hundred full GPUs at 123.456789 per hour: 876,000 h x 123.456789 =
  // 108,148,147.164 -> 10,814,814,716 cents, exactly (a double would carry the .4).
  const uint64_t ns = 100ull * 365 * 24 * kHour;
  EXPECT_EQ(AmountMinor(ns, *RateMicro(123.456789), 3'600'000'000'000ull, 2), 10'814'814'716);
}

TEST(Billing, RatesByTenantThenProfileThenBase) {
  BillingConfig c;
  c.base_rate_micro = *RateMicro(2);
  c.tenant_rate_micro["vip"] = *RateMicro(1.5);
  c.profile_rate_micro["1g.8gb"] = *RateMicro(0.5);
  EXPECT_EQ(c.RateMicro("vip", "1g.8gb"), 1'500'000);
  EXPECT_EQ(c.RateMicro("other", "1g.8gb"), 500'000);
  EXPECT_EQ(c.RateMicro("other", ""), 2'000'000);
  EXPECT_EQ(c.RateMicro("other", "unknown"), 2'000'000);
  Bill b = MakeBill({Row(1, "a", "1g.8gb", 1, kHour, 1.0 * kHour, 0), Row(2, "a", "", 1, kHour, 1.0 * kHour, 0)}, c);
  ASSERT_EQ(b.lines.size(), 2u);
  EXPECT_EQ(b.lines[0].profile, "");
  EXPECT_EQ(b.lines[0].formula_minor, 200);
  EXPECT_EQ(b.lines[1].formula_minor, 50);
  EXPECT_EQ(b.tenant_totals.at("a").first, 250);
}

TEST(Billing, MoneyAndRatesFormatExactly) {
  EXPECT_EQ(FormatMinor(1234, 2), "12.34");
  EXPECT_EQ(FormatMinor(5, 2), "0.05");
  EXPECT_EQ(FormatMinor(-5, 2), "-0.05");
  EXPECT_EQ(FormatMinor(1234, 0), "1234");
  EXPECT_EQ(FormatRateMicro(2'500'000), "2.5");
  EXPECT_EQ(FormatRateMicro(2'000'000), "2");
  EXPECT_EQ(FormatRateMicro(1), "0.000001");
  EXPECT_EQ(RateMicro(0.1), 100'000);
  EXPECT_FALSE(RateMicro(-1));
}

TEST(Billing, DatesAndMonths) {
  EXPECT_EQ(ParseDate("2026-12-01"), 20788);
  EXPECT_EQ(CivilFromDays(20788), "2026-12-01");
  EXPECT_FALSE(ParseDate("2026-02-30"));
  EXPECT_FALSE(ParseDate("2026-12-1"));
  EXPECT_FALSE(ParseDate("yesterday"));
  auto dec = ParseMonth("2026-12");
  ASSERT_TRUE(dec);
  EXPECT_EQ(dec->first, 20788);
  EXPECT_EQ(dec->second, 20788 + 31);
  EXPECT_EQ(ParseMonth("2027-02")->second - ParseMonth("2027-02")->first, 28);
  EXPECT_FALSE(ParseMonth("2026-13"));
  EXPECT_FALSE(ParseMonth("2026-12-01"));
}

TEST(Billing, UsageSummedBySessionTenantAndDay) {
  std::vector<UsageRow> rows{Row(7, "a", "", 20788, 10 * kS, 5.0 * kS, 2 * kS),
                             Row(7, "a", "", 20789, 20 * kS, 10.0 * kS, 4 * kS),
                             Row(9, "b", "", 20789, 30 * kS, 30.0 * kS, 8 * kS)};
  auto by_session = Summarize(rows, UsageBy::kSession);
  ASSERT_EQ(by_session.size(), 2u);
  EXPECT_EQ(by_session[0].key, "7");
  EXPECT_EQ(by_session[0].wall_ns, 30 * kS);
  EXPECT_EQ(by_session[0].session->tenant, "a");
  auto by_tenant = Summarize(rows, UsageBy::kTenant);
  ASSERT_EQ(by_tenant.size(), 2u);
  EXPECT_EQ(by_tenant[1].key, "b");
  EXPECT_EQ(by_tenant[1].gpu_ns, 8 * kS);
  auto by_day = Summarize(rows, UsageBy::kDay);
  ASSERT_EQ(by_day.size(), 3u);
  EXPECT_EQ(by_day[0].key, "2026-12-01");
  EXPECT_EQ(by_day[1].key, "2026-12-02");
  EXPECT_EQ(by_day[1].tenant, "a");
  EXPECT_EQ(by_day[2].tenant, "b");
  EXPECT_EQ(by_day[1].sessions, 1u);
}

TEST(BillingConfig, MeteringAndBillingParse) {
  std::string error;
  auto c = ParseBrokerConfig(R"(
[metering]
database = "/var/tmp/m.db"
interval = 0.5
retention_days = 30
[billing]
base_rate = 2.0
currency = "EUR"
per = "minute"
[billing.tenant_rates]
alice = 3.25
[billing.profile_rates]
"1g.8gb" = 0.5
)",
                             "t.toml", &error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->metering.database, "/var/tmp/m.db");
  EXPECT_EQ(c->metering.interval_ns, 500'000'000u);
  EXPECT_EQ(c->metering.retention_days, 30u);
  EXPECT_EQ(c->billing.base_rate_micro, 2'000'000);
  EXPECT_EQ(c->billing.currency, "EUR");
  EXPECT_EQ(c->billing.per_ns, 60 * kS);
  EXPECT_EQ(c->billing.tenant_rate_micro.at("alice"), 3'250'000);
  EXPECT_EQ(c->billing.profile_rate_micro.at("1g.8gb"), 500'000);
  auto d = ParseBrokerConfig("", "empty.toml", &error);
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->metering.enabled);
  EXPECT_EQ(d->metering.interval_ns, 10 * kS);
  EXPECT_EQ(d->billing.per, "hour");
}

TEST(BillingConfig, MistakesNameTheLine) {
  std::string error;
  EXPECT_FALSE(ParseBrokerConfig("[metering]\ninterval = 0\n", "m.toml", &error));
  EXPECT_EQ(error, "m.toml:2: metering.interval: expected seconds, from 0.1 to 3600");
  EXPECT_FALSE(ParseBrokerConfig("[billing]\nper = \"week\"\n", "b.toml", &error));
  EXPECT_EQ(error.rfind("b.toml:2: billing.per", 0), 0u) << error;
  EXPECT_FALSE(ParseBrokerConfig("[billing]\nbase_rate = -1\n", "b.toml", &error));
  EXPECT_EQ(error.rfind("b.toml:2: billing.base_rate", 0), 0u) << error;
  EXPECT_FALSE(ParseBrokerConfig("[billing.tenant_rates]\nx = \"cheap\"\n", "b.toml", &error));
  EXPECT_EQ(error.rfind("b.toml:2: billing.tenant_rates.x", 0), 0u) << error;
  EXPECT_FALSE(ParseBrokerConfig("[metering]\ndatabse = \"x\"\n", "m.toml", &error));
  EXPECT_EQ(error, "m.toml:2: metering.databse: unknown key");
}

}  // namespace
}  // namespace gpushare::broker
