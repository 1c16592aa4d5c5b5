// A libFuzzer stand-in for compilers without libFuzzer (GCC, the normal build): runs
// the target's seeds, every file or directory named on the command line, and a fixed
// number of inputs mutated from them with a fixed seed, so that every normal and
// sanitizer build exercises the decoders the same way each time.
//   TARGET [--runs N] [--seed S] [--max-len N] [DIR]...   seeds and DIRs' files, then N mutations
//   TARGET FILE...                                       only these inputs (a crash to reproduce)
//   TARGET --write-seeds DIR                             write the seed corpus
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "fuzz_target.h"

namespace {

using Input = std::vector<uint8_t>;

// The input being run, written to ./crash-input if it crashes, to reproduce with
// `TARGET crash-input` (or the libFuzzer build).
const Input* g_current = nullptr;

void OnCrash(int sig) {
  if (g_current != nullptr) {
    const int fd = open("crash-input", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ssize_t ignored = write(fd, g_current->data(), g_current->size());
      (void)ignored;
      close(fd);
    }
    static const char kMessage[] = "fuzz: the crashing input is in ./crash-input\n";
    ssize_t ignored = write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
    (void)ignored;
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void Run(const Input& in) {
  g_current = &in;
  LLVMFuzzerTestOneInput(in.data(), in.size());
  g_current = nullptr;
}

Input ReadFile(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  return Input(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A few of libFuzzer's mutations: enough to leave the seeds' paths without a
// coverage feedback loop.
Input Mutate(const std::vector<Input>& pool, std::mt19937_64& rng, size_t max_len) {
  auto below = [&rng](size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng() % n); };
  Input in = pool[below(pool.size())];
  const int edits = 1 + static_cast<int>(below(8));
  for (int e = 0; e < edits; ++e) {
    switch (below(7)) {
      case 0:  // flip a bit
        if (!in.empty()) in[below(in.size())] ^= static_cast<uint8_t>(1u << below(8));
        break;
      case 1:  // an interesting byte
        if (!in.empty()) {
          static constexpr uint8_t kBytes[] = {0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 16, 17};
          in[below(in.size())] = kBytes[below(sizeof kBytes)];
        }
        break;
      case 2: {  // insert random bytes
        const size_t at = below(in.size() + 1), n = 1 + below(16);
        for (size_t i = 0; i < n; ++i) in.insert(in.begin() + at, static_cast<uint8_t>(rng()));
        break;
      }
      case 3:  // erase a range
        if (!in.empty()) {
          const size_t at = below(in.size()), n = 1 + below(std::min<size_t>(in.size() - at, 32));
          in.erase(in.begin() + at, in.begin() + at + n);
        }
        break;
      case 4:  // copy a range elsewhere
        if (!in.empty()) {
          const size_t from = below(in.size()), n = 1 + below(std::min<size_t>(in.size() - from, 64));
          const Input part(in.begin() + from, in.begin() + from + n);
          in.insert(in.begin() + below(in.size() + 1), part.begin(), part.end());
        }
        break;
      case 5: {  // splice: our head, another input's tail
        const Input& other = pool[below(pool.size())];
        in.resize(below(in.size() + 1));
        in.insert(in.end(), other.begin() + below(other.size() + 1), other.end());
        break;
      }
      case 6:  // truncate
        in.resize(below(in.size() + 1));
        break;
    }
  }
  if (in.size() > max_len) in.resize(max_len);
  return in;
}

int WriteSeeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const auto seeds = FuzzSeeds();
  for (size_t i = 0; i < seeds.size(); ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "seed-%02zu", i);
    std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(seeds[i].data()), static_cast<std::streamsize>(seeds[i].size()));
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
      return 1;
    }
  }
  std::printf("wrote %zu seeds to %s\n", seeds.size(), dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t runs = 20000, seed = 1;
  size_t max_len = 4096;
  std::vector<Input> pool = FuzzSeeds(), files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--write-seeds" && i + 1 < argc) return WriteSeeds(argv[++i]);
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--max-len" && i + 1 < argc) {
      max_len = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::filesystem::is_directory(arg)) {
      for (const auto& e : std::filesystem::directory_iterator(arg))
        if (e.is_regular_file()) pool.push_back(ReadFile(e.path()));
    } else if (std::filesystem::is_regular_file(arg)) {
      files.push_back(ReadFile(arg));
    } else {
      std::fprintf(stderr, "usage: %s [--runs N] [--seed S] [--max-len N] [DIR]... | FILE... | --write-seeds DIR\n",
                   argv[0]);
      return 2;
    }
  }
  for (int sig : {SIGILL, SIGABRT, SIGSEGV, SIGBUS, SIGFPE}) std::signal(sig, OnCrash);
  if (!files.empty()) {  // as libFuzzer does with files: run them, nothing else
    for (const Input& in : files) Run(in);
    std::printf("%zu inputs run\n", files.size());
    return 0;
  }
  if (pool.empty()) pool.emplace_back();

  const auto start = std::chrono::steady_clock::now();
  for (const Input& in : pool) Run(in);
  std::mt19937_64 rng(seed);
  for (uint64_t r = 0; r < runs; ++r) Run(Mutate(pool, rng, max_len));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%zu inputs replayed, %llu mutated (seed %llu) in %.2f s\n", pool.size(),
              static_cast<unsigned long long>(runs), static_cast<unsigned long long>(seed), s);
  return 0;
}
