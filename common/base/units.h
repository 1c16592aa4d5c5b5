// Quantities as people write them, shared by the client, the broker and the tools.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace gpushare {

// Byte counts: "4GiB", "512MiB", "1.5GB", "4g", "1073741824". Binary units: KiB MiB
// GiB TiB and the single letters k m g t (as docker reads them); decimal units: KB MB
// GB TB. Case-insensitive, surrounding blanks ignored. Returns nullopt if malformed.
std::optional<uint64_t> ParseBytes(const std::string& text);

// "1.50 GiB", "512.0 MiB", "300 B": for people reading logs and tables.
std::string FormatBytes(uint64_t bytes);

}  // namespace gpushare
