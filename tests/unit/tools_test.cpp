// gpushare-run's argument rules: each option becomes its GPUSHARE_* variable, bad
// values are refused naming the option, and the shim goes first in LD_PRELOAD once.
#include <gtest/gtest.h>

#include "run_args.h"

namespace gpushare::tools {
namespace {

TEST(ParseRunArgs, EachOptionSetsItsVariable) {
  RunArgs a = ParseRunArgs({"--tenant", "team-a", "--memory", "4GiB", "--weight", "2.5", "--socket", "/tmp/b.sock",
                            "--job", "train", "--devices", "1,0", "--", "python", "train.py", "--lr", "3"});
  EXPECT_EQ(a.error, "");
  EXPECT_FALSE(a.help);
  EXPECT_EQ(a.env, (std::map<std::string, std::string>{{"GPUSHARE_TENANT", "team-a"},
                                                       {"GPUSHARE_MEMORY_LIMIT", "4GiB"},
                                                       {"GPUSHARE_WEIGHT", "2.5"},
                                                       {"GPUSHARE_SOCKET", "/tmp/b.sock"},
                                                       {"GPUSHARE_JOB", "train"},
                                                       {"GPUSHARE_VISIBLE_DEVICES", "1,0"}}));
  EXPECT_EQ(a.command, (std::vector<std::string>{"python", "train.py", "--lr", "3"}));
}

TEST(ParseRunArgs, OptionsAreOptionalAndTakeEqualsForm) {
  RunArgs a = ParseRunArgs({"--", "true"});
  EXPECT_EQ(a.error, "");
  EXPECT_TRUE(a.env.empty());
  EXPECT_EQ(a.command, std::vector<std::string>{"true"});

  a = ParseRunArgs({"--tenant=t", "--memory=0=4GiB,1=2GiB", "--", "env"});
  EXPECT_EQ(a.error, "");
  EXPECT_EQ(a.env.at("GPUSHARE_TENANT"), "t");
  EXPECT_EQ(a.env.at("GPUSHARE_MEMORY_LIMIT"), "0=4GiB,1=2GiB");
}

TEST(ParseRunArgs, ArgumentsAfterTheSeparatorBelongToTheCommand) {
  RunArgs a = ParseRunArgs({"--weight", "1", "--", "cmd", "--", "--memory", "bogus"});
  EXPECT_EQ(a.error, "");
  EXPECT_EQ(a.env.size(), 1u);
  EXPECT_EQ(a.command, (std::vector<std::string>{"cmd", "--", "--memory", "bogus"}));
}

TEST(ParseRunArgs, AcceptsEveryMemoryFormTheShimReads) {
  for (const char* ok : {"4GiB", "512MiB", "1.5GB", "1073741824", "4g", "0=4GiB,1=2GiB", "0 = 1GiB, 3=512MiB"})
    EXPECT_EQ(ParseRunArgs({"--memory", ok, "--", "x"}).error, "") << ok;
}

TEST(ParseRunArgs, RefusesBadMemoryNamingTheOption) {
  for (const char* bad :
       {"", "lots", "4 gigs", "-1GiB", "0=4GiB,1", "x=4GiB", "0=", "0=4GiB,0=2GiB", "0=4GiB,,1=1GiB"}) {
    RunArgs a = ParseRunArgs({"--memory", bad, "--", "x"});
    EXPECT_EQ(a.error.rfind("--memory: ", 0), 0u) << bad << ": " << a.error;
    EXPECT_TRUE(a.command.empty());
    EXPECT_TRUE(a.env.empty());
  }
}

TEST(ParseRunArgs, RefusesAWeightThatIsNotInTheShimsRange) {
  for (const char* bad : {"", "0", "-1", "abc", "2x", "1001", "nan", "inf"}) {
    RunArgs a = ParseRunArgs({"--weight", bad, "--", "x"});
    EXPECT_EQ(a.error.rfind("--weight: ", 0), 0u) << bad << ": " << a.error;
  }
  for (const char* ok : {"0.1", "1", "1000", "1e2"})
    EXPECT_EQ(ParseRunArgs({"--weight", ok, "--", "x"}).error, "") << ok;
}

TEST(ParseRunArgs, RefusesBadDeviceLists) {
  for (const char* bad : {"", "a", "0,,1", "0,0", "-1"})
    EXPECT_EQ(ParseRunArgs({"--devices", bad, "--", "x"}).error.rfind("--devices: ", 0), 0u) << bad;
}

TEST(ParseRunArgs, RefusesNamesTheBrokerWouldCut) {
  EXPECT_EQ(ParseRunArgs({"--tenant", std::string(63, 't'), "--", "x"}).error, "");
  EXPECT_EQ(ParseRunArgs({"--tenant", std::string(64, 't'), "--", "x"}).error.rfind("--tenant: ", 0), 0u);
  EXPECT_EQ(ParseRunArgs({"--job", std::string(128, 'j'), "--", "x"}).error.rfind("--job: ", 0), 0u);
}

TEST(ParseRunArgs, ProfileSetsGpushareProfileWithinTheHellosField) {
  EXPECT_EQ(ParseRunArgs({"--profile", "q8g", "--", "x"}).env.at("GPUSHARE_PROFILE"), "q8g");
  EXPECT_EQ(ParseRunArgs({"--profile", std::string(32, 'p'), "--", "x"}).error.rfind("--profile: ", 0), 0u);
  EXPECT_EQ(ParseRunArgs({"--profile=", "--", "x"}).error, "--profile: is empty");
}

TEST(ParseRunArgs, RequiresTheSeparatorAndACommand) {
  EXPECT_NE(ParseRunArgs({}).error, "");
  EXPECT_NE(ParseRunArgs({"--tenant", "t"}).error, "");
  EXPECT_NE(ParseRunArgs({"--tenant", "t", "--"}).error, "");
  RunArgs a = ParseRunArgs({"--tenant", "t", "python", "x.py"});
  EXPECT_NE(a.error.find("expected -- before the command"), std::string::npos) << a.error;
  EXPECT_TRUE(a.command.empty());
}

TEST(ParseRunArgs, RefusesUnknownOptionsAndMissingValues) {
  EXPECT_NE(ParseRunArgs({"--memroy", "4GiB", "--", "x"}).error.find("unknown option --memroy"), std::string::npos);
  EXPECT_EQ(ParseRunArgs({"--tenant"}).error, "--tenant needs a value");
}

TEST(ParseRunArgs, HelpNeedsNoCommand) {
  EXPECT_TRUE(ParseRunArgs({"--help"}).help);
  EXPECT_TRUE(ParseRunArgs({"-h"}).help);
  EXPECT_EQ(ParseRunArgs({"--help"}).error, "");
}

TEST(ParseRunArgs, VersionNeedsNoCommandButIsAnArgumentOfTheCommandAfterDashes) {
  EXPECT_TRUE(ParseRunArgs({"--version"}).version);
  EXPECT_EQ(ParseRunArgs({"--version"}).error, "");
  const RunArgs a = ParseRunArgs({"--", "app", "--version"});
  EXPECT_FALSE(a.version);
  EXPECT_EQ(a.command, (std::vector<std::string>{"app", "--version"}));
}

TEST(ComposePreload, PutsTheShimFirstAndKeepsTheRest) {
  EXPECT_EQ(ComposePreload("/p/lib/libgpushare.so", ""), "/p/lib/libgpushare.so");
  EXPECT_EQ(ComposePreload("/p/lib/libgpushare.so", "/a/liba.so"), "/p/lib/libgpushare.so:/a/liba.so");
  EXPECT_EQ(ComposePreload("/p/lib/libgpushare.so", "/a/liba.so /b/libb.so:libc2.so"),
            "/p/lib/libgpushare.so:/a/liba.so:/b/libb.so:libc2.so");
}

TEST(ComposePreload, NeverAddsTheShimTwice) {
  EXPECT_EQ(ComposePreload("/p/lib/libgpushare.so", "/p/lib/libgpushare.so"), "/p/lib/libgpushare.so");
  EXPECT_EQ(ComposePreload("/p/lib/libgpushare.so", "/a/liba.so:/p/lib/libgpushare.so"),
            "/p/lib/libgpushare.so:/a/liba.so");
  // Another build of the shim, by name or path, would hook the same calls again.
  EXPECT_EQ(ComposePreload("/p/lib/libgpushare.so", "/old/lib/libgpushare.so::libgpushare.so:/a/liba.so"),
            "/p/lib/libgpushare.so:/a/liba.so");
}

}  // namespace
}  // namespace gpushare::tools
